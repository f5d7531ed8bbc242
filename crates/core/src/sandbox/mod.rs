//! The sandbox a task runs in: its rootfs, namespaces, cgroup, seccomp profile, capabilities and
//! user, as the OCI spec in the bundle asks, set up by youki's `libcontainer`; and the
//! processes in it: the init process and exec processes (`exec`), their stdio and terminals.
//!
//! The wasm engine runs in the container's own processes (the ones libcontainer creates),
//! never in the shim: `executor` is the code that runs there. Those processes are cloned from
//! the shim's [`Zygote`], a single-threaded process forked when the shim starts, never from the
//! multi-threaded shim itself (`zygote` says why).
//!
//! [`SandboxRuntime`] and [`Sandbox`] are the task service's [`Runtime`] and [`Container`].

mod bundle;
mod cgroup_join;
mod console;
mod exec;
mod executor;
pub(crate) mod oom;
mod options;
mod rootfs;
mod stdio;
mod zygote;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, Context, Result};
use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
};
pub use libcgroups::stats::Stats;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as Libcontainer;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, LinuxSeccomp, Spec};

use crate::engine::Engine;
use crate::image::layers::{ImageContent, ImageReader};
use crate::task::container::{Container, ExecConfig, ProcessRef, Runtime, TaskConfig};
pub(crate) use cgroup_join::prepare_detached as prepare_cgroup_join_detached;
use console::{Console, ConsoleSocket};
use executor::WasmExecutor;
use oom::MemoryCgroup;
use options::RuntimeOptions;
pub use rootfs::{unmount_rootfs, RootfsMount};
pub use stdio::StdioPaths;
use zygote::Image;
pub use zygote::Zygote;

/// Creates the sandboxes of a shim's tasks. Their processes are cloned from the shim's
/// [`Zygote`], which runs wasm with the shim's engine.
pub struct SandboxRuntime {
    zygote: Arc<Zygote>,
    namespace: String,
    containerd_address: String,
    state_root: PathBuf,
}

impl SandboxRuntime {
    /// A runtime that builds processes through `zygote`, keeps libcontainer's state under
    /// `state_root`, and reads images through containerd at `containerd_address` in
    /// `namespace`.
    pub fn new(
        zygote: Zygote,
        namespace: &str,
        containerd_address: &str,
        state_root: PathBuf,
    ) -> Self {
        SandboxRuntime {
            zygote: Arc::new(zygote),
            namespace: namespace.to_string(),
            containerd_address: containerd_address.to_string(),
            state_root,
        }
    }
}

impl Runtime for SandboxRuntime {
    type Container = Sandbox;

    /// Reads the module from the image's wasm layer if it has one while it mounts the rootfs,
    /// then creates the namespaces, cgroup and container process, and prepares the workload in it
    /// (which compiles the module). On failure nothing is left behind: no process, cgroup,
    /// state directory or mount.
    fn create(&self, task: &TaskConfig) -> Result<Sandbox> {
        // The container process's cgroup join waits for a grace period unless it was started
        // earlier (`cgroup_join`): start it now, beside the image lookup and the mounts.
        cgroup_join::prepare();
        let options = RuntimeOptions::from_any(task.options.as_ref())?;
        let bundle = PathBuf::from(&task.bundle);
        // The image lookup (a few round trips to containerd) needs neither the bundle nor the
        // rootfs: it runs on a thread of its own while they are prepared.
        let (looked_up, prepared) = std::thread::scope(|scope| {
            let lookup = std::thread::Builder::new()
                .name("image-lookup".to_string())
                .spawn_scoped(scope, || self.look_up_image(task));
            let prepared = prepare_bundle(&bundle, &task.rootfs, options);
            let looked_up = match lookup {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("looking up the image: its thread panicked"))),
                Err(_) => self.look_up_image(task),
            };
            (looked_up, prepared)
        });
        let (rootfs, seccomp) = prepared?;
        let (reader, content) = match looked_up {
            Ok(looked_up) => looked_up,
            Err(err) => {
                rootfs.unmount();
                return Err(err);
            }
        };
        let image = content.map(|content| Image {
            content,
            reader: &reader,
        });
        let built = self.build(task, &bundle, options, image);
        let (container, io) = match built {
            Ok(built) => built,
            Err(err) => {
                remove_container_state(&self.state_root, &task.id);
                rootfs.unmount();
                return Err(err);
            }
        };
        let memory = container.pid().and_then(|pid| {
            MemoryCgroup::of_process(pid.as_raw())
                .inspect_err(|e| log::warn!("{}: no OOM events: {e:#}", task.id))
                .ok()
        });
        let mut processes = HashMap::new();
        processes.insert(None, io);
        Ok(Sandbox {
            id: task.id.clone(),
            state_root: self.state_root.clone(),
            systemd: options.systemd_cgroup,
            zygote: Arc::clone(&self.zygote),
            container: Mutex::new(container),
            rootfs,
            memory,
            cgroup: Mutex::new(None),
            seccomp,
            processes: Mutex::new(processes),
        })
    }
}

