//! # kwasi-engine-wasmtime
//!
//! The [`Engine`] of kwasi backed by [wasmtime](https://wasmtime.dev): WASI preview 1 core
//! modules (`wasmtime-wasi`), and WASI 0.2 and 0.3 components, told apart by their header:
//! `wasi:cli/run` commands run like modules, HTTP services (`wasi:http/incoming-handler@0.2`,
//! `wasi:http/handler@0.3`) are served over HTTP by [`kwasi_core::http`] with a fresh instance
//! per request.
//!
//! Each `wasmtime::Engine` is created lazily, on first use, in the zygote's short-lived worker
//! (which looks a module up in the compile cache) or in the container process: the shim
//! process never holds a compiler. Components get an engine of
//! their own with wasmtime's pooling allocator, which makes a per-request instance cheap;
//! modules, which are instantiated once, use the default on-demand allocator. WASI 0.3
//! components get a third engine, the only one with wasmtime's component-model concurrency:
//! with it, every call of a WASI 0.2 component would go through its event loop too.

mod component;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kwasi_core::engine::{
    release_freed_memory, Engine, EngineError, Scratch, WasmBytes, Workload, DEFAULT_ENTRY,
};
use wasmtime::component::Component;
use wasmtime::{
    InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Precompiled, Store, Trap,
};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use component::World;
pub use component::{
    fixed_response, wasi_request, Extension, Host, HttpService, LinkedComponent, ResponseBody,
    ResponseBodyError,
};

/// Runs WASI preview 1 modules and WASI preview 2 components with wasmtime.
#[derive(Clone, Default)]
pub struct WasmtimeEngine {
    modules: Arc<OnceLock<wasmtime::Engine>>,
    components: Arc<OnceLock<wasmtime::Engine>>,
    async_components: Arc<OnceLock<wasmtime::Engine>>,
}

/// A compiled module or component.
pub enum Compiled {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

/// The pool behind components: room for [`kwasi_core::http::CONCURRENCY_LIMIT`] requests in
/// flight, each an instance of a component of up to four core instances, two memories and four
/// tables (a C or Rust component with its WASI adapter needs fewer). The pool only reserves
/// address space; memory is used as instances touch it.
const POOL_PER_REQUEST: (u32, u32, u32) = (4, 2, 4);

fn base_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // Compile on one thread: a container may be given a single CPU, and spawning a thread
    // pool costs more than it saves for most modules.
    config.parallel_compilation(false);
    // Calls run straight on a fiber; with concurrency on, each call of a WASI 0.2 component
    // goes through wasmtime's event loop, which cost about a seventh of an HTTP component's
    // requests per second. Only WASI 0.3 components, which need it, get it (`async_config`).
    config.concurrency_support(false);
    config
}

