//! Getting the kernel ready for a new process's cgroup join before the process asks for it.
//!
//! A container process joins its cgroups by writing its pid to `cgroup.procs` (libcontainer's
//! intermediate process does, for the init process and for every exec process). The kernel
//! serialises such moves under a global lock (`cgroup_threadgroup_rwsem`), and a move that
//! takes it while no other move has taken it in the last grace period waits for an RCU grace
//! period first: 10 to 20 ms on the 2-core test machines, more than half of the time libcontainer
//! spends on cgroups, namespaces and mounts (`startbreakdown`, with and without
//! `/sys/kernel/rcu_expedited`). Later moves in the same grace period take microseconds.
//!
//! So the shim starts that wait itself: in `start`, the first thing containerd runs, from a
//! child process of its own ([`prepare_detached`]), and again when a create or an exec arrives
//! at the server, on a thread of its own ([`prepare`]), while it reads the image, mounts the
//! rootfs and has the zygote fork the process. Either moves itself into the memory cgroup it is
//! already in (a move that changes nothing; the memory hierarchy is the one every node mounts,
//! v1 or v2). When the container process then writes its pid, the grace period is over or
//! nearly so.
//!
//! The kernel holds its cgroup mutex during that wait, as it does during the container
//! process's own: cgroup directories made meanwhile (the container's first one included) wait
//! for the grace period's end. So the shim adds no wait to the node; it moves one earlier.
//!
//! None of this is needed for correctness: if the move fails (no cgroup filesystem, a
//! rootless shim), the container process's join simply waits as it would have. On a node
//! with `favordynmods` on (Linux 6.18+; the README's "Node tuning"), moves lock only the moving
//! process's thread group and never wait: this move then costs a tenth of a millisecond on
//! its own thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use nix::unistd::ForkResult;

use super::oom::MemoryCgroup;

/// Whether a move started by [`prepare`] is still running (one at a time is enough: the
/// grace period it waits for serves every move until it ends).
static MOVING: AtomicBool = AtomicBool::new(false);

/// Starts, on a thread of its own, a move of this process into the cgroup it is in, unless one
/// is running already. Returns at once.
pub(crate) fn prepare() {
    let Some(procs) = own_procs_file() else {
        return;
    };
    if MOVING.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("cgroup-join".into())
        .spawn(move || {
            if let Err(err) = move_into(procs) {
                log::debug!("preparing cgroup joins: writing {}: {err}", procs.display());
            }
            MOVING.store(false, Ordering::Release);
        });
    if let Err(err) = spawned {
        log::debug!("no thread to prepare cgroup joins: {err}");
        MOVING.store(false, Ordering::Release);
    }
}

/// Starts the wait from a child process that moves itself into the cgroup it is in and exits,
/// for the shim's short-lived `start`: containerd waits for `start`'s exit, which a thread
/// blocked in the move would hold back until the grace period ends. The child closes every
/// descriptor it inherits first (containerd reads `start`'s output until every holder has
/// closed it), and nothing needs to wait for it: whoever inherits it reaps it, as for the
/// server `start` forks.
///
/// # Safety
///
/// The process must have a single thread: the child runs ordinary code after the fork.
pub(crate) unsafe fn prepare_detached() {
    // SAFETY: the caller guarantees a single thread; the child never returns.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => {}
        Ok(ForkResult::Child) => {
            close_all_descriptors();
            // Nothing is logged from here on: the log's descriptors are closed.
            if let Ok(procs) = procs_file() {
                let _ = move_into(&procs);
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Err(err) => log::debug!("no process to prepare cgroup joins: {err}"),
    }
}

/// Closes every descriptor of this process: with `close_range` (Linux 5.9), else one by one
/// up to the first 1,024 (a shim's `start` inherits three from containerd).
fn close_all_descriptors() {
    // SAFETY: close_range and close take no pointer; they close this process's own
    // descriptors.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..1024 {
                libc::close(fd);
            }
        }
    }
}

/// The `cgroup.procs` file of this process's memory cgroup, found once; `None` where there is
/// none (the reason is logged at debug level the first time).
fn own_procs_file() -> Option<&'static PathBuf> {
    static PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROCS
        .get_or_init(|| {
            procs_file()
                .inspect_err(|e| log::debug!("cgroup joins are not prepared: {e:#}"))
                .ok()
        })
        .as_ref()
}

/// The `cgroup.procs` file of this process's memory cgroup.
fn procs_file() -> anyhow::Result<PathBuf> {
    MemoryCgroup::of_process(std::process::id() as i32).map(|cgroup| cgroup.procs_file())
}

/// Writes this process's pid to `procs`, the file of the cgroup it is in.
fn move_into(procs: &Path) -> std::io::Result<()> {
    std::fs::write(procs, std::process::id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detached_child_closes_every_descriptor_it_inherits() {
        let _open = std::fs::File::open("/proc/self/status").unwrap();
        // SAFETY: the child makes only syscalls (close_range or close, fcntl) before `_exit`,
        // which is safe in a child of a multi-threaded process.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                close_all_descriptors();
                let open = (0..1024).filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1);
                unsafe { libc::_exit(open.count() as i32) }
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn preparing_a_join_leaves_the_shim_in_its_cgroup() {
        let table = || std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let before = table();
        let procs = own_procs_file().expect("the test process has a memory cgroup");
        move_into(procs).unwrap();
        assert_eq!(table(), before);
        assert!(std::fs::read_to_string(procs)
            .unwrap()
            .lines()
            .any(|pid| pid == std::process::id().to_string()));
    }
}
