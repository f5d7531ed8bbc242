//! The contract between kwasi's core and a WebAssembly runtime.
//!
//! An engine crate implements [`Engine`] and nothing else: the core decides *what* to run (it
//! reads the OCI bundle into a [`Workload`]) and *where* (inside the task's sandbox, with the
//! guest's stdio already wired to containerd's fifos). The engine only compiles and runs.
//!
//! The lifecycle has two steps so that bad input is reported when the task is created, not when
//! it starts:
//!
//! 1. At `create`, inside the sandbox, the core gets the compiled module, from
//!    [`Engine::compile`] or, through the compile cache, [`Engine::load_precompiled`], and asks
//!    [`Engine::exports_entry`] whether the entry function exists. Either failure reaches `ctr`
//!    as the reason `create` failed.
//! 2. At `start`, [`Engine::run`] instantiates the module with the workload's arguments,
//!    environment and preopened directories, calls the entry function and returns the
//!    guest's exit code.
//!
//! The bytes may also be a WebAssembly component ([`WasmBytes::is_component`]). The core
//! refuses one at `create` unless [`Engine::runs_components`]; an engine that runs them
//! decides from the component's exports whether it is a `wasi:cli/run` command (run like a
//! module) or a `wasi:http/incoming-handler` service, which it serves with
//! [`crate::http::serve`] until the task is told to stop.

use std::path::{Path, PathBuf};

/// The name of the entry function that a WASI command exports.
pub const DEFAULT_ENTRY: &str = "_start";

