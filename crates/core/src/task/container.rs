//! The task service's seam to the sandbox: a [`Runtime`] creates a task's [`Container`], which
//! runs its init process and its exec processes. `crate::sandbox` implements them with
//! libcontainer; the service's unit tests with fakes.

use anyhow::Result;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use nix::sys::signal::Signal;
use oci_spec::runtime::{LinuxResources, Process as OciProcess};

use crate::sandbox::oom::MemoryCgroup;
use crate::sandbox::{RootfsMount, Stats, StdioPaths};

/// What `create` asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskConfig {
    /// The container id.
    pub(crate) id: String,
    /// The OCI bundle directory.
    pub(crate) bundle: String,
    /// The mounts that make up `<bundle>/rootfs`.
    pub(crate) rootfs: Vec<RootfsMount>,
    /// The init process's stdio.
    pub(crate) stdio: StdioPaths,
    /// Whether the init process runs on a terminal.
    pub(crate) terminal: bool,
    /// The runtime options containerd passes (`runtimeoptions.v1.Options` or runc's).
    pub(crate) options: Option<Any>,
}

/// What `exec` asks for.
#[derive(Debug, Clone)]
pub(crate) struct ExecConfig {
    /// The exec id.
    pub(crate) exec_id: String,
    /// The process to run (args, env, cwd, user, capabilities...).
    pub(crate) process: OciProcess,
    /// Its stdio.
    pub(crate) stdio: StdioPaths,
    /// Whether it runs on a terminal.
    pub(crate) terminal: bool,
}

/// Which process a call is about: the init process, or an exec process by id.
pub(crate) type ProcessRef<'a> = Option<&'a str>;

/// Creates containers.
pub(crate) trait Runtime: Send + Sync + 'static {
    /// The containers it creates.
    type Container: Container;

    /// Creates the container of a task: its init process exists and waits for `start`. On
    /// failure nothing is left behind.
    fn create(&self, config: &TaskConfig) -> Result<Self::Container>;
}

/// A task's container: its sandbox and the processes in it. Every call may block (it talks
/// to the kernel and to libcontainer); the service never holds another task's lock across
/// one.
pub(crate) trait Container: Send + Sync + 'static {
    /// The init process's pid.
    fn pid(&self) -> i32;

    /// Lets the init process run.
    fn start(&self) -> Result<()>;

    /// Starts an exec process in the container and returns its pid.
    fn exec(&self, config: &ExecConfig) -> Result<i32>;

    /// Sends `signal` to process `pid`, or to every process of the container when `all`.
    fn kill(&self, pid: i32, signal: Signal, all: bool) -> Result<()>;

    /// Freezes every process of the container.
    fn pause(&self) -> Result<()>;

    /// Thaws them.
    fn resume(&self) -> Result<()>;

    /// The pids of every process of the container.
    fn pids(&self) -> Result<Vec<i32>>;

    /// The container's cgroup figures.
    fn stats(&self) -> Result<Stats>;

    /// Applies new resource limits (memory, CPU, pids) to the running container.
    fn update(&self, resources: &LinuxResources) -> Result<()>;

    /// The container's memory cgroup, for OOM notifications.
    fn memory_cgroup(&self) -> Option<MemoryCgroup>;

    /// How many processes of the container the kernel's OOM killer has ended so far.
    fn oom_kills(&self) -> u64;

    /// Resizes the terminal of a process.
    fn resize_pty(&self, process: ProcessRef, width: u32, height: u32) -> Result<()>;

    /// Closes a process's standard input: it reads end of file once the client has closed
    /// its end too.
    fn close_stdin(&self, process: ProcessRef) -> Result<()>;

    /// Forgets what it kept for an exec process that was deleted.
    fn forget(&self, exec_id: &str);

    /// Kills what is left of the container and removes it (cgroup, state, rootfs mounts).
    fn delete(&self) -> Result<()>;
}
