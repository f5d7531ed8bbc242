//! The sandbox a task runs in: its rootfs, namespaces, cgroup, seccomp profile, capabilities and
//! user, as the OCI spec in the bundle asks, set up by youki's `libcontainer`.
//!
//! The wasm engine runs in the container's own process (the one libcontainer creates), never
//! in the shim: `executor` is the code that runs there.

mod bundle;
mod executor;
pub(crate) mod oom;
mod rootfs;
mod stdio;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use libcgroups::common::{create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager};
pub use libcgroups::stats::Stats;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;

use crate::cache::CompileCache;
use crate::engine::Engine;
use crate::image::layers::WasmLayer;
pub use rootfs::{unmount_rootfs, RootfsMount};
pub use stdio::StdioPaths;

/// What [`Sandbox::create`] needs to know about a task.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The container id.
    pub id: String,
    /// The OCI bundle directory (holds `config.json` and `rootfs/`).
    pub bundle: PathBuf,
    /// The mounts containerd asks for at `<bundle>/rootfs` (empty when already mounted).
    pub rootfs: Vec<RootfsMount>,
    /// containerd's fifos for the task's stdio.
    pub stdio: StdioPaths,
    /// Where libcontainer keeps the container's state (one directory per container below it).
    pub state_root: PathBuf,
    /// The compile cache, when one could be opened.
    pub cache: Option<Arc<CompileCache>>,
    /// The module, when the image ships it as a wasm layer rather than as a file in the rootfs.
    pub wasm_layer: Option<Arc<WasmLayer>>,
}

/// A created container: its process waits in the sandbox until [`Sandbox::start`].
pub struct Sandbox {
    container: Container,
    rootfs: rootfs::MountedRootfs,
    memory: Option<oom::MemoryCgroup>,
}

impl Sandbox {
    /// Mounts the rootfs, creates the namespaces, cgroup and container process, and prepares
    /// the workload in it with `engine` (which compiles the module).
    ///
    /// On failure nothing is left behind: no process, cgroup, state directory or mount.
    pub fn create<E: Engine>(engine: E, config: &SandboxConfig) -> Result<Sandbox> {
        let rootfs = rootfs::MountedRootfs::mount(&config.bundle, &config.rootfs)?;
        let container = build_container(engine, config).inspect_err(|_| {
            remove_container_state(&config.state_root, &config.id);
        });
        match container {
            Ok(container) => {
                let memory = container.pid().and_then(|pid| {
                    oom::MemoryCgroup::of_process(pid.as_raw())
                        .inspect_err(|e| log::warn!("{}: no OOM events: {e:#}", config.id))
                        .ok()
                });
                Ok(Sandbox {
                    container,
                    rootfs,
                    memory,
                })
            }
            Err(err) => {
                rootfs.unmount();
                Err(err)
            }
        }
    }

    /// The container process's pid, as seen from the shim.
    pub fn pid(&self) -> i32 {
        self.container.pid().map(|p| p.as_raw()).unwrap_or(0)
    }

    /// The container's memory cgroup, when it could be found.
    pub(crate) fn memory_cgroup(&self) -> Option<&oom::MemoryCgroup> {
        self.memory.as_ref()
    }

    /// Lets the container process run the workload.
    pub fn start(&mut self) -> Result<()> {
        self.container
            .start()
            .map_err(|e| anyhow!("starting the container: {e}"))
    }

    /// Sends `signal` to the container process, or to every process in its cgroup when `all`.
    pub fn kill(&mut self, signal: Signal, all: bool) -> Result<()> {
        self.container
            .kill(signal, all)
            .map_err(|e| anyhow!("sending {signal}: {e}"))
    }

    /// Freezes every process of the container (cgroup freezer).
    pub fn pause(&mut self) -> Result<()> {
        self.container
            .pause()
            .map_err(|e| anyhow!("pausing the container: {e}"))
    }

    /// Thaws a paused container.
    pub fn resume(&mut self) -> Result<()> {
        self.container
            .resume()
            .map_err(|e| anyhow!("resuming the container: {e}"))
    }

    /// The pids of every process in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let pids = self
            .cgroup()?
            .get_all_pids()
            .map_err(|e| anyhow!("listing the container's pids: {e}"))?;
        Ok(pids.into_iter().map(|p| p.as_raw()).collect())
    }

    /// The figures of the container's cgroup (CPU, memory, pids, block I/O, hugetlb).
    pub fn stats(&self) -> Result<Stats> {
        self.cgroup()?
            .stats()
            .map_err(|e| anyhow!("reading the container's cgroup: {e}"))
    }

    fn cgroup(&self) -> Result<AnyCgroupManager> {
        let spec = self
            .container
            .spec()
            .map_err(|e| anyhow!("reading the container's config: {e}"))?;
        create_cgroup_manager(CgroupConfig {
            cgroup_path: spec.cgroup_path,
            systemd_cgroup: self.container.systemd(),
            container_name: self.container.id().to_string(),
        })
        .map_err(|e| anyhow!("opening the container's cgroup: {e}"))
    }

    /// Kills what is left of the container, removes its cgroup and state, and unmounts its
    /// rootfs.
    pub fn delete(mut self) -> Result<()> {
        let deleted = self
            .container
            .delete(true)
            .map_err(|e| anyhow!("deleting the container: {e}"));
        self.rootfs.unmount();
        deleted
    }
}

fn build_container<E: Engine>(engine: E, config: &SandboxConfig) -> Result<Container> {
    bundle::adapt_for_libcontainer(&config.bundle)?;
    let stdio = config.stdio.open()?;
    std::fs::create_dir_all(&config.state_root)
        .with_context(|| format!("creating {}", config.state_root.display()))?;
    ContainerBuilder::new(config.id.clone(), SyscallType::Linux)
        .with_executor(executor::WasmExecutor::new(
            engine,
            config.cache.clone(),
            config.wasm_layer.clone(),
        ))
        .with_root_path(&config.state_root)
        .map_err(|e| anyhow!("{e}"))?
        .with_stdin(stdio.stdin)
        .with_stdout(stdio.stdout)
        .with_stderr(stdio.stderr)
        .validate_id()
        .map_err(|e| anyhow!("{e}"))?
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| anyhow!("{}", creation_error(&e)))
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
    match Container::load(dir.clone()) {
        Ok(mut container) => {
            if let Err(err) = container.delete(true) {
                log::warn!("cleaning up container {id}: {err}");
            }
        }
        Err(err) => log::warn!("loading container {id} for cleanup: {err}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