/// A WebAssembly runtime that kwasi can drive.
///
/// Both methods run in the task's container process, after the sandbox (namespaces, cgroup,
/// rootfs, seccomp, capabilities, user) is in place, so an engine may read paths in
/// [`Workload`] as they are and must not try to isolate the guest further.
///
/// The guest's standard input, output and error are the process's own descriptors 0, 1 and 2,
/// which the core has already connected to containerd's fifos: an engine inherits them.
pub trait Engine: Clone + Send + Sync + 'static {
    /// A compiled module, ready to be instantiated by [`Engine::run`].
    type Module: Send + 'static;

    /// A short lowercase name (`wasmtime`), used in logs and error messages.
    fn name(&self) -> &'static str;

    /// Whether [`Engine::compile`] takes WebAssembly components as well as core modules. The
    /// core refuses a component with a clear error when it does not (the default). An engine
    /// that does runs a component exporting `wasi:cli/run` like a command, and serves one
    /// exporting `wasi:http/incoming-handler` with [`crate::http::serve`].
    fn runs_components(&self) -> bool {
        false
    }

    /// Compiles (or, for an interpreter, validates and loads) `wasm`.
    ///
    /// Errors should say what is wrong with the module in one line; the core adds which file it
    /// was.
    fn compile(&self, wasm: &WasmBytes) -> Result<Self::Module, EngineError>;

    /// Whether `module` exports a function named `name` of type `() -> ()`, which
    /// [`Engine::run`] can call. The core refuses a workload whose entry is not one.
    fn exports_entry(&self, module: &Self::Module, name: &str) -> bool;

    /// Instantiates `module`, calls the workload's entry function ([`Workload::entry`]) and
    /// returns the guest's exit code: the value passed to `proc_exit`, or 0 when the entry
    /// function returns.
    fn run(&self, module: Self::Module, workload: &Workload) -> Result<i32, EngineError>;

    /// Identifies the engine's version and the configuration that shapes compiled code.
    /// Artifacts from [`Engine::precompile`] are only handed back to an engine with the same
    /// fingerprint. `None` (the default) means the engine cannot precompile: every start
    /// calls [`Engine::compile`].
    fn fingerprint(&self) -> Option<String> {
        None
    }

    /// Compiles `wasm` ahead of time to bytes that [`Engine::load_precompiled`] accepts.
    /// An engine whose compiler works through files does so in `scratch`.
    fn precompile(&self, wasm: &WasmBytes, scratch: &Scratch) -> Result<Vec<u8>, EngineError> {
        let _ = (wasm, scratch);
        Err(EngineError::Other(format!(
            "{} cannot precompile",
            self.name()
        )))
    }

    /// Loads bytes that [`Engine::precompile`] produced with the same fingerprint (the core
    /// has checked their integrity).
    fn load_precompiled(&self, compiled: &[u8]) -> Result<Self::Module, EngineError> {
        let _ = compiled;
        Err(EngineError::Other(format!(
            "{} cannot precompile",
            self.name()
        )))
    }

    /// Loads an entry of the compile cache: `compiled` (as for [`Engine::load_precompiled`])
    /// is mapped from the start of the file at `path`, which has a trailer of the cache's
    /// after it. An engine that can run compiled code mapped from a file overrides this, so
    /// that its code is not copied and the containers of one module share its pages; by
    /// default, `compiled` is loaded.
    fn load_precompiled_file(
        &self,
        path: &Path,
        compiled: &[u8],
    ) -> Result<Self::Module, EngineError> {
        let _ = path;
        self.load_precompiled(compiled)
    }

    /// The file name of an application manifest that this engine runs from a container's
    /// filesystem (`spin.toml`), if it runs applications of several components. The core
    /// hands the engine such a file ([`AppSource::Manifest`]) when `process.args[0]` names
    /// one, or when `process.args` is empty, `/` or absent and the working directory holds
    /// one. `None` (the default): the engine runs one module per container.
    fn app_manifest_name(&self) -> Option<&'static str> {
        None
    }

    /// Loads an application of several components: from its image's layers, or from a
    /// manifest in the container's filesystem. `compile` compiles one of its modules or
    /// components through the core's compile cache. Called at `create`, like
    /// [`Engine::compile`]; [`Engine::run`] then runs what it returns, and
    /// [`Engine::exports_entry`] is not asked. By default an application is refused.
    fn load_app(
        &self,
        app: AppSource<'_>,
        workload: &Workload,
        compile: &dyn Fn(&WasmBytes) -> Result<Self::Module, EngineError>,
    ) -> Result<Self::Module, EngineError> {
        let _ = (app, workload, compile);
        Err(EngineError::Other(format!(
            "the image is a Spin application; the {} shim runs one module per container (Spin \
             applications run with the spin and wasmtime shims)",
            self.name()
        )))
    }
}

/// Gives the pages of heap memory that are free again back to the kernel (glibc's
/// `malloc_trim`), so that what the sandbox's setup and loading and instantiating a module
/// allocated and then freed stops counting against the container's memory while its guest
/// runs or idles. libcontainer parses the node's whole mount table in the container process,
/// so that part grows with the pods on the node (2.9 MiB per container at 4,000 mounts). An
/// engine calls it in [`Engine::run`] once the guest is instantiated, before its entry is
/// called: trimming earlier would give back pages that instantiation then faults in again.
/// It costs a walk over the heap's free chunks.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the kernel;
    // it is safe to call at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Where an application of several components comes from ([`Engine::load_app`]).
