//! One process of a task, its init process or an exec process, as a state machine:
//!
//! ```text
//! created ──start──▶ running ──pause──▶ paused
//!    │                  │  ◀──resume───   │
//!    │                exit              exit
//!    │                  ▼                 │
//!    ├────exit──────▶ stopped ◀───────────┘
//!    │                  │
//!    └────delete────▶ deleted ◀──delete───┘
//! ```
//!
//! [`Process::apply`] is the only way a status changes; the task service publishes the
//! event of each change it applies.

use containerd_shim::api::Status as ApiStatus;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;

use crate::sandbox::StdioPaths;

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Created, not started.
    Created,
    /// Started and not exited.
    Running,
    /// Frozen (the init process; its exec processes freeze with it).
    Paused,
    /// Exited (or never started and given up).
    Stopped,
    /// Deleted: gone from the service.
    Deleted,
}

impl Status {
    /// The status as containerd's task API names it.
    pub(crate) fn to_api(self) -> ApiStatus {
        match self {
            Status::Created => ApiStatus::CREATED,
            Status::Running => ApiStatus::RUNNING,
            Status::Paused => ApiStatus::PAUSED,
            Status::Stopped | Status::Deleted => ApiStatus::STOPPED,
        }
    }

    /// Its name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exit {
    /// The exit status: the code, or 128 + N when signal N ended it.
    pub(crate) code: u32,
    /// When.
    pub(crate) at: Timestamp,
}

/// What happens to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// It was started as `pid`.
    Started { pid: i32 },
    /// It was frozen.
    Paused,
    /// It was thawed.
    Resumed,
    /// It exited with `code`.
    Exited { code: i32 },
    /// It was deleted.
    Deleted,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Started { .. } => "start",
            Change::Paused => "pause",
            Change::Resumed => "resume",
            Change::Exited { .. } => "exit",
            Change::Deleted => "delete",
        }
    }
}

/// A change the process's status does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{process} is {status}: cannot {verb} it")]
pub(crate) struct NotAllowed {
    /// `task ID` or `exec process ID of task ID`.
    pub(crate) process: String,
    /// Its status.
    pub(crate) status: &'static str,
    /// What was asked.
    pub(crate) verb: &'static str,
    /// Whether the process is running (or paused): containerd expects a different error
    /// code for a call that needs it stopped.
    pub(crate) running: bool,
}

/// One process: its identity, stdio and state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Process {
    /// The task's id.
    pub(crate) task: String,
    /// The exec id; `None` for the init process.
    pub(crate) exec_id: Option<String>,
    /// Its pid once known (the init process has one from `create`), else 0.
    pub(crate) pid: i32,
    /// Its stdio (containerd's fifos).
    pub(crate) stdio: StdioPaths,
    /// Whether it runs on a terminal.
    pub(crate) terminal: bool,
    /// Whether containerd asked to close its stdin (`CloseIO`), which may come while the
    /// process is still being started.
    pub(crate) stdin_closed: bool,
    status: Status,
    exit: Option<Exit>,
}

impl Process {
    /// A created process.
    pub(crate) fn new(
        task: &str,
        exec_id: Option<&str>,
        pid: i32,
        stdio: StdioPaths,
        terminal: bool,
    ) -> Process {
        Process {
            task: task.to_string(),
            exec_id: exec_id.map(str::to_string),
            pid,
            stdio,
            terminal,
            stdin_closed: false,
            status: Status::Created,
            exit: None,
        }
    }

    /// Its status.
    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// How it ended, once it has.
    pub(crate) fn exit(&self) -> Option<&Exit> {
        self.exit.as_ref()
    }

    /// Whether it runs (or is frozen).
    pub(crate) fn is_running(&self) -> bool {
        matches!(self.status, Status::Running | Status::Paused)
    }

    /// `task ID`, or `exec process ID of task ID`.
    pub(crate) fn describe(&self) -> String {
        match &self.exec_id {
            Some(exec) => format!("exec process {exec} of task {}", self.task),
            None => format!("task {}", self.task),
        }
    }

    /// Whether `change` is allowed now (without applying it).
    pub(crate) fn check(&self, change: Change) -> Result<(), NotAllowed> {
        self.clone().apply(change).map(|_| ())
    }

