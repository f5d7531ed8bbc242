//! OOM kills in a container's memory cgroup, as the kernel reports them: on cgroup v1 through
//! an eventfd registered for `memory.oom_control` in `cgroup.event_control`, on cgroup v2
//! through inotify on `memory.events`. One thread per shim waits on every container's.
//!
//! A wake-up only says that something may have happened (v2 reports every change of
//! `memory.events`); what counts is the cgroup's `oom_kill` counter, which
//! [`MemoryCgroup::oom_kills`] reads. The task service compares it with what it has
//! reported, both when woken and when the task's process exits, so that containerd always gets
//! `/tasks/oom` before `/tasks/exit`.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use anyhow::{anyhow, Context, Result};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Where the cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A process's memory cgroup directory (a container's, or the shim's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoryCgroup {
    dir: PathBuf,
    unified: bool,
}

impl MemoryCgroup {
    /// The memory cgroup of process `pid`, read from `/proc/<pid>/cgroup`: the `memory`
    /// hierarchy's on cgroup v1, the unified one on v2. Works for every cgroup driver.
    pub(crate) fn of_process(pid: i32) -> Result<MemoryCgroup> {
        let path = format!("/proc/{pid}/cgroup");
        let table = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        Self::from_table(&table, Path::new(CGROUP_ROOT))
            .ok_or_else(|| anyhow!("{path} names no memory cgroup"))
    }

    /// The memory cgroup in a `/proc/<pid>/cgroup` table, below the hierarchies at `root`.
    fn from_table(table: &str, root: &Path) -> Option<MemoryCgroup> {
        let mut unified = None;
        for line in table.lines() {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let relative = path.trim_start_matches('/');
            if controllers.split(',').any(|c| c == "memory") {
                return Some(MemoryCgroup {
                    dir: root.join("memory").join(relative),
                    unified: false,
                });
            }
            if controllers.is_empty() {
                unified = Some(MemoryCgroup {
                    dir: root.join(relative),
                    unified: true,
                });
            }
        }
        // A `0::` line alone is cgroup v2; beside v1 hierarchies it is a hybrid host's
        // unified hierarchy, which holds no memory controller.
        unified.filter(|_| !root.join("memory").is_dir())
    }