#[derive(Debug, Clone, Copy)]
pub enum AppSource<'a> {
    /// Its image's layers: every layer that is not a rootfs tar, in manifest order (for
    /// Spin, the wasm and data layers and the locked app).
    Layers(&'a [crate::image::layers::WasmLayer]),
    /// Its manifest, a file in the container's filesystem.
    Manifest(&'a Path),
}

/// A private, writable directory on the node's disk for an ahead-of-time compiler that works
/// through files (WasmEdge's). The directory is made when first asked for, so engines that
/// compile in memory cost nothing, and removed with its contents when the `Scratch` is
/// dropped. The compile cache places it next to its entries, through a path that still
/// reaches them inside the sandbox.
#[derive(Debug)]
pub struct Scratch {
    parent: PathBuf,
    dir: std::sync::OnceLock<PathBuf>,
}

impl Scratch {
    /// Scratch space in a new directory under `parent`.
    pub fn under(parent: impl Into<PathBuf>) -> Scratch {
        Scratch {
            parent: parent.into(),
            dir: std::sync::OnceLock::new(),
        }
    }

    /// The directory, created on first use.
    pub fn dir(&self) -> Result<&Path, EngineError> {
        if let Some(dir) = self.dir.get() {
            return Ok(dir);
        }
        let dir = self.parent.join(crate::unique_name(".scratch"));
        std::fs::create_dir(&dir).map_err(|e| {
            EngineError::Other(format!(
                "making scratch space in {}: {e}",
                self.parent.display()
            ))
        })?;
        Ok(self.dir.get_or_init(|| dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The bytes of a WebAssembly module and where they came from.
#[derive(Debug, Clone)]
pub struct WasmBytes {
    /// Where the bytes were read from: a path as the guest sees it, or an image layer (for
    /// error messages).
    pub origin: String,
    /// The module's binary encoding.
    pub bytes: Vec<u8>,
    /// The SHA-256 of `bytes` in hex, when already known (an image layer's digest), so that
    /// it is not computed again.
    pub sha256: Option<String>,
}

impl WasmBytes {
    /// Whether the bytes are a component rather than a core module ([`is_component`]).
    pub fn is_component(&self) -> bool {
        is_component(&self.bytes)
    }

    /// The SHA-256 of the bytes, in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        match &self.sha256 {
            Some(known) => known.clone(),
            None => crate::sha256_hex(&self.bytes),
        }
    }
}

/// Whether a wasm binary that starts with `header` is a component rather than a core module:
/// the binary format's layer field (bytes 6 and 7) is 1 for components, 0 for modules.
pub fn is_component(header: &[u8]) -> bool {
    header.len() >= 8 && header[6..8] == [1, 0]
}

/// What to run and with what: derived by the core from the OCI spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The module's path inside the container (`process.args[0]` without its `#func` suffix).
    pub module_path: PathBuf,
    /// The function to call: `_start`, or the name after `#` in `process.args[0]`.
    pub entry: String,
    /// The guest's arguments, `args[0]` included (without any `#func` suffix).
    pub args: Vec<String>,
    /// The guest's environment, as `KEY=VALUE` pairs split at the first `=`.
    pub env: Vec<(String, String)>,
    /// The working directory (`process.cwd`). WASI has no such notion: the guest gets it as
    /// its first preopen, named `.` ([`Workload::preopens`]), and a relative module path
    /// resolves against it.
    pub cwd: PathBuf,
    /// Directories the guest may open, with their access rights.
    pub preopens: Vec<Preopen>,
}

/// A directory made available to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// The directory in the container's filesystem.
    pub host_path: PathBuf,
    /// The name the guest opens it by (`/`, `/data`, `.`).
    pub guest_path: String,
    /// Whether the guest may only read it.
    pub read_only: bool,
}

/// Why an engine could not compile or run a workload.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The bytes are not a module this engine can compile.
    #[error("invalid wasm module: {0}")]
    InvalidModule(String),
    /// The module does not export the requested entry function (or it has the wrong type).
    #[error("the module has no exported function `{name}` of type () -> ()")]
    MissingExport {
        /// The entry function asked for.
        name: String,
    },
    /// The guest trapped (an `unreachable`, an out-of-bounds access, stack overflow...).
    #[error("wasm trap: {0}")]
    Trap(String),
    /// Anything else: instantiation failed, an import is missing, a preopen cannot be opened.
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// The exit status the task reports when `run` fails this way.
    ///
    /// A trap ends the task like an abort does (128 + SIGABRT = 134), as `wasmtime run` does;
    /// other failures end it with 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Trap(_) => 128 + libc::SIGABRT,
            _ => 1,
        }
    }
}
