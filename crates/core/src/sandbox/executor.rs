//! The code that runs inside the container process: libcontainer calls it once the sandbox is
//! in place. It runs a wasm workload with the shim's engine, or, when the entrypoint is an
//! ordinary Linux program and the image has no wasm layer, executes that program as runc would
//! (a pod's pause container and its sidecars share the pod's runtime handler).

use std::io::Write;
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::cache::{CompileCache, Outcome, Stored};
use crate::engine::{AppSource, Engine, EngineError, WasmBytes, Workload, DEFAULT_ENTRY};
use crate::http::{HttpConfig, Resources};
use crate::image::layers::{ImageContent, WasmLayer};
use crate::workload::native_program;

/// Runs a task's workload in the container process: a wasm workload with engine `E`, or a
/// native program.
///
/// `validate` (at `create`) reads and compiles the module, so that bad input fails `create`
/// with its reason; `exec` (at `start`) runs what `validate` prepared and ends the process with
/// the guest's exit code (a native program replaces the process instead).
pub(crate) struct WasmExecutor<E: Engine> {
    engine: E,
    cache: Option<Arc<CompileCache>>,
    /// What the image holds besides its rootfs: a wasm layer, or an application's layers.
    image: Option<Arc<ImageContent>>,
    /// The compiled form of an unread module layer, found in the cache by the zygote's worker.
    stored: Option<Arc<Stored>>,
    /// For exec processes: the container's seccomp profile, which libcontainer 0.7 leaves out
    /// of an exec process's spec. The executor installs it, last thing before the workload.
    seccomp: Option<Arc<LinuxSeccomp>>,
    prepared: Arc<Mutex<Option<Prepared<E>>>>,
    /// The close-on-exec descriptors libcontainer left in the process (see
    /// [`inherited_cloexec_fds`]), found when `validate` starts.
    inherited: Arc<Mutex<Vec<i32>>>,
}

/// What `validate` leaves for `exec`.
enum Prepared<E: Engine> {
    /// A wasm workload and its compiled module.
    Wasm(Workload, E::Module),
    /// An ordinary Linux program, executed in place of the container process.
    Native,
}

impl<E: Engine> Clone for WasmExecutor<E> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            cache: self.cache.clone(),
            image: self.image.clone(),
            stored: self.stored.clone(),
            seccomp: self.seccomp.clone(),
            prepared: Arc::clone(&self.prepared),
            inherited: Arc::clone(&self.inherited),
        }
    }
}