    /// The cgroup's `cgroup.procs`, whose writer moves a process into it.
    pub(crate) fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// How many processes of the cgroup the kernel's OOM killer has ended (`oom_kill` in
    /// `memory.oom_control` on v1, `memory.events` on v2); 0 when it cannot be read (the
    /// cgroup is gone, or the kernel predates the counter).
    pub(crate) fn oom_kills(&self) -> u64 {
        let file = if self.unified {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .map(|text| oom_kill_count(&text))
            .unwrap_or(0)
    }
}

/// The `oom_kill N` line of `memory.oom_control` or `memory.events`.
fn oom_kill_count(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The epoll token of the shared inotify instance (v1 watches use their eventfd's number).
const INOTIFY_TOKEN: u64 = u64::MAX;

/// Waits for OOM notifications of many cgroups on one thread, and calls its handler with the
/// id a cgroup was watched under. The thread starts with the first watch.
pub(crate) struct OomMonitor {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

struct Shared {
    epoll: Epoll,
    inotify: OnceLock<Inotify>,
    watches: Mutex<Watches>,
    on_oom: Box<dyn Fn(&str) + Send + Sync>,
}

#[derive(Default)]
struct Watches {
    /// v1: the eventfd (by its number) and the open `memory.oom_control` it is bound to.
    eventfds: HashMap<u64, (String, EventFd, File, PathBuf)>,
    /// v2: inotify watches on `memory.events`.
    inotify: HashMap<WatchDescriptor, String>,
}

impl OomMonitor {
    /// A monitor that calls `on_oom(id)` from its thread when the cgroup watched as `id` may
    /// have had an OOM kill.
    pub(crate) fn new(on_oom: impl Fn(&str) + Send + Sync + 'static) -> Result<OomMonitor> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).context("creating an epoll")?;
        Ok(OomMonitor {
            shared: Arc::new(Shared {
                epoll,
                inotify: OnceLock::new(),
                watches: Mutex::new(Watches::default()),
                on_oom: Box::new(on_oom),
            }),
            started: OnceLock::new(),
        })
    }

    /// Watches `cgroup` for OOM kills under `id`, until [`OomMonitor::unwatch`] or until the
    /// cgroup is removed.
    pub(crate) fn watch(&self, id: &str, cgroup: &MemoryCgroup) -> Result<()> {
        if cgroup.unified {
            self.shared.watch_unified(id, &cgroup.dir)?;
        } else {
            self.shared.watch_v1(id, &cgroup.dir)?;
        }
        self.started.get_or_init(|| {
            let shared = Arc::clone(&self.shared);
            std::thread::spawn(move || shared.run());
        });
        Ok(())
    }

    /// Stops watching what was watched under `id`.
    pub(crate) fn unwatch(&self, id: &str) {
        let mut watches = self.shared.watches();
        let v1: Vec<u64> = watches
            .eventfds
            .iter()
            .filter(|(_, (watched, ..))| watched == id)
            .map(|(token, _)| *token)
            .collect();
        for token in v1 {
            if let Some((_, eventfd, ..)) = watches.eventfds.remove(&token) {
                let _ = self.shared.epoll.delete(eventfd.as_fd());
            }
        }
        let v2: Vec<WatchDescriptor> = watches
            .inotify
            .iter()
            .filter(|(_, watched)| *watched == id)
            .map(|(wd, _)| *wd)
            .collect();
        for wd in v2 {
            watches.inotify.remove(&wd);
            if let Some(inotify) = self.shared.inotify.get() {
                let _ = inotify.rm_watch(wd);
            }
        }
    }
}

impl Shared {
    fn watches(&self) -> MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn watch_v1(&self, id: &str, dir: &Path) -> Result<()> {
        let control = dir.join("memory.oom_control");
        let oom_control =
            File::open(&control).with_context(|| format!("opening {}", control.display()))?;
        let eventfd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).context("creating an eventfd")?;
        let registration = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
        let event_control = dir.join("cgroup.event_control");
        std::fs::write(&event_control, registration)
            .with_context(|| format!("writing {}", event_control.display()))?;
        let token = eventfd.as_raw_fd() as u64;
        self.epoll
            .add(eventfd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            .context("watching the eventfd")?;
        self.watches()
            .eventfds
            .insert(token, (id.to_string(), eventfd, oom_control, event_control));
        Ok(())
    }

    fn watch_unified(&self, id: &str, dir: &Path) -> Result<()> {
        let inotify = match self.inotify.get() {
            Some(inotify) => inotify,
            None => {
                let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                    .context("creating an inotify instance")?;
                self.epoll
                    .add(
                        inotify.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, INOTIFY_TOKEN),
                    )
                    .context("watching the inotify instance")?;
                self.inotify.get_or_init(|| inotify)
            }
        };
        let events = dir.join("memory.events");
        let wd = inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .with_context(|| format!("watching {}", events.display()))?;
        self.watches().inotify.insert(wd, id.to_string());
        Ok(())
    }

    /// The monitor's thread: waits for notifications and hands them to `on_oom`.
    fn run(&self) {
        let mut ready = [EpollEvent::empty(); 32];
        loop {
            let n = match self.epoll.wait(&mut ready, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    log::error!("waiting for OOM notifications: {err}");
                    return;
                }
            };
            for event in &ready[..n] {
                match event.data() {
                    INOTIFY_TOKEN => self.unified_events(),
                    token => self.v1_event(token),
                }
            }
        }
    }

    fn v1_event(&self, token: u64) {
        let id = {
            let mut watches = self.watches();
            let Some((id, eventfd, _, event_control)) = watches.eventfds.get(&token) else {
                return;
            };
            let _ = eventfd.read();
            let id = id.clone();
            // The kernel also signals the eventfd when the cgroup is removed.
            if !event_control.exists() {
                if let Some((_, eventfd, ..)) = watches.eventfds.remove(&token) {
                    let _ = self.epoll.delete(eventfd.as_fd());
                }
                return;
            }
            id
        };
        (self.on_oom)(&id);
    }

    fn unified_events(&self) {
        let Some(inotify) = self.inotify.get() else {
            return;
        };
        let events = inotify.read_events().unwrap_or_default();
        let mut ids = Vec::new();
        {
            let mut watches = self.watches();
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                    watches.inotify.remove(&event.wd);
                } else if let Some(id) = watches.inotify.get(&event.wd) {
                    if !ids.contains(id) {
                        ids.push(id.clone());
                    }
                }
            }
        }
        for id in ids {
            (self.on_oom)(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_v1_table_names_the_memory_hierarchy() {
        let table = "12:pids:/kwasi/a\n4:memory:/kwasi/a\n1:name=systemd:/kwasi/a\n0::/\n";
        let cg = MemoryCgroup::from_table(table, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(cg.dir, PathBuf::from("/sys/fs/cgroup/memory/kwasi/a"));
        assert!(!cg.unified);
    }

    #[test]
    fn a_v2_table_names_the_unified_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let cg = MemoryCgroup::from_table("0::/kubepods/pod1/c1\n", root.path()).unwrap();
        assert_eq!(cg.dir, root.path().join("kubepods/pod1/c1"));
        assert!(cg.unified);
    }

    #[test]
    fn the_oom_kill_counter_is_read_from_either_file() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!((oom_kill_count(v1), oom_kill_count(v2)), (3, 2));
        assert_eq!(oom_kill_count("under_oom 0\n"), 0);
    }

    #[test]
    fn a_change_of_memory_events_wakes_the_handler_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.events"), "oom_kill 0\n").unwrap();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let monitor = OomMonitor::new(move |id| {
            let _ = tx.lock().unwrap().send(id.to_string());
        })
        .unwrap();
        let cgroup = MemoryCgroup {
            dir: dir.path().to_path_buf(),
            unified: true,
        };
        monitor.watch("c1", &cgroup).unwrap();
        std::fs::write(dir.path().join("memory.events"), "oom_kill 1\n").unwrap();
        let woken = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!((woken.as_str(), cgroup.oom_kills()), ("c1", 1));
        monitor.unwatch("c1");
        std::fs::write(dir.path().join("memory.events"), "oom_kill 2\n").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
}
