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
//! So the shim starts that wait itself when it starts and when a create or an exec arrives,
//! on a thread of its own, while it reads the image, mounts the rootfs and has the zygote fork
//! the process: it moves itself into the memory cgroup it is already in (a move that changes
//! nothing; the memory hierarchy is the one every node mounts, v1 or v2). When the container
//! process then writes its pid, the grace period is over or nearly so.
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
            move_into(procs);
            MOVING.store(false, Ordering::Release);
        });
    if let Err(err) = spawned {
        log::debug!("no thread to prepare cgroup joins: {err}");
        MOVING.store(false, Ordering::Release);
    }
}

/// The `cgroup.procs` file of this process's memory cgroup, found once; `None` where there is
/// none (the reason is logged at debug level the first time).
fn own_procs_file() -> Option<&'static PathBuf> {
    static PROCS: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROCS
        .get_or_init(|| {
            MemoryCgroup::of_process(std::process::id() as i32)
                .map(|cgroup| cgroup.procs_file())
                .inspect_err(|e| log::debug!("cgroup joins are not prepared: {e:#}"))
                .ok()
        })
        .as_ref()
}

/// Writes this process's pid to `procs`, the file of the cgroup it is in.
fn move_into(procs: &Path) {
    if let Err(err) = std::fs::write(procs, std::process::id().to_string()) {
        log::debug!("preparing cgroup joins: writing {}: {err}", procs.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preparing_a_join_leaves_the_shim_in_its_cgroup() {
        let table = || std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let before = table();
        let procs = own_procs_file().expect("the test process has a memory cgroup");
        move_into(procs);
        assert_eq!(table(), before);
        assert!(std::fs::read_to_string(procs)
            .unwrap()
            .lines()
            .any(|pid| pid == std::process::id().to_string()));
    }
}
