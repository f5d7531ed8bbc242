//! # kwasi-engine-wasmer
//!
//! The [`Engine`] of kwasi backed by [wasmer](https://wasmer.io) (Cranelift) and
//! `wasmer-wasix`: WASI preview 1 core modules.
//!
//! The `wasmer::Engine` is created lazily, on first use, in the zygote's short-lived worker
//! (which looks a module up in the compile cache) or in the container process: the shim
//! process never holds a compiler. WASIX needs a tokio runtime
//! for its blocking calls (sleep, poll, stdin); [`Engine::run`] makes a one-worker runtime.
//!
//! Where wasmer-wasix differs from WASI preview 1 and an embedder can reach it, the crate
//! mends it: the guest's filesystem in `rootfs`, calls' answers in `fixes`, the preopens in
//! `fit_the_preopens`. The official WASI test suite (`tests/tests/wasi_testsuite.rs`) lists
//! what is left, call by call.

mod fixes;
mod rootfs;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use kwasi_core::engine::{release_freed_memory, Engine, EngineError, Scratch, WasmBytes, Workload};
use wasmer::{Module, RuntimeError, Store};
use wasmer_types::ModuleHash;
use wasmer_wasix::os::task::thread::WasiThreadError;
use wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager;
use wasmer_wasix::virtual_fs::{host_fs, FileSystem};
use wasmer_wasix::wasmer_wasix_types::wasi::Rights;
use wasmer_wasix::{PluggableRuntime, WasiEnv, WasiError, WasiFs, WasiInodes};

/// Runs WASI preview 1 modules with wasmer.
#[derive(Clone, Default)]
pub struct WasmerEngine {
    engine: Arc<OnceLock<wasmer::Engine>>,
}

impl WasmerEngine {
    fn engine(&self) -> &wasmer::Engine {
        self.engine.get_or_init(wasmer::Engine::default)
    }
}

impl Engine for WasmerEngine {
    type Module = Module;

    fn name(&self) -> &'static str {
        "wasmer"
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<Module, EngineError> {
        Module::new(self.engine(), &wasm.bytes)
            .map_err(|e| EngineError::InvalidModule(first_line(&e)))
    }

    fn exports_entry(&self, module: &Module, name: &str) -> bool {
        module
            .exports()
            .functions()
            .any(|f| f.name() == name && f.ty().params().is_empty() && f.ty().results().is_empty())
    }

    fn fingerprint(&self) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let engine = self.engine();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        // The compiler and its settings, the artifact format, and wasmer's version: a change of
        // any of them makes older artifacts unusable.
        (
            engine.deterministic_id(),
            engine.artifact_format(),
            wasmer_types::VERSION,
            std::env::consts::ARCH,
        )
            .hash(&mut hasher);
        Some(format!("wasmer-{:016x}", hasher.finish()))
    }

    fn precompile(&self, wasm: &WasmBytes, _: &Scratch) -> Result<Vec<u8>, EngineError> {
        self.compile(wasm)?
            .serialize()
            .map(|bytes| bytes.to_vec())
            .map_err(|e| EngineError::Other(format!("serializing the compiled module: {e}")))
    }

    fn load_precompiled(&self, compiled: &[u8]) -> Result<Module, EngineError> {
        // SAFETY: the core hands back only bytes that `precompile` produced with the same
        // fingerprint, checked against their SHA-256; wasmer also checks its artifact header.
        unsafe { Module::deserialize(self.engine(), compiled) }.map_err(|e| {
            EngineError::Other(format!("loading precompiled module: {}", first_line(&e)))
        })
    }

    /// Has wasmer map the cache's file itself (it reads its artifact's length from the
    /// artifact's header, so the cache's trailer after it is ignored): handed a slice, wasmer
    /// copies the whole artifact into a buffer of its own before it copies the code out of it.
    fn load_precompiled_file(&self, path: &Path, _: &[u8]) -> Result<Module, EngineError> {
        // SAFETY: as for `load_precompiled`; the file is the entry whose payload the core has
        // checked, and cache entries are replaced by renaming, never written in place.
        unsafe { Module::deserialize_from_file_unchecked(self.engine(), path) }.map_err(|e| {
            EngineError::Other(format!("loading precompiled module: {}", first_line(&e)))
        })
    }

    fn run(&self, module: Module, workload: &Workload) -> Result<i32, EngineError> {
        // WASIX needs the module's memory; a module that imports nothing runs without it.
        if module.imports().next().is_none() {
            let mut store = Store::new(self.engine().clone());
            let instance = wasmer::Instance::new(&mut store, &module, &wasmer::imports! {})
                .map_err(|e| EngineError::Other(format!("instantiating: {e}")))?;
            return call_entry(&mut store, &instance, &workload.entry);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| EngineError::Other(format!("starting WASIX's runtime: {e}")))?;
        let _entered = runtime.enter();

        // The container's root is the guest's: the sandbox has already confined it.
        let root: Arc<dyn FileSystem + Send + Sync> = Arc::new(rootfs::ContainerRoot(
            host_fs::FileSystem::new(runtime.handle().clone(), "/")
                .map_err(|e| EngineError::Other(format!("opening the container's root: {e}")))?,
        ));
        let (program, args) = workload
            .args
            .split_first()
            .map(|(first, rest)| (first.as_str(), rest))
            .unwrap_or(("", &[]));
        let mut wasix =
            PluggableRuntime::new(Arc::new(TokioTaskManager::new(runtime.handle().clone())));
        wasix
            .set_engine(self.engine().clone())
            .with_instantiation_hook(fixes::PreviewOneFixes);
        let mut builder = WasiEnv::builder(program)
            .args(args)
            .envs(workload.env.iter().map(|(k, v)| (k, v)))
            .runtime(Arc::new(wasix))
            .fs(root)
            .setup_fs(Box::new(fit_the_preopens))
            .current_dir(&workload.cwd);
        for preopen in workload.existing_preopens() {
            let writable = !preopen.read_only;
            builder
                .add_preopen_build(|p| {
                    p.directory(&preopen.host_path)
                        .read(true)
                        .write(writable)
                        .create(writable);
                    if preopen.host_path.as_os_str() != preopen.guest_path.as_str() {
                        p.alias(&preopen.guest_path);
                    }
                    p
                })
                .map_err(|e| {
                    EngineError::Other(format!(
                        "opening {} for the guest: {e}",
                        preopen.host_path.display()
                    ))
                })?;
        }

        let mut store = Store::new(self.engine().clone());
        let (instance, wasi) = builder
            .instantiate_ext(module, ModuleHash::random(), &mut store)
            .map_err(|e| EngineError::Other(format!("instantiating: {e}")))?;
        // Loading and WASIX's setup leave about 80 KiB of freed heap dirty in each container,
        // and the sandbox's setup more as the node's mount table grows.
        release_freed_memory();
        let outcome = call_entry(&mut store, &instance, &workload.entry);
        let code = outcome.as_ref().map_or(1, |code| *code);
        wasi.on_exit(&mut store, Some(code.into()));
        outcome
    }
}