impl SandboxRuntime {
    /// The module in task `task`'s image if it ships one as a wasm layer, read in the shim
    /// (only its header when the zygote may find its compiled form in the cache), or the
    /// layers of the Spin application it is; `None` for a module shipped as a file, which is
    /// read in the container. With the connection to containerd, for the rest of a module.
    fn look_up_image(&self, task: &TaskConfig) -> Result<(ImageReader, Option<ImageContent>)> {
        let looked_up = std::time::Instant::now();
        let mut reader = ImageReader::connect(&self.containerd_address, &self.namespace)?;
        let content = reader.content(&task.id, self.zygote.caches())?;
        let elapsed = looked_up.elapsed().as_secs_f64() * 1000.0;
        match &content {
            Some(ImageContent::Module(layer)) => log::info!(
                "create {}: wasm layer {} ({} bytes) read from containerd in {elapsed:.1} ms",
                task.id,
                layer.digest,
                layer.bytes.len(),
            ),
            Some(ImageContent::UnreadModule(layer)) => log::info!(
                "create {}: wasm layer {} looked up in containerd in {elapsed:.1} ms",
                task.id,
                layer.digest,
            ),
            Some(ImageContent::Application(layers)) => log::info!(
                "create {}: {} layers of an application ({} bytes) read from containerd in \
                 {elapsed:.1} ms",
                task.id,
                layers.len(),
                layers.iter().map(|l| l.bytes.len()).sum::<usize>(),
            ),
            None => log::debug!(
                "create {}: no wasm layer in its image (looked up in {elapsed:.1} ms)",
                task.id
            ),
        }
        Ok((reader, content))
    }

    /// Builds the container through the zygote; returns it and the init process's stdio.
    fn build(
        &self,
        task: &TaskConfig,
        bundle: &Path,
        options: RuntimeOptions,
        image: Option<Image<'_>>,
    ) -> Result<(Libcontainer, ProcessIo)> {
        std::fs::create_dir_all(&self.state_root)
            .with_context(|| format!("creating {}", self.state_root.display()))?;
        let init = zygote::Process::Init {
            bundle: bundle.to_path_buf(),
            systemd: options.systemd_cgroup,
        };
        let (_, io) = launch(
            &self.zygote,
            &task.id,
            &self.state_root,
            init,
            &task.stdio,
            task.terminal,
            image,
        )?;
        let container = Libcontainer::load(self.state_root.join(&task.id))
            .map_err(|e| anyhow!("reading the state of container {}: {e}", task.id))?;
        Ok((container, io))
    }
}

/// Prepares `bundle` for libcontainer, checks its spec's cgroup path against `options`, and
/// mounts `mounts` at its rootfs; returns the rootfs and the spec's seccomp profile.
fn prepare_bundle(
    bundle: &Path,
    mounts: &[RootfsMount],
    options: RuntimeOptions,
) -> Result<(rootfs::MountedRootfs, Option<LinuxSeccomp>)> {
    bundle::adapt_for_libcontainer(bundle)?;
    let spec = Spec::load(bundle.join("config.json"))
        .with_context(|| format!("reading {}/config.json", bundle.display()))?;
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    options::check_cgroups_path(cgroups_path.as_deref().and_then(Path::to_str), options)?;
    Ok((rootfs::MountedRootfs::mount(bundle, mounts)?, seccomp))
}

/// Starts `process` in container `id` (its state under `state_root`) through `zygote`, with
/// its stdio (`stdio`'s fifos, or a terminal) and, for an init process, the image's layers;
/// returns its pid and the shim's hold on its stdio.
fn launch(
    zygote: &Zygote,
    id: &str,
    state_root: &Path,
    process: zygote::Process,
    stdio: &StdioPaths,
    terminal: bool,
    image: Option<Image<'_>>,
) -> Result<(i32, ProcessIo)> {
    let (process_stdio, io, console) = ProcessIo::open(state_root, stdio, terminal)?;
    let request = zygote::Request {
        id: id.to_string(),
        state_root: state_root.to_path_buf(),
        process,
    };
    let pid = zygote.build(request, process_stdio, image)?;
    Ok((pid, io.with_console(console, stdio)?))
}