fn pooled_config() -> wasmtime::Config {
    let requests = kwasi_core::http::CONCURRENCY_LIMIT as u32;
    let (instances, memories, tables) = POOL_PER_REQUEST;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(requests)
        .total_core_instances(requests * instances)
        .total_memories(requests * memories)
        .total_tables(requests * tables)
        .total_stacks(requests);
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The engine of WASI 0.3 components: `async` functions, streams and futures, on
/// wasmtime's component-model concurrency. It differs from the other components' engine in
/// these two settings only, which this crate fixes: the cache's fingerprint, taken from the
/// modules' engine, therefore covers its code too.
fn async_config(mut config: wasmtime::Config) -> wasmtime::Config {
    config.concurrency_support(true);
    config.wasm_component_model_async(true);
    config
}

/// The engine in `cell`, made by `make` the first time it is asked for.
fn engine_in(
    cell: &OnceLock<wasmtime::Engine>,
    make: impl FnOnce() -> Result<wasmtime::Engine, EngineError>,
) -> Result<&wasmtime::Engine, EngineError> {
    if let Some(engine) = cell.get() {
        return Ok(engine);
    }
    let engine = make()?;
    Ok(cell.get_or_init(|| engine))
}

fn new_engine(config: &wasmtime::Config) -> Result<wasmtime::Engine, EngineError> {
    wasmtime::Engine::new(config)
        .map_err(|e| EngineError::Other(format!("configuring wasmtime: {e:#}")))
}

impl WasmtimeEngine {
    /// Loads precompiled code: `compiled`, copied, or mapped from the file at `path` that
    /// starts with it.
    fn load(&self, compiled: &[u8], path: Option<&Path>) -> Result<Compiled, EngineError> {
        let component = matches!(
            wasmtime::Engine::detect_precompiled(compiled),
            Some(Precompiled::Component)
        );
        // SAFETY: the core hands back only bytes that `precompile` produced with the same
        // fingerprint, checked against their checksum (wasmtime also checks its version and
        // configuration in the artifact's header), and never changes a cache entry's file in
        // place (entries are renamed into place; a damaged one is removed, not rewritten).
        let loaded = unsafe {
            let component_for = |engine: &wasmtime::Engine| match path {
                None => Component::deserialize(engine, compiled),
                Some(path) => Component::deserialize_file(engine, path),
            };
            match (component, path) {
                // Code compiled for WASI 0.3 loads only into the engine it was compiled with.
                (true, _) => component_for(self.engine_for_components()?)
                    .or_else(|_| component_for(self.engine_for_async_components()?))
                    .map(Compiled::Component),
                (false, None) => {
                    Module::deserialize(self.engine_for_modules()?, compiled).map(Compiled::Module)
                }
                (false, Some(path)) => {
                    Module::deserialize_file(self.engine_for_modules()?, path).map(Compiled::Module)
                }
            }
        };
        loaded
            .map_err(|e| EngineError::Other(format!("loading precompiled code: {}", one_line(&e))))
    }

    fn engine_for_modules(&self) -> Result<&wasmtime::Engine, EngineError> {
        engine_in(&self.modules, || new_engine(&base_config()))
    }

    fn engine_for_components(&self) -> Result<&wasmtime::Engine, EngineError> {
        engine_in(&self.components, || {
            match wasmtime::Engine::new(&pooled_config()) {
                Ok(engine) => Ok(engine),
                Err(err) => {
                    // Too little address space for the pool (39-bit systems, a low `ulimit -v`):
                    // instances are then allocated one by one, slower but correct.
                    log::warn!("wasmtime's pooling allocator is unavailable ({err:#}); using on-demand allocation");
                    self.engine_for_modules().cloned()
                }
            }
        })
    }

    fn engine_for_async_components(&self) -> Result<&wasmtime::Engine, EngineError> {
        engine_in(&self.async_components, || {
            new_engine(&async_config(pooled_config()))
                .or_else(|_| new_engine(&async_config(base_config())))
        })
    }

    /// Whether `engine` is the one of WASI 0.3 components.
    fn is_async(&self, engine: &wasmtime::Engine) -> bool {
        self.async_components
            .get()
            .is_some_and(|async_engine| wasmtime::Engine::same(async_engine, engine))
    }

    /// Runs `compile` with the components' engine, then, if it fails, with the engine of
    /// WASI 0.3 components (a component that uses `async` functions, streams or futures does
    /// not validate without it); the error is the last one.
    fn for_component<R>(
        &self,
        compile: impl Fn(&wasmtime::Engine) -> wasmtime::Result<R>,
    ) -> Result<R, EngineError> {
        compile(self.engine_for_components()?).or_else(|_| {
            compile(self.engine_for_async_components()?)
                .map_err(|e| EngineError::InvalidModule(one_line(&e)))
        })
    }
}

impl Engine for WasmtimeEngine {
    type Module = Compiled;

    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn runs_components(&self) -> bool {
        true
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<Compiled, EngineError> {
        if wasm.is_component() {
            self.for_component(|engine| Component::new(engine, &wasm.bytes))
                .map(Compiled::Component)
        } else {
            Module::new(self.engine_for_modules()?, &wasm.bytes)
                .map(Compiled::Module)
                .map_err(|e| EngineError::InvalidModule(one_line(&e)))
        }
    }

    fn exports_entry(&self, compiled: &Compiled, name: &str) -> bool {
        match compiled {
            Compiled::Module(module) => module
                .get_export(name)
                .and_then(|e| e.func().cloned())
                .is_some_and(|f| f.params().len() == 0 && f.results().len() == 0),
            Compiled::Component(component) => {
                name == DEFAULT_ENTRY && World::of(component).is_some()
            }
        }
    }

    fn fingerprint(&self) -> Option<String> {
        // The module and component engines share it (a test checks it).
        let engine = self.engine_for_modules().ok()?;
        Some(format!("wasmtime-{:016x}", compatibility_hash(engine)))
    }

    fn precompile(&self, wasm: &WasmBytes, _: &Scratch) -> Result<Vec<u8>, EngineError> {
        if wasm.is_component() {
            self.for_component(|engine| engine.precompile_component(&wasm.bytes))
        } else {
            self.engine_for_modules()?
                .precompile_module(&wasm.bytes)
                .map_err(|e| EngineError::InvalidModule(one_line(&e)))
        }
    }

    fn load_precompiled(&self, compiled: &[u8]) -> Result<Compiled, EngineError> {
        self.load(compiled, None)
    }

    /// Maps the code from the cache's file (wasmtime ignores the cache's trailer after its
    /// artifact): nothing is copied, and every container of the module shares its pages.
    fn load_precompiled_file(&self, path: &Path, compiled: &[u8]) -> Result<Compiled, EngineError> {
        self.load(compiled, Some(path))
    }

    fn run(&self, compiled: Compiled, workload: &Workload) -> Result<i32, EngineError> {
        match compiled {
            Compiled::Module(module) => self.run_module(module, workload),
            Compiled::Component(component) => {
                let concurrent = self.is_async(component.engine());
                match World::of(&component) {
                    Some(World::Service) => component::serve(&component, concurrent, workload),
                    Some(World::Command) => {
                        component::run_command(&component, concurrent, workload)
                    }
                    None => Err(EngineError::MissingExport {
                        name: DEFAULT_ENTRY.to_string(),
                    }),
                }
            }
        }
    }
}

impl WasmtimeEngine {
    fn run_module(&self, module: Module, workload: &Workload) -> Result<i32, EngineError> {
        let engine = self.engine_for_modules()?;
        let mut store = Store::new(engine, wasi_builder(workload)?.build_p1());
        let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
        p1::add_to_linker_sync(&mut linker, |ctx| ctx)
            .map_err(|e| EngineError::Other(format!("linking WASI: {e:#}")))?;
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| EngineError::Other(format!("instantiating: {}", one_line(&e))))?;
        // The sandbox's setup (libcontainer reads and parses the node's whole mount table,
        // which grows with every pod) and instantiation leave freed heap dirty for the
        // guest's life: 2.9 MiB per container on a node with 4,000 mounts.
        release_freed_memory();
        let func = instance
            .get_typed_func::<(), ()>(&mut store, &workload.entry)
            .map_err(|_| EngineError::MissingExport {
                name: workload.entry.clone(),
            })?;
        match func.call(&mut store, ()) {
            Ok(()) => Ok(0),
            Err(err) => outcome(err),
        }
    }
}

/// What compiled code depends on: the target, compiler flags, features, tunables and
/// wasmtime's version.
fn compatibility_hash(engine: &wasmtime::Engine) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// WASI for a run of the workload: its arguments, environment, stdio and preopens.
fn wasi_builder(workload: &Workload) -> Result<WasiCtxBuilder, EngineError> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio()
        .args(&workload.args)
        .envs(&workload.env);
    for preopen in workload.existing_preopens() {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&preopen.host_path, &preopen.guest_path, perms)
            .map_err(|e| {
                EngineError::Other(format!(
                    "opening {} for the guest: {e:#}",
                    preopen.host_path.display()
                ))
            })?;
    }
    Ok(wasi)
}

