//! The task service driven through its seams with fakes: one behaviour per test.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::{bail, Result};
use containerd_shim::ExitSignal;
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::container::{Container, ExecConfig, ProcessRef, Runtime, TaskConfig};
use super::events::{Publisher, TaskEvent};
use super::process::Status;
use super::service::{Service, TaskError};
use crate::sandbox::oom::MemoryCgroup;
use crate::sandbox::{Stats, StdioPaths};

type TestService = Service<FakeRuntime, FakePublisher>;

/// A door a call waits at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// What the fakes share with the test.
#[derive(Default)]
struct World {
    next_pid: AtomicI32,
    /// Every call a container got: `(task, call)`.
    calls: Mutex<Vec<(String, String)>>,
    /// OOM kills per task.
    oom_kills: Mutex<HashMap<String, u64>>,
    /// Tasks whose delete waits at the gate.
    slow_delete: Mutex<HashMap<String, Arc<Gate>>>,
    /// A gate the next exec process's start waits at.
    slow_exec: Mutex<Option<Arc<Gate>>>,
    /// The service, for an exit that a fake reports while a call is under way.
    service: OnceLock<Weak<TestService>>,
    /// An exit code the next process dies with while it is being created or started.
    dies_at_birth: Mutex<Option<i32>>,
}

impl World {
    fn pid(&self) -> i32 {
        100 + self.next_pid.fetch_add(1, Ordering::SeqCst)
    }

    fn record(&self, task: &str, call: impl Into<String>) {
        self.calls
            .lock()
            .unwrap()
            .push((task.to_string(), call.into()));
    }

    fn calls_of(&self, task: &str) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(t, _)| t == task)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Reports the exit of `pid` now, if the test asked for a process that dies at once.
    fn maybe_die(&self, pid: i32) {
        if let Some(code) = self.dies_at_birth.lock().unwrap().take() {
            let service = self.service.get().and_then(Weak::upgrade).unwrap();
            assert!(!service.on_exit(pid, code), "not registered yet");
        }
    }
}

struct FakeRuntime(Arc<World>);

impl Runtime for FakeRuntime {
    type Container = FakeContainer;

    fn create(&self, config: &TaskConfig) -> Result<FakeContainer> {
        if config.id.starts_with("bad") {
            bail!("entrypoint /app.wasm: no such file in the container");
        }
        let pid = self.0.pid();
        self.0.maybe_die(pid);
        Ok(FakeContainer {
            id: config.id.clone(),
            pid,
            exec_pids: Mutex::default(),
            started_execs: Mutex::default(),
            world: Arc::clone(&self.0),
        })
    }
}

struct FakeContainer {
    id: String,
    pid: i32,
    exec_pids: Mutex<Vec<i32>>,
    /// The exec processes whose start has returned: only they have a stdin to close.
    started_execs: Mutex<Vec<String>>,
    world: Arc<World>,
}

impl Container for FakeContainer {
    fn pid(&self) -> i32 {
        self.pid
    }
    fn start(&self) -> Result<()> {
        self.world.record(&self.id, "start");
        Ok(())
    }
    fn exec(&self, config: &ExecConfig) -> Result<i32> {
        let pid = self.world.pid();
        self.exec_pids.lock().unwrap().push(pid);
        self.world
            .record(&self.id, format!("exec {}", config.exec_id));
        let gate = self.world.slow_exec.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.wait();
        }
        self.world.maybe_die(pid);
        self.started_execs
            .lock()
            .unwrap()
            .push(config.exec_id.clone());
        Ok(pid)
    }
    fn kill(&self, pid: i32, signal: Signal, all: bool) -> Result<()> {
        let target = if all {
            "all".to_string()
        } else {
            pid.to_string()
        };
        self.world
            .record(&self.id, format!("kill {signal} {target}"));
        Ok(())
    }
    fn pause(&self) -> Result<()> {
        self.world.record(&self.id, "pause");
        Ok(())
    }
    fn resume(&self) -> Result<()> {
        self.world.record(&self.id, "resume");
        Ok(())
    }
    fn pids(&self) -> Result<Vec<i32>> {
        Ok([self.pid]
            .into_iter()
            .chain(self.exec_pids.lock().unwrap().iter().copied())
            .collect())
    }
    fn stats(&self) -> Result<Stats> {
        Ok(Stats::default())
    }
    fn update(&self, _: &LinuxResources) -> Result<()> {
        self.world.record(&self.id, "update");
        Ok(())
    }
    fn memory_cgroup(&self) -> Option<MemoryCgroup> {
        None
    }
    fn oom_kills(&self) -> u64 {
        *self
            .world
            .oom_kills
            .lock()
            .unwrap()
            .get(&self.id)
            .unwrap_or(&0)
    }
    fn resize_pty(&self, _: ProcessRef, width: u32, height: u32) -> Result<()> {
        self.world
            .record(&self.id, format!("resize {width}x{height}"));
        Ok(())
    }
    fn close_stdin(&self, process: ProcessRef) -> Result<()> {
        let started =
            process.is_none_or(|e| self.started_execs.lock().unwrap().iter().any(|s| s == e));
        let call = if started {
            "close stdin"
        } else {
            "close stdin (not open yet)"
        };
        self.world.record(&self.id, format!("{call} {process:?}"));
        Ok(())
    }
    fn forget(&self, exec_id: &str) {
        self.world.record(&self.id, format!("forget {exec_id}"));
    }
    fn delete(&self) -> Result<()> {
        let gate = self
            .world
            .slow_delete
            .lock()
            .unwrap()
            .get(&self.id)
            .cloned();
        if let Some(gate) = gate {
            gate.wait();
        }
        self.world.record(&self.id, "delete");
        Ok(())
    }
}