    /// Applies `change`. Returns `Ok(true)` when the status changed, `Ok(false)` for a
    /// change that is already so (an exit reported twice), and an error for one the status
    /// does not allow. A process deleted before it exited (created and never started) is
    /// recorded as killed (137), as runc reports it.
    pub(crate) fn apply(&mut self, change: Change) -> Result<bool, NotAllowed> {
        use Status::*;
        let next = match (self.status, change) {
            (Created, Change::Started { pid }) => {
                self.pid = pid;
                Running
            }
            (Running, Change::Paused) => Paused,
            (Paused, Change::Resumed) => Running,
            (Created | Running | Paused, Change::Exited { code }) => {
                self.exit = Some(Exit {
                    code: code as u32,
                    at: containerd_shim::util::timestamp().unwrap_or_default(),
                });
                Stopped
            }
            (Stopped, Change::Exited { .. }) => return Ok(false),
            (Created, Change::Deleted) => {
                self.apply(Change::Exited {
                    code: 128 + libc::SIGKILL,
                })?;
                Deleted
            }
            (Stopped, Change::Deleted) => Deleted,
            (status, change) => {
                return Err(NotAllowed {
                    process: self.describe(),
                    status: status.name(),
                    verb: change.verb(),
                    running: matches!(status, Running | Paused),
                })
            }
        };
        self.status = next;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> Process {
        Process::new("t1", None, 42, StdioPaths::default(), false)
    }

    #[test]
    fn a_created_process_starts_pauses_resumes_exits_and_is_deleted() {
        let mut p = process();
        for (change, status) in [
            (Change::Started { pid: 42 }, Status::Running),
            (Change::Paused, Status::Paused),
            (Change::Resumed, Status::Running),
            (Change::Exited { code: 3 }, Status::Stopped),
            (Change::Deleted, Status::Deleted),
        ] {
            assert_eq!(p.apply(change), Ok(true), "{change:?}");
            assert_eq!(p.status(), status);
        }
        assert_eq!(p.exit().unwrap().code, 3);
    }

    #[test]
    fn a_second_start_is_not_allowed() {
        let mut p = process();
        p.apply(Change::Started { pid: 42 }).unwrap();
        let err = p.apply(Change::Started { pid: 42 }).unwrap_err();
        assert_eq!(err.to_string(), "task t1 is running: cannot start it");
        assert!(err.running);
    }

    #[test]
    fn a_running_process_cannot_be_deleted() {
        let mut p = process();
        p.apply(Change::Started { pid: 42 }).unwrap();
        assert!(p.apply(Change::Deleted).unwrap_err().running);
    }

    #[test]
    fn an_exit_reported_twice_changes_nothing() {
        let mut p = process();
        p.apply(Change::Started { pid: 42 }).unwrap();
        assert_eq!(p.apply(Change::Exited { code: 0 }), Ok(true));
        assert_eq!(p.apply(Change::Exited { code: 9 }), Ok(false));
        assert_eq!(p.exit().unwrap().code, 0);
    }

    #[test]
    fn deleting_a_process_that_never_started_records_137() {
        let mut p = process();
        assert_eq!(p.apply(Change::Deleted), Ok(true));
        assert_eq!(p.exit().unwrap().code, 137);
    }

    #[test]
    fn a_process_that_dies_before_it_is_started_is_stopped() {
        let mut p = process();
        assert_eq!(p.apply(Change::Exited { code: 137 }), Ok(true));
        assert_eq!(p.status(), Status::Stopped);
        assert!(p.apply(Change::Started { pid: 1 }).is_err());
    }

    #[test]
    fn nothing_happens_to_a_deleted_process() {
        let mut p = process();
        p.apply(Change::Deleted).unwrap();
        for change in [Change::Started { pid: 1 }, Change::Paused, Change::Deleted] {
            assert!(p.apply(change).is_err(), "{change:?}");
        }
    }

    #[test]
    fn an_exec_process_names_itself_and_its_task() {
        let p = Process::new("t1", Some("e1"), 0, StdioPaths::default(), false);
        assert_eq!(p.describe(), "exec process e1 of task t1");
    }
}