/// What wasmer-wasix's virtual root (fd 3, which only holds preopens: creating a file or a
/// directory in it is refused) is named for the guest.
const VIRTUAL_ROOT_NAME: &str = "/.wasmer-virtual-root";

/// Makes the preopens what guests expect of a WASI runtime, which wasmer-wasix's are not:
///
/// - its virtual root is named `/` too: renamed, a guest that takes the first preopen named `/`
///   for its root (the WASI test suite's, for one) finds the container's root, where it may
///   create files, not the virtual one;
/// - a preopened directory has `fd_write` among its rights, and wasmer-wasix refuses to open a
///   directory asked with that right (`EISDIR`): a guest that opens a directory with the
///   rights of the one it opened it from (Rust's `std` does) could not open any. Directories
///   lose `fd_write` (meaningless for them, and absent from other runtimes' preopens); what
///   they pass on to files opened below them keeps it.
fn fit_the_preopens(_: &WasiInodes, fs: &mut WasiFs) -> Result<(), String> {
    let poisoned = |what: &str| format!("wasmer-wasix's {what} lock is poisoned");
    *fs.root_inode
        .name
        .write()
        .map_err(|_| poisoned("virtual root"))? = VIRTUAL_ROOT_NAME.into();
    let preopens = fs
        .preopen_fds
        .read()
        .map_err(|_| poisoned("preopens"))?
        .clone();
    let mut fds = fs.fd_map.write().map_err(|_| poisoned("descriptors"))?;
    for fd in preopens {
        if let Some(inner) = fds.get_mut(fd) {
            inner.rights.remove(Rights::FD_WRITE);
        }
    }
    Ok(())
}

/// Calls `entry` and returns the guest's exit code.
fn call_entry(
    store: &mut Store,
    instance: &wasmer::Instance,
    entry: &str,
) -> Result<i32, EngineError> {
    let func = instance
        .exports
        .get_function(entry)
        .map_err(|_| EngineError::MissingExport {
            name: entry.to_string(),
        })?;
    match func.call(store, &[]) {
        Ok(_) => Ok(0),
        Err(err) => exit_code_of(err),
    }
}

/// What a call that did not return means: a `proc_exit`, or a trap.
fn exit_code_of(err: RuntimeError) -> Result<i32, EngineError> {
    let err = match err.downcast::<WasiError>() {
        Ok(WasiError::Exit(code)) => return Ok(code.raw()),
        Ok(other) => return Err(EngineError::Other(other.to_string())),
        Err(err) => err,
    };
    if let Some(thread) = err.downcast_ref::<WasiThreadError>() {
        return Err(EngineError::Other(thread.to_string()));
    }
    let message = err.message();
    match err.to_trap() {
        Some(code) => Err(EngineError::Trap(code.to_string())),
        None => Err(EngineError::Trap(first_line(&message))),
    }
}

/// The first line of an error's text.
fn first_line(err: &dyn std::fmt::Display) -> String {
    let text = err.to_string();
    text.lines().next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
kwasi_testkit::engine_tests!(WasmerEngine::default());