#[derive(Clone, Default)]
struct FakePublisher(Arc<Mutex<Vec<TaskEvent>>>);

impl Publisher for FakePublisher {
    fn publish(&self, event: TaskEvent) {
        self.0.lock().unwrap().push(event);
    }
    fn flush(&self) {}
}

/// A service over fakes, the world they share, and the events it published.
struct Harness {
    service: Arc<TestService>,
    world: Arc<World>,
    events: FakePublisher,
}

impl Harness {
    fn new() -> Harness {
        let world = Arc::new(World::default());
        let events = FakePublisher::default();
        let service = Arc::new(Service::new(
            FakeRuntime(Arc::clone(&world)),
            events.clone(),
            Arc::new(ExitSignal::default()),
        ));
        let _ = world.service.set(Arc::downgrade(&service));
        Harness {
            service,
            world,
            events,
        }
    }

    fn create(&self, id: &str) -> i32 {
        self.service
            .create(TaskConfig {
                id: id.to_string(),
                bundle: format!("/run/bundles/{id}"),
                ..Default::default()
            })
            .unwrap()
    }

    fn running(&self, id: &str) -> i32 {
        self.create(id);
        self.service.start(id, None).unwrap()
    }

    fn exec(&self, id: &str, exec_id: &str) -> i32 {
        let process = oci_spec::runtime::ProcessBuilder::default()
            .args(vec!["/tool.wasm".to_string()])
            .build()
            .unwrap();
        self.service
            .exec(id, exec_id, process, StdioPaths::default(), false)
            .unwrap();
        self.service.start(id, Some(exec_id)).unwrap()
    }

    /// The events' topics and ids, in order: `exit t1/e1 3`, `start t1`...
    fn events(&self) -> Vec<String> {
        self.events
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                TaskEvent::Created { process, .. } => format!("create {}", process.task),
                TaskEvent::Started { task, .. } => format!("start {task}"),
                TaskEvent::ExecAdded { task, exec_id } => format!("exec-added {task}/{exec_id}"),
                TaskEvent::ExecStarted { task, exec_id, .. } => {
                    format!("exec-started {task}/{exec_id}")
                }
                TaskEvent::Oom { task } => format!("oom {task}"),
                TaskEvent::Exited { task, id, exit, .. } if task == id => {
                    format!("exit {task} {}", exit.code)
                }
                TaskEvent::Exited { task, id, exit, .. } => {
                    format!("exit {task}/{id} {}", exit.code)
                }
                TaskEvent::Deleted { task, exit, .. } => format!("delete {task} {}", exit.code),
                TaskEvent::Paused { task } => format!("paused {task}"),
                TaskEvent::Resumed { task } => format!("resumed {task}"),
            })
            .collect()
    }

    fn status(&self, id: &str, exec_id: ProcessRef) -> Status {
        self.service.state(id, exec_id).unwrap().process.status()
    }
}

fn is_not_found(r: Result<impl std::fmt::Debug, TaskError>) -> bool {
    matches!(r, Err(TaskError::NotFound(_)))
}