/// In a zygote's worker: creates container `id` from `bundle` (its state under `state_root`),
/// its init process run by `executor` with `stdio`; returns the init process's pid.
fn build_init<E: Engine>(
    id: &str,
    state_root: &Path,
    executor: WasmExecutor<E>,
    stdio: ProcessStdio,
    bundle: &Path,
    systemd: bool,
) -> Result<i32> {
    let container = container_builder(id, state_root, executor, stdio)?
        .validate_id()
        .map_err(|e| anyhow!("{e}"))?
        .as_init(bundle)
        .with_systemd(systemd)
        .with_detach(true)
        .build()
        .map_err(|e| anyhow!("{}", creation_error(&e)))?;
    container
        .pid()
        .map(|pid| pid.as_raw())
        .ok_or_else(|| anyhow!("container {id} has no init process"))
}

/// libcontainer's builder for a process of container `id` (the init process, or an exec
/// one), run by `executor`, with `stdio`.
fn container_builder<E: Engine>(
    id: &str,
    state_root: &Path,
    executor: WasmExecutor<E>,
    stdio: ProcessStdio,
) -> Result<ContainerBuilder> {
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_executor(executor)
        .with_root_path(state_root)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(match stdio {
        ProcessStdio::Terminal(socket) => builder.with_console_socket(Some(socket)),
        ProcessStdio::Streams {
            stdin,
            stdout,
            stderr,
        } => builder
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr),
    })
}

/// What a new process gets for stdio: containerd's fifos, or, for a terminal, a socket that
/// libcontainer sends the terminal's master to.
pub(crate) enum ProcessStdio {
    /// The process's three streams.
    Streams {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The shim's console socket.
    Terminal(PathBuf),
}

/// What the shim holds of a process's stdio: its writer on the stdin fifo, or its terminal.
#[derive(Default)]
pub(crate) struct ProcessIo {
    stdin_writer: Option<File>,
    console: Option<Console>,
}

impl ProcessIo {
    /// Opens a new process's stdio, `stdio`: containerd's fifos, whose three descriptors go to
    /// the process; or, for a terminal, a socket in `state_root` that libcontainer sends the
    /// terminal's master to ([`ProcessIo::with_console`] takes it once the process exists).
    fn open(
        state_root: &Path,
        stdio: &StdioPaths,
        terminal: bool,
    ) -> Result<(ProcessStdio, ProcessIo, Option<ConsoleSocket>)> {
        if terminal {
            let socket = ConsoleSocket::bind(state_root)?;
            let stdio = ProcessStdio::Terminal(socket.path().to_path_buf());
            return Ok((stdio, ProcessIo::default(), Some(socket)));
        }
        let open = stdio.open()?;
        let io = ProcessIo {
            stdin_writer: open.stdin_writer,
            console: None,
        };
        let stdio = ProcessStdio::Streams {
            stdin: open.stdin,
            stdout: open.stdout,
            stderr: open.stderr,
        };
        Ok((stdio, io, None))
    }

    /// Takes the terminal's master from `socket`, if the process has a terminal.
    fn with_console(mut self, socket: Option<ConsoleSocket>, stdio: &StdioPaths) -> Result<Self> {
        if let Some(socket) = socket {
            self.console = Some(socket.receive(stdio)?);
        }
        Ok(self)
    }
}

/// A created container: its init process waits in the sandbox until [`Container::start`].
pub struct Sandbox {
    id: String,
    state_root: PathBuf,
    systemd: bool,
    zygote: Arc<Zygote>,
    container: Mutex<Libcontainer>,
    rootfs: rootfs::MountedRootfs,
    memory: Option<MemoryCgroup>,
    /// The container's cgroup manager, once opened ([`Sandbox::with_cgroup`]).
    cgroup: Mutex<Option<AnyCgroupManager>>,
    /// The container's seccomp profile, which exec processes install (libcontainer 0.7 leaves
    /// it out of an exec process's spec).
    seccomp: Option<LinuxSeccomp>,
    /// The stdio of each process (`None`: the init process).
    processes: Mutex<HashMap<Option<String>, ProcessIo>>,
}

impl Sandbox {
    fn container(&self) -> MutexGuard<'_, Libcontainer> {
        self.container.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn processes(&self) -> MutexGuard<'_, HashMap<Option<String>, ProcessIo>> {
        self.processes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the container's cgroup manager, opened on the first call (which reads the
    /// container's state) and kept for the next ones: Stats and Update come often.
    fn with_cgroup<T>(&self, f: impl FnOnce(&AnyCgroupManager) -> Result<T>) -> Result<T> {
        let mut cgroup = self.cgroup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(manager) = cgroup.as_ref() {
            return f(manager);
        }
        let spec = self
            .container()
            .spec()
            .map_err(|e| anyhow!("reading the container's config: {e}"))?;
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: spec.cgroup_path,
            systemd_cgroup: self.systemd,
            container_name: self.id.clone(),
        })
        .map_err(|e| anyhow!("opening the container's cgroup: {e}"))?;
        f(cgroup.insert(manager))
    }
}