/// What a guest's failed call means: an exit code it asked for (`proc_exit`,
/// `wasi:cli/exit`), or a trap.
fn outcome(err: wasmtime::Error) -> Result<i32, EngineError> {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        Ok(exit.0)
    } else if let Some(trap) = err.downcast_ref::<Trap>() {
        let text = trap.to_string();
        let text = text.strip_prefix("wasm trap: ").unwrap_or(&text);
        Err(EngineError::Trap(text.to_string()))
    } else {
        Err(EngineError::Trap(one_line(&err)))
    }
}

/// An error chain on one line: the outermost message and its causes, without the wasm
/// backtrace wasmtime appends.
fn one_line(err: &wasmtime::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or_default().trim().to_string();
        if !first.is_empty() && !first.starts_with("wasm backtrace") && !parts.contains(&first) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
kwasi_testkit::engine_tests!(WasmtimeEngine::default());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_components_share_compiled_code_settings() {
        // One fingerprint serves both engines' cache entries only if this holds.
        let modules = wasmtime::Engine::new(&base_config()).unwrap();
        let components = wasmtime::Engine::new(&pooled_config()).unwrap();
        assert_eq!(
            compatibility_hash(&modules),
            compatibility_hash(&components)
        );
    }

    fn guest(name: &str) -> WasmBytes {
        let path = format!("{}/../../tests/guests/{name}", env!("CARGO_MANIFEST_DIR"));
        WasmBytes {
            bytes: std::fs::read(&path).unwrap(),
            origin: path,
            sha256: None,
        }
    }

    fn workload(args: &[&str]) -> Workload {
        Workload {
            module_path: "/probe.wasm".into(),
            entry: DEFAULT_ENTRY.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            cwd: "/".into(),
            preopens: vec![],
        }
    }

    #[test]
    fn a_cli_component_that_succeeds_exits_0() {
        let engine = WasmtimeEngine::default();
        let compiled = engine.compile(&guest("probe.component.wasm")).unwrap();
        assert!(engine.exports_entry(&compiled, DEFAULT_ENTRY));
        let code = engine
            .run(compiled, &workload(&["probe", "hello"]))
            .unwrap();
        assert_eq!(code, 0);
    }

    #[test]
    fn a_cli_component_exits_1_on_failure_through_the_preview1_adapter() {
        let engine = WasmtimeEngine::default();
        let compiled = engine.compile(&guest("probe.component.wasm")).unwrap();
        // The adapter maps proc_exit(7) to wasi:cli/exit's err, which carries no code.
        let code = engine
            .run(compiled, &workload(&["probe", "exit", "7"]))
            .unwrap();
        assert_eq!(code, 1);
    }

    #[test]
    fn an_http_component_is_a_service_and_a_cli_component_a_command() {
        let engine = WasmtimeEngine::default();
        let world = |name| match engine.compile(&guest(name)).unwrap() {
            Compiled::Component(c) => World::of(&c),
            Compiled::Module(_) => panic!("{name} compiled as a module"),
        };
        assert_eq!(world("http.wasm"), Some(World::Service));
        assert_eq!(world("probe.component.wasm"), Some(World::Command));
    }

    /// A WASI 0.3 command whose `run` returns `ok` or `err` as `code` says.
    fn wasi_0_3_command(code: u32) -> WasmBytes {
        let wat = format!(
            r#"(component
                (core module $m (func (export "run") (result i32) i32.const {code}))
                (core instance $i (instantiate $m))
                (func $run async (result (result)) (canon lift (core func $i "run")))
                (instance $run-instance (export "run" (func $run)))
                (export "wasi:cli/run@0.3.0" (instance $run-instance)))"#
        );
        WasmBytes {
            bytes: wat::parse_str(wat).unwrap(),
            origin: "wasi-0.3-command".to_string(),
            sha256: None,
        }
    }

    #[test]
    fn a_wasi_0_3_command_runs_and_its_result_is_the_exit_code() {
        let engine = WasmtimeEngine::default();
        for (code, exit) in [(0, 0), (1, 1)] {
            let compiled = engine.compile(&wasi_0_3_command(code)).unwrap();
            assert!(engine.exports_entry(&compiled, DEFAULT_ENTRY));
            assert_eq!(engine.run(compiled, &workload(&["run"])).unwrap(), exit);
        }
    }

    #[test]
    fn a_precompiled_wasi_0_3_component_loads_back_into_the_concurrent_engine_and_runs() {
        let engine = WasmtimeEngine::default();
        let scratch = Scratch::under(std::env::temp_dir());
        let bytes = engine.precompile(&wasi_0_3_command(1), &scratch).unwrap();
        let fresh = WasmtimeEngine::default();
        let loaded = fresh.load_precompiled(&bytes).unwrap();
        let Compiled::Component(component) = &loaded else {
            panic!("loaded as a module");
        };
        assert!(fresh.is_async(component.engine()));
        assert_eq!(fresh.run(loaded, &workload(&["run"])).unwrap(), 1);
    }

    #[test]
    fn a_wasi_0_2_component_runs_without_component_model_concurrency() {
        let engine = WasmtimeEngine::default();
        let Compiled::Component(component) = engine.compile(&guest("http.wasm")).unwrap() else {
            panic!("http.wasm compiled as a module");
        };
        assert!(wasmtime::Engine::same(
            component.engine(),
            engine.engine_for_components().unwrap()
        ));
    }

    #[test]
    fn a_component_has_no_entry_but_the_default() {
        let engine = WasmtimeEngine::default();
        let compiled = engine.compile(&guest("http.wasm")).unwrap();
        assert!(engine.exports_entry(&compiled, DEFAULT_ENTRY));
        assert!(!engine.exports_entry(&compiled, "handle"));
    }

    #[test]
    fn a_precompiled_component_loads_back_as_a_component() {
        let engine = WasmtimeEngine::default();
        let scratch = Scratch::under(std::env::temp_dir());
        let bytes = engine.precompile(&guest("http.wasm"), &scratch).unwrap();
        let loaded = engine.load_precompiled(&bytes).unwrap();
        assert!(matches!(loaded, Compiled::Component(_)));
    }
}