fn is_precondition(r: Result<impl std::fmt::Debug, TaskError>) -> bool {
    matches!(r, Err(TaskError::FailedPrecondition(_)))
}

#[test]
fn a_task_is_created_started_exits_and_is_deleted_with_its_events_in_order() {
    let h = Harness::new();
    let pid = h.running("t1");
    assert!(h.service.on_exit(pid, 3));
    assert_eq!(h.service.wait("t1", None).unwrap().code, 3);
    let (deleted_pid, exit) = h.service.delete("t1", None).unwrap();
    assert_eq!((deleted_pid, exit.code), (pid, 3));
    assert_eq!(
        h.events(),
        ["create t1", "start t1", "exit t1 3", "delete t1 3"]
    );
    assert_eq!(h.world.calls_of("t1"), ["start", "delete"]);
    assert!(is_not_found(h.service.state("t1", None)));
}

#[test]
fn a_failed_create_leaves_no_task() {
    let h = Harness::new();
    let err = h.service.create(TaskConfig {
        id: "bad1".into(),
        ..Default::default()
    });
    assert_eq!(
        err.unwrap_err(),
        TaskError::FailedPrecondition("entrypoint /app.wasm: no such file in the container".into())
    );
    assert!(is_not_found(h.service.state("bad1", None)));
    assert!(h.events().is_empty());
}

#[test]
fn a_task_id_in_use_cannot_be_created_again() {
    let h = Harness::new();
    h.create("t1");
    let again = h.service.create(TaskConfig {
        id: "t1".into(),
        ..Default::default()
    });
    assert!(matches!(again, Err(TaskError::AlreadyExists(_))));
}

#[test]
fn a_second_start_fails_with_failed_precondition() {
    let h = Harness::new();
    h.running("t1");
    assert!(is_precondition(h.service.start("t1", None)));
}

#[test]
fn a_running_task_cannot_be_deleted() {
    let h = Harness::new();
    h.running("t1");
    assert!(is_precondition(h.service.delete("t1", None)));
    assert_eq!(h.status("t1", None), Status::Running);
}

#[test]
fn a_created_task_that_is_deleted_reports_137() {
    let h = Harness::new();
    h.create("t1");
    let (_, exit) = h.service.delete("t1", None).unwrap();
    assert_eq!(exit.code, 137);
    assert_eq!(h.events(), ["create t1", "delete t1 137"]);
}

#[test]
fn killing_a_stopped_task_is_not_found_but_kill_all_still_signals_its_cgroup() {
    let h = Harness::new();
    let pid = h.running("t1");
    h.service.on_exit(pid, 0);
    assert!(is_not_found(h.service.kill(
        "t1",
        None,
        Signal::SIGTERM,
        false
    )));
    h.service.kill("t1", None, Signal::SIGKILL, true).unwrap();
    assert_eq!(h.world.calls_of("t1"), ["start", "kill SIGKILL all"]);
}

#[test]
fn kill_signals_the_init_process_and_kill_all_every_process() {
    let h = Harness::new();
    let pid = h.running("t1");
    h.service.kill("t1", None, Signal::SIGTERM, false).unwrap();
    h.service.kill("t1", None, Signal::SIGKILL, true).unwrap();
    assert_eq!(
        h.world.calls_of("t1"),
        [
            "start".to_string(),
            format!("kill SIGTERM {pid}"),
            "kill SIGKILL all".to_string()
        ]
    );
}

#[test]
fn pause_and_resume_need_running_and_paused_tasks() {
    let h = Harness::new();
    h.create("t1");
    assert!(is_precondition(h.service.pause("t1")));
    h.service.start("t1", None).unwrap();
    assert!(is_precondition(h.service.resume("t1")));
    h.service.pause("t1").unwrap();
    assert_eq!(h.status("t1", None), Status::Paused);
    assert!(is_precondition(h.service.pause("t1")));
    h.service.resume("t1").unwrap();
    assert_eq!(h.status("t1", None), Status::Running);
    assert_eq!(
        h.events(),
        ["create t1", "start t1", "paused t1", "resumed t1"]
    );
}

