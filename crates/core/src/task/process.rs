//! One task's state as containerd sees it: created, running, paused or stopped, and how it
//! ended.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::sandbox::{Sandbox, StdioPaths};

/// How a task's process ended.
#[derive(Debug, Clone)]
pub(crate) struct Exit {
    pub(crate) code: u32,
    pub(crate) at: Timestamp,
}

/// Everything the shim knows of one task, behind a lock, with a condition variable that
/// `wait` sleeps on until the process has exited.
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) bundle: String,
    pub(crate) stdio: StdioPaths,
    state: Mutex<TaskState>,
    exited: Condvar,
}

pub(crate) struct TaskState {
    pub(crate) sandbox: Option<Sandbox>,
    pub(crate) pid: i32,
    pub(crate) status: Status,
    pub(crate) exit: Option<Exit>,
    /// The OOM kills of the task's cgroup reported to containerd so far.
    pub(crate) oom_kills: u64,
}

impl Task {
    pub(crate) fn new(id: String, bundle: String, stdio: StdioPaths, sandbox: Sandbox) -> Task {
        let pid = sandbox.pid();
        // A new cgroup counts from 0; one that is reused (a fixed cgroupsPath) starts where
        // it is.
        let oom_kills = sandbox.memory_cgroup().map_or(0, |c| c.oom_kills());
        Task {
            id,
            bundle,
            stdio,
            state: Mutex::new(TaskState {
                sandbox: Some(sandbox),
                pid,
                status: Status::CREATED,
                exit: None,
                oom_kills,
            }),
            exited: Condvar::new(),
        }
    }

    /// Locks the task's state (a poisoned lock is taken over: the state stays consistent
    /// field by field).
    pub(crate) fn lock(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that the process ended with `code` and wakes every `wait`. Returns false when
    /// an exit was already recorded.
    pub(crate) fn set_exited(&self, state: &mut TaskState, code: i32) -> bool {
        if state.exit.is_some() {
            return false;
        }
        state.status = Status::STOPPED;
        state.exit = Some(Exit {
            code: code as u32,
            at: containerd_shim::util::timestamp().unwrap_or_default(),
        });
        self.exited.notify_all();
        true
    }

    /// Blocks until the process has exited and returns how.
    pub(crate) fn wait(&self) -> Exit {
        let mut state = self.lock();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self
                .exited
                .wait_timeout(state, Duration::from_secs(60))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}