/// Held through every libcontainer `start` in this process.
///
/// libcontainer reaches the container's notify socket by a relative path: it changes to the
/// container's state directory, connects, and changes back. The working directory is the
/// whole shim's, and one shim serves every container of a pod: two starts at once could each
/// reach the other container's socket, or leave the shim in a directory that is removed with
/// its container, after which every start fails with "failed to get cwd".
static STARTING: Mutex<()> = Mutex::new(());

impl Container for Sandbox {
    fn pid(&self) -> i32 {
        self.container().pid().map(|p| p.as_raw()).unwrap_or(0)
    }

    fn start(&self) -> Result<()> {
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        self.container()
            .start()
            .map_err(|e| anyhow!("starting the container: {e}"))
    }

    fn exec(&self, config: &ExecConfig) -> Result<i32> {
        cgroup_join::prepare();
        let (pid, io) = exec::exec(
            &self.zygote,
            &self.id,
            &self.state_root,
            self.seccomp.clone(),
            config,
        )?;
        self.processes().insert(Some(config.exec_id.clone()), io);
        Ok(pid)
    }

    fn kill(&self, pid: i32, signal: Signal, all: bool) -> Result<()> {
        if all {
            return self
                .container()
                .kill(signal, true)
                .map_err(|e| anyhow!("sending {signal} to every process: {e}"));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| anyhow!("sending {signal} to {pid}: {e}"))
    }

    fn pause(&self) -> Result<()> {
        self.container()
            .pause()
            .map_err(|e| anyhow!("pausing the container: {e}"))
    }

    fn resume(&self) -> Result<()> {
        self.container()
            .resume()
            .map_err(|e| anyhow!("resuming the container: {e}"))
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let pids = self.with_cgroup(|cgroup| {
            cgroup
                .get_all_pids()
                .map_err(|e| anyhow!("listing the container's pids: {e}"))
        })?;
        Ok(pids.into_iter().map(|p| p.as_raw()).collect())
    }

    fn stats(&self) -> Result<Stats> {
        self.with_cgroup(|cgroup| {
            cgroup
                .stats()
                .map_err(|e| anyhow!("reading the container's cgroup: {e}"))
        })
    }

    fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.with_cgroup(|cgroup| {
            cgroup
                .apply(&ControllerOpt {
                    resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| anyhow!("updating the container's cgroup: {e}"))
        })
    }

    fn memory_cgroup(&self) -> Option<MemoryCgroup> {
        self.memory.clone()
    }

    fn oom_kills(&self) -> u64 {
        self.memory.as_ref().map_or(0, MemoryCgroup::oom_kills)
    }

    fn resize_pty(&self, process: ProcessRef, width: u32, height: u32) -> Result<()> {
        let processes = self.processes();
        let console = processes
            .get(&process.map(str::to_string))
            .and_then(|io| io.console.as_ref())
            .context("the process has no terminal")?;
        console.resize(width, height)
    }

    fn close_stdin(&self, process: ProcessRef) -> Result<()> {
        let mut processes = self.processes();
        if let Some(io) = processes.get_mut(&process.map(str::to_string)) {
            io.stdin_writer = None;
            if let Some(console) = &io.console {
                console.close_stdin()?;
            }
        }
        Ok(())
    }

    fn forget(&self, exec_id: &str) {
        self.processes().remove(&Some(exec_id.to_string()));
    }

    fn delete(&self) -> Result<()> {
        let deleted = self
            .container()
            .delete(true)
            .map_err(|e| anyhow!("deleting the container: {e}"));
        self.processes().clear();
        self.rootfs.unmount();
        deleted
    }
}

/// The reason in a libcontainer creation error: what the container process sent back (a missing
/// file, an invalid module), without the layers of context that carried it.
fn creation_error(err: &libcontainer::error::LibcontainerError) -> String {
    /// libcontainer's wording around an error the container process reports.
    const CARRIER: &str = "error in executing process : ";
    /// libcontainer's wordings that say nothing of the cause, which its `Debug` form keeps
    /// (its creation error does not expose it as a source).
    const VAGUE: &[&str] = &["io error", "syscall", "nix error", "mount error"];
    let mut message = err.to_string();
    if VAGUE.iter().any(|v| message.ends_with(v)) {
        message = format!("{message} ({err:?})");
    }
    match message.rfind(CARRIER) {
        Some(at) => message[at + CARRIER.len()..].trim().to_string(),
        None => message,
    }
}

/// Removes what a failed or abandoned container left in `state_root`: its processes, cgroup
/// and state directory.
pub fn remove_container_state(state_root: &Path, id: &str) {
    let dir = state_root.join(id);
    if !dir.exists() {
        return;
    }
    match Libcontainer::load(dir.clone()) {
        Ok(mut container) => {
            if let Err(err) = container.delete(true) {
                log::warn!("cleaning up container {id}: {err}");
            }
        }
        Err(err) => log::warn!("loading container {id} for cleanup: {err}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