#[test]
fn every_call_on_an_unknown_task_is_not_found() {
    let h = Harness::new();
    assert!(is_not_found(h.service.start("x", None)));
    assert!(is_not_found(h.service.state("x", None)));
    assert!(is_not_found(h.service.kill(
        "x",
        None,
        Signal::SIGTERM,
        false
    )));
    assert!(is_not_found(h.service.delete("x", None)));
    assert!(is_not_found(h.service.pause("x")));
    assert!(is_not_found(h.service.wait("x", None)));
    assert!(is_not_found(
        h.service.update("x", &LinuxResources::default())
    ));
    assert_eq!(h.service.task_pid("x"), 0);
}

#[test]
fn a_stopped_task_cannot_be_paused_updated_or_exec_into() {
    let h = Harness::new();
    let pid = h.running("t1");
    h.service.on_exit(pid, 0);
    assert!(is_precondition(h.service.pause("t1")));
    assert!(is_precondition(
        h.service.update("t1", &LinuxResources::default())
    ));
    let process = oci_spec::runtime::ProcessBuilder::default()
        .build()
        .unwrap();
    assert!(is_precondition(h.service.exec(
        "t1",
        "e1",
        process,
        StdioPaths::default(),
        false
    )));
}

#[test]
fn an_update_of_a_running_task_reaches_its_container() {
    let h = Harness::new();
    h.running("t1");
    h.service.update("t1", &LinuxResources::default()).unwrap();
    assert_eq!(h.world.calls_of("t1"), ["start", "update"]);
}

#[test]
fn an_exit_during_create_is_claimed_once_the_task_is_registered() {
    let h = Harness::new();
    *h.world.dies_at_birth.lock().unwrap() = Some(137);
    h.create("t1");
    assert_eq!(h.status("t1", None), Status::Stopped);
    assert_eq!(h.service.wait("t1", None).unwrap().code, 137);
    assert_eq!(h.events(), ["create t1", "exit t1 137"]);
}

#[test]
fn an_exec_process_that_exits_during_its_start_is_claimed_too() {
    let h = Harness::new();
    h.running("t1");
    *h.world.dies_at_birth.lock().unwrap() = Some(2);
    h.exec("t1", "e1");
    assert_eq!(h.service.wait("t1", Some("e1")).unwrap().code, 2);
    assert_eq!(
        h.events()[2..],
        ["exec-added t1/e1", "exec-started t1/e1", "exit t1/e1 2"]
    );
}

#[test]
fn an_exec_process_runs_reports_its_exit_and_is_deleted() {
    let h = Harness::new();
    h.running("t1");
    let pid = h.exec("t1", "e1");
    assert_eq!(h.status("t1", Some("e1")), Status::Running);
    assert!(h.service.on_exit(pid, 5));
    assert_eq!(h.service.wait("t1", Some("e1")).unwrap().code, 5);
    assert_eq!(h.service.delete("t1", Some("e1")).unwrap().1.code, 5);
    assert!(is_not_found(h.service.state("t1", Some("e1"))));
    assert_eq!(h.status("t1", None), Status::Running);
    assert_eq!(h.world.calls_of("t1"), ["start", "exec e1", "forget e1"]);
}

#[test]
fn pids_name_each_exec_process_by_its_exec_id() {
    let h = Harness::new();
    let init = h.running("t1");
    let exec = h.exec("t1", "e1");
    assert_eq!(
        h.service.pids_of("t1").unwrap(),
        [(init, None), (exec, Some("e1".to_string()))]
    );
}

#[test]
fn an_exec_id_in_use_cannot_be_added_again() {
    let h = Harness::new();
    h.running("t1");
    h.exec("t1", "e1");
    let process = oci_spec::runtime::ProcessBuilder::default()
        .build()
        .unwrap();
    let again = h
        .service
        .exec("t1", "e1", process, StdioPaths::default(), false);
    assert!(matches!(again, Err(TaskError::AlreadyExists(_))));
}

#[test]
fn a_running_exec_process_cannot_be_deleted_nor_its_task() {
    let h = Harness::new();
    let init = h.running("t1");
    h.exec("t1", "e1");
    assert!(is_precondition(h.service.delete("t1", Some("e1"))));
    h.service
        .kill("t1", Some("e1"), Signal::SIGTERM, false)
        .unwrap();
    assert!(is_precondition(h.service.delete("t1", None)));
    let _ = init;
}

#[test]
fn an_exec_process_that_ends_before_its_init_is_reported_first() {
    let h = Harness::new();
    let init = h.running("t1");
    let exec = h.exec("t1", "e1");
    h.service.on_exit(exec, 0);
    h.service.on_exit(init, 143);
    assert_eq!(
        h.events()[2..],
        [
            "exec-added t1/e1",
            "exec-started t1/e1",
            "exit t1/e1 0",
            "exit t1 143"
        ]
    );
}