impl<E: Engine> WasmExecutor<E> {
    /// The executor of a container's init process: its module or application from `image`
    /// (compiled through `cache`, or, for an unread module, loaded from `stored`), else from
    /// the rootfs.
    pub(crate) fn new(
        engine: E,
        cache: Option<Arc<CompileCache>>,
        image: Option<Arc<ImageContent>>,
        stored: Option<Stored>,
    ) -> Self {
        Self {
            engine,
            cache,
            image,
            stored: stored.map(Arc::new),
            seccomp: None,
            prepared: Arc::new(Mutex::new(None)),
            inherited: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The executor of exec processes: only files of the rootfs (an exec names what it runs;
    /// the image's wasm layer is the init process's), and the container's seccomp profile.
    pub(crate) fn for_exec(
        engine: E,
        cache: Option<Arc<CompileCache>>,
        seccomp: Option<LinuxSeccomp>,
    ) -> Self {
        Self {
            seccomp: seccomp.map(Arc::new),
            ..Self::new(engine, cache, None, None)
        }
    }

    fn prepare(&self, spec: &Spec) -> Result<Prepared<E>, String> {
        if self.image.is_none() {
            if let Some(program) = native_program(spec) {
                check_executable(&program)?;
                return Ok(Prepared::Native);
            }
        }
        let mut workload = Workload::from_spec(spec).map_err(|e| e.to_string())?;
        let wasm = match self.image.as_deref() {
            Some(ImageContent::Application(layers)) => {
                return self.prepare_app(AppSource::Layers(layers), workload);
            }
            Some(ImageContent::UnreadModule(layer)) => {
                workload.name_after(layer);
                let component = crate::engine::is_component(&layer.bytes);
                return self.prepare_module(workload, &layer.origin(), component, || {
                    self.load_stored(layer)
                });
            }
            Some(ImageContent::Module(layer)) => workload.use_layer(layer),
            None => match self.app_manifest(&workload) {
                Some(manifest) => {
                    return self.prepare_app(AppSource::Manifest(&manifest), workload)
                }
                None => workload.read_module().map_err(|e| e.to_string())?,
            },
        };
        self.prepare_module(workload, &wasm.origin, wasm.is_component(), || {
            self.compile(&wasm)
        })
    }

    /// Prepares `workload` to run the module or component from `origin`, which `load`
    /// compiles or loads, once checked.
    fn prepare_module(
        &self,
        workload: Workload,
        origin: &str,
        component: bool,
        load: impl FnOnce() -> Result<E::Module, EngineError>,
    ) -> Result<Prepared<E>, String> {
        if component {
            self.check_component(&workload)
                .map_err(|e| format!("{origin}: {e}"))?;
        }
        let module = load()
            .and_then(|module| {
                if self.engine.exports_entry(&module, &workload.entry) {
                    Ok(module)
                } else if component {
                    Err(EngineError::Other(
                        "the component exports neither wasi:cli/run nor \
                         wasi:http/incoming-handler"
                            .to_string(),
                    ))
                } else {
                    Err(EngineError::MissingExport {
                        name: workload.entry.clone(),
                    })
                }
            })
            .map_err(|e| format!("{origin}: {e}"))?;
        Ok(Prepared::Wasm(workload, module))
    }

    /// Loads the compiled form of the unread module `layer` that the zygote's worker found in
    /// the cache.
    fn load_stored(&self, layer: &WasmLayer) -> Result<E::Module, EngineError> {
        let (Some(cache), Some(stored)) = (&self.cache, &self.stored) else {
            return Err(EngineError::Other(format!(
                "{} was read neither from containerd nor from the compile cache",
                layer.digest
            )));
        };
        let module = cache.load(&self.engine, stored)?;
        log::debug!("{}: compile cache {:?}", layer.origin(), Outcome::Hit);
        Ok(module)
    }

    /// Compiles `wasm`, through the compile cache when there is one.
    fn compile(&self, wasm: &WasmBytes) -> Result<E::Module, EngineError> {
        match &self.cache {
            Some(cache) => cache
                .load_or_compile(&self.engine, wasm)
                .map(|(module, outcome)| {
                    log::debug!("{}: compile cache {outcome:?}", wasm.origin);
                    module
                }),
            None => self.engine.compile(wasm),
        }
    }

    /// The application manifest the workload names, when the engine runs applications:
    /// `args[0]` if it is such a file, else the one in the working directory when the spec
    /// names no program (no args, an empty one or `/`, as SpinKube's pods do).
    fn app_manifest(&self, workload: &Workload) -> Option<std::path::PathBuf> {
        let name = self.engine.app_manifest_name()?;
        let named = &workload.module_path;
        if named.file_name().is_some_and(|f| f == name) {
            return Some(named.clone());
        }
        let no_program = named.as_os_str().is_empty() || named == std::path::Path::new("/");
        let in_cwd = workload.cwd.join(name);
        (no_program && in_cwd.is_file()).then_some(in_cwd)
    }

    fn prepare_app(&self, app: AppSource<'_>, workload: Workload) -> Result<Prepared<E>, String> {
        let module = self
            .engine
            .load_app(app, &workload, &|wasm| self.compile(wasm))
            .map_err(|e| e.to_string())?;
        Ok(Prepared::Wasm(workload, module))
    }
}

impl<E: Engine> WasmExecutor<E> {
    /// Refuses, at `create`, a component that cannot run: on an engine without components,
    /// with a `#func` entry, or with HTTP settings that are wrong.
    fn check_component(&self, workload: &Workload) -> Result<(), String> {
        if !self.engine.runs_components() {
            return Err(format!(
                "is a WebAssembly component; the {} shim runs core modules only (components \
                 run with the wasmtime shim)",
                self.engine.name()
            ));
        }
        if workload.entry != DEFAULT_ENTRY {
            return Err(format!(
                "a component runs through its wasi:cli/run or wasi:http/incoming-handler \
                 export: drop the #{} suffix",
                workload.entry
            ));
        }
        HttpConfig::from_env(&workload.env, Resources::of_this_process())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl<E: Engine> Executor for WasmExecutor<E> {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        if let Ok(mut inherited) = self.inherited.lock() {
            *inherited = inherited_cloexec_fds();
        }
        // The container process inherits the shim's logger; keep compiler internals (cranelift
        // logs every pass at debug level) out of the shim log even when containerd debugs.
        log::set_max_level(log::LevelFilter::Info.min(log::max_level()));
        let prepared = self
            .prepare(spec)
            .map_err(ExecutorValidationError::ArgValidationError)?;
        let mut slot = self
            .prepared
            .lock()
            .map_err(|_| ExecutorValidationError::ArgValidationError("poisoned lock".into()))?;
        *slot = Some(prepared);
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let taken = self.prepared.lock().ok().and_then(|mut slot| slot.take());
        let prepared = match taken {
            Some(prepared) => prepared,
            None => self.prepare(spec).map_err(ExecutorError::Other)?,
        };
        if let Some(profile) = &self.seccomp {
            install_seccomp(profile).map_err(ExecutorError::Other)?;
        }
        let (workload, module) = match prepared {
            Prepared::Wasm(workload, module) => (workload, module),
            Prepared::Native => {
                crate::signals::restore_for_exec();
                return DefaultExecutor {}.exec(spec);
            }
        };
        // What `execve` would close: a tenant's start, for one, waits for one of them.
        let inherited = self.inherited.lock().map(|f| f.clone()).unwrap_or_default();
        for fd in inherited {
            // SAFETY: closing descriptors libcontainer left for exec to close; nothing of
            // ours uses them.
            unsafe { libc::close(fd) };
        }
        crate::signals::exit_on_termination_signals();
        let code = match self.engine.run(module, &workload) {
            Ok(code) => code,
            Err(err) => {
                let _ = std::io::stdout().flush();
                let _ = writeln!(std::io::stderr(), "{}: {err}", self.engine.name());
                err.exit_code()
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code)
    }
}

/// The descriptors above stdio that are close-on-exec: what libcontainer leaves in the
/// container process for the kernel to close when the workload's program is executed (the
/// pipe a tenant's start waits on, among them). A wasm workload is not executed: the
/// executor closes them before it runs the guest. Read when `validate` starts, so that the
/// engine's own descriptors, opened later, are not among them.
fn inherited_cloexec_fds() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    fds.retain(|&fd| {
        // SAFETY: F_GETFD on a descriptor number; an invalid one (the directory's own,
        // closed since) only fails.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        flags >= 0 && flags & libc::FD_CLOEXEC != 0
    });
    fds
}

/// Installs the container's seccomp profile in an exec process. Without CAP_SYS_ADMIN the
/// kernel accepts a filter only from a process that cannot gain privileges, so such a process
/// gets `no_new_privs` first (runc installs it while still privileged; libcontainer 0.7 leaves
/// it out, and this is as late as kwasi can act).
fn install_seccomp(profile: &LinuxSeccomp) -> Result<(), String> {
    use oci_spec::runtime::LinuxSeccompAction;
    let notifies = profile
        .syscalls()
        .iter()
        .flatten()
        .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    if notifies {
        return Err(
            "the container's seccomp profile hands syscalls to a listener \
                    (SCMP_ACT_NOTIFY), which kwasi does not support for exec processes"
                .to_string(),
        );
    }
    let privileged = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    )
    .unwrap_or(false);
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) takes no pointer.
    if !privileged && unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "setting no_new_privs for the seccomp profile: {}",
            std::io::Error::last_os_error()
        ));
    }
    libcontainer::seccomp::initialize_seccomp(profile)
        .map(|_| ())
        .map_err(|e| format!("installing the container's seccomp profile: {e}"))
}

/// Refuses, at `create`, a native entrypoint that cannot be executed.
fn check_executable(program: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(program)
        .map_err(|e| format!("entrypoint {}: {e}", program.display()))?
        .permissions()
        .mode();
    if mode & 0o111 == 0 {
        return Err(format!(
            "entrypoint {} is not executable: set its execute bit (chmod +x) in the image",
            program.display()
        ));
    }
    Ok(())
}
