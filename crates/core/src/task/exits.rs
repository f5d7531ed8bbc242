//! Exits of child processes, as reported by containerd-shim's reaper (the shim is a child
//! subreaper, and reaps every child on SIGCHLD).
//!
//! An exit can be reported before the task that owns the pid is registered (a container
//! process that dies while `create` is still returning). Such exits are kept, with the time
//! they were seen, until `create` claims them; exits of other children (libcontainer's
//! short-lived intermediate process) are dropped once they are old.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_shim::monitor::{monitor_subscribe, Subject, Topic};

/// How long an exit nobody claimed is kept.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

/// Exits that arrived for pids no task owned (yet).
#[derive(Default)]
pub(crate) struct ExitMonitor {
    unclaimed: Mutex<HashMap<i32, (i32, Instant)>>,
}

impl ExitMonitor {
    /// Subscribes to the reaper and calls `on_exit(pid, exit_code)` for each exit, from a
    /// thread of its own, until `on_exit` is called after the service is gone.
    pub(crate) fn spawn(on_exit: impl Fn(i32, i32) -> bool + Send + 'static) {
        let subscription = match monitor_subscribe(Topic::Pid) {
            Ok(s) => s,
            Err(err) => {
                log::error!("subscribing to process exits: {err}");
                return;
            }
        };
        std::thread::spawn(move || {
            for event in subscription.rx.iter() {
                if let Subject::Pid(pid) = event.subject {
                    on_exit(pid, event.exit_code);
                }
            }
        });
    }

    /// The moment from which an unclaimed exit may belong to a task being created now.
    pub(crate) fn mark(&self) -> Instant {
        Instant::now()
    }

    /// Keeps the exit of `pid`, which no task owns yet.
    pub(crate) fn unclaimed(&self, pid: i32, code: i32) {
        let mut map = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, seen)| seen.elapsed() < UNCLAIMED_TTL);
        map.insert(pid, (code, Instant::now()));
    }

    /// The exit code of `pid` if it exited since `since` before its task was registered.
    pub(crate) fn claim(&self, pid: i32, since: Instant) -> Option<i32> {
        let mut map = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(&pid) {
            Some((code, seen)) if seen >= since => Some(code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_seen_after_the_mark_is_claimed_once() {
        let monitor = ExitMonitor::default();
        let since = monitor.mark();
        monitor.unclaimed(42, 3);
        assert_eq!(monitor.claim(42, since), Some(3));
        assert_eq!(monitor.claim(42, since), None);
    }

    #[test]
    fn an_exit_seen_before_the_mark_belongs_to_an_older_process() {
        let monitor = ExitMonitor::default();
        monitor.unclaimed(42, 3);
        std::thread::sleep(Duration::from_millis(2));
        let since = monitor.mark();
        assert_eq!(monitor.claim(42, since), None);
    }
}