#[test]
fn an_init_exit_with_exec_processes_running_kills_them_and_is_published_after_theirs() {
    let h = Harness::new();
    let init = h.running("t1");
    let exec = h.exec("t1", "e1");
    h.service.on_exit(init, 0);
    // Its exit is held: containerd must see the exec process's first.
    assert!(!h.events().contains(&"exit t1 0".to_string()));
    assert!(h
        .world
        .calls_of("t1")
        .contains(&"kill SIGKILL all".to_string()));
    h.service.on_exit(exec, 137);
    assert_eq!(h.events()[4..], ["exit t1/e1 137", "exit t1 0"]);
    assert_eq!(h.service.wait("t1", None).unwrap().code, 0);
}

#[test]
fn an_oom_kill_is_published_before_the_exit_it_caused() {
    let h = Harness::new();
    let pid = h.running("t1");
    h.world.oom_kills.lock().unwrap().insert("t1".into(), 1);
    h.service.on_exit(pid, 137);
    assert_eq!(h.events()[2..], ["oom t1", "exit t1 137"]);
}

#[test]
fn an_oom_notification_publishes_each_new_kill_once() {
    let h = Harness::new();
    h.running("t1");
    h.service.on_oom("t1");
    h.world.oom_kills.lock().unwrap().insert("t1".into(), 1);
    h.service.on_oom("t1");
    h.service.on_oom("t1");
    assert_eq!(h.events()[2..], ["oom t1"]);
}

#[test]
fn the_exit_of_a_pid_that_is_not_ours_is_not_claimed() {
    let h = Harness::new();
    h.running("t1");
    assert!(!h.service.on_exit(4242, 1));
    assert_eq!(h.status("t1", None), Status::Running);
}

#[test]
fn a_slow_delete_of_one_container_does_not_hold_up_another_of_the_same_shim() {
    let h = Harness::new();
    let slow = h.running("slow");
    let fast = h.running("fast");
    h.service.on_exit(slow, 0);
    let gate = Arc::new(Gate::default());
    h.world
        .slow_delete
        .lock()
        .unwrap()
        .insert("slow".into(), Arc::clone(&gate));
    let service = Arc::clone(&h.service);
    let deleting = std::thread::spawn(move || service.delete("slow", None));
    // Wait until the delete is in the container (holding its task's lock).
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.status("fast", None), Status::Running);
    h.service
        .kill("fast", None, Signal::SIGTERM, false)
        .unwrap();
    assert!(h.service.on_exit(fast, 143));
    assert_eq!(h.service.wait("fast", None).unwrap().code, 143);
    assert!(!deleting.is_finished(), "the slow delete was not slow");
    gate.open();
    deleting.join().unwrap().unwrap();
}

#[test]
fn a_terminal_of_a_process_without_one_cannot_be_resized() {
    let h = Harness::new();
    h.running("t1");
    assert!(is_precondition(h.service.resize_pty("t1", None, 80, 24)));
}

#[test]
fn close_io_during_an_exec_start_reaches_the_process_once_started() {
    let h = Harness::new();
    h.running("t1");
    let gate = Arc::new(Gate::default());
    *h.world.slow_exec.lock().unwrap() = Some(Arc::clone(&gate));
    let process = oci_spec::runtime::ProcessBuilder::default()
        .build()
        .unwrap();
    h.service
        .exec("t1", "e1", process, StdioPaths::default(), false)
        .unwrap();
    let service = Arc::clone(&h.service);
    let starting = std::thread::spawn(move || service.start("t1", Some("e1")));
    while !h.world.calls_of("t1").contains(&"exec e1".to_string()) {
        std::thread::yield_now();
    }
    h.service.close_stdin("t1", Some("e1")).unwrap();
    gate.open();
    starting.join().unwrap().unwrap();
    let calls = h.world.calls_of("t1");
    assert_eq!(
        calls.last().unwrap(),
        "close stdin Some(\"e1\")",
        "{calls:?}"
    );
}

#[test]
fn close_io_reaches_the_process() {
    let h = Harness::new();
    h.running("t1");
    h.service.close_stdin("t1", None).unwrap();
    assert_eq!(h.world.calls_of("t1"), ["start", "close stdin None"]);
}
