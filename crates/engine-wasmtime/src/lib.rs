//! # kwasi-engine-wasmtime
//!
//! The [`Engine`] of kwasi backed by [wasmtime](https://wasmtime.dev) and `wasmtime-wasi`:
//! WASI preview 1 core modules.
//!
//! The `wasmtime::Engine` is created lazily, in the container process, on the first
//! [`Engine::compile`]: the shim process never holds a compiler.

use std::sync::{Arc, OnceLock};

use kwasi_core::engine::{Engine, EngineError, Scratch, WasmBytes, Workload};
use wasmtime::{Linker, Module, Store, Trap};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

/// Runs WASI preview 1 modules with wasmtime.
#[derive(Clone, Default)]
pub struct WasmtimeEngine {
    engine: Arc<OnceLock<wasmtime::Engine>>,
}

impl WasmtimeEngine {
    fn engine(&self) -> Result<&wasmtime::Engine, EngineError> {
        if let Some(engine) = self.engine.get() {
            return Ok(engine);
        }
        let mut config = wasmtime::Config::new();
        // Compile on one thread: a container may be given a single CPU, and spawning a thread
        // pool costs more than it saves for most modules.
        config.parallel_compilation(false);
        let engine = wasmtime::Engine::new(&config)
            .map_err(|e| EngineError::Other(format!("configuring wasmtime: {e:#}")))?;
        Ok(self.engine.get_or_init(|| engine))
    }
}

impl Engine for WasmtimeEngine {
    type Module = Module;

    fn name(&self) -> &'static str {
        "wasmtime"
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<Module, EngineError> {
        Module::new(self.engine()?, &wasm.bytes)
            .map_err(|e| EngineError::InvalidModule(one_line(&e)))
    }

    fn exports_entry(&self, module: &Module, name: &str) -> bool {
        module
            .get_export(name)
            .and_then(|e| e.func().cloned())
            .is_some_and(|f| f.params().len() == 0 && f.results().len() == 0)
    }

    fn fingerprint(&self) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let engine = self.engine().ok()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hash covers the target, compiler flags, features, tunables and wasmtime's version.
        Some(format!("wasmtime-{:016x}", hasher.finish()))
    }

    fn precompile(&self, wasm: &WasmBytes, _: &Scratch) -> Result<Vec<u8>, EngineError> {
        self.engine()?
            .precompile_module(&wasm.bytes)
            .map_err(|e| EngineError::InvalidModule(one_line(&e)))
    }

    fn load_precompiled(&self, compiled: &[u8]) -> Result<Module, EngineError> {
        // SAFETY: the core hands back only bytes that `precompile` produced with the same
        // fingerprint, checked against their SHA-256; wasmtime also checks its version and
        // configuration in the artifact's header.
        unsafe { Module::deserialize(self.engine()?, compiled) }.map_err(|e| {
            EngineError::Other(format!("loading precompiled module: {}", one_line(&e)))
        })
    }

    fn run(&self, module: Module, workload: &Workload) -> Result<i32, EngineError> {
        let engine = self.engine()?;
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
        let mut store = Store::new(engine, wasi.build_p1());
        let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
        p1::add_to_linker_sync(&mut linker, |ctx| ctx)
            .map_err(|e| EngineError::Other(format!("linking WASI: {e:#}")))?;
        let instance = linker
            .instantiate(&mut store, &module)
            .map_err(|e| EngineError::Other(format!("instantiating: {}", one_line(&e))))?;
        let func = instance
            .get_typed_func::<(), ()>(&mut store, &workload.entry)
            .map_err(|_| EngineError::MissingExport {
                name: workload.entry.clone(),
            })?;
        match func.call(&mut store, ()) {
            Ok(()) => Ok(0),
            Err(err) => {
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
        }
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
kwasi_core::engine_tests!(WasmtimeEngine::default());
