//! What each call of the task API does, over the two seams ([`Runtime`] and [`Publisher`]):
//! tasks, their processes and their state machines, exits and the events containerd gets.
//!
//! Locking: the task map and the pid index are held only to look something up or to change
//! them, never across a call into a container. A call holds the lock of its own task, so a
//! slow call on one container (a delete that unmounts, say) holds up nothing of another
//! task's, even when one shim serves a whole pod.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim::ExitSignal;
use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use super::container::{Container, ExecConfig, ProcessRef, Runtime, TaskConfig};
use super::events::{Publisher, TaskEvent};
use super::exits::ExitMonitor;
use super::process::{Change, Exit, NotAllowed, Process, Status};
use crate::sandbox::oom::OomMonitor;

/// Why a call failed, with the code containerd expects for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TaskError {
    /// No such task or process.
    #[error("{0}")]
    NotFound(String),
    /// A task or exec process of that id exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Not in that state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A malformed request.
    #[error("{0}")]
    InvalidArgument(String),
    /// What kwasi does not do.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else (the sandbox failed).
    #[error("{0}")]
    Unknown(String),
}

impl From<NotAllowed> for TaskError {
    fn from(err: NotAllowed) -> TaskError {
        TaskError::FailedPrecondition(err.to_string())
    }
}

/// What `state` tells of a process.
#[derive(Debug, Clone)]
pub(crate) struct ProcessView {
    /// The process (identity, stdio, status, exit).
    pub(crate) process: Process,
    /// Its task's bundle.
    pub(crate) bundle: String,
}

/// The task service.
pub(crate) struct Service<R: Runtime, P: Publisher> {
    runtime: R,
    publisher: P,
    tasks: Mutex<HashMap<String, Arc<Task<R::Container>>>>,
    /// Which process each running pid is: task id and exec id.
    pids: Mutex<HashMap<i32, (String, Option<String>)>>,
    exits: ExitMonitor,
    oom: Option<OomMonitor>,
    shutdown: Arc<ExitSignal>,
}

struct Task<C> {
    id: String,
    bundle: String,
    container: C,
    state: Mutex<TaskState>,
    /// Notified at every exit, for `wait`.
    changed: Condvar,
}

struct TaskState {
    init: Process,
    execs: HashMap<String, Process>,
    /// The OOM kills of the container reported so far.
    oom_kills: u64,
    /// The init process's exit, recorded but not published yet: exec processes still ran
    /// when it came, and containerd expects their exits first.
    held_exit: bool,
    /// What each exec process that is not started yet runs.
    pending: HashMap<String, oci_spec::runtime::Process>,
}

impl TaskState {
    fn process(&self, exec_id: ProcessRef) -> Result<&Process, TaskError> {
        match exec_id {
            None => Ok(&self.init),
            Some(id) => self
                .execs
                .get(id)
                .ok_or_else(|| no_exec(&self.init.task, id)),
        }
    }

    fn process_mut(&mut self, exec_id: ProcessRef) -> Result<&mut Process, TaskError> {
        match exec_id {
            None => Ok(&mut self.init),
            Some(id) => {
                let task = self.init.task.clone();
                self.execs.get_mut(id).ok_or_else(|| no_exec(&task, id))
            }
        }
    }

    fn running_execs(&self) -> usize {
        self.execs.values().filter(|p| p.is_running()).count()
    }
}

fn no_exec(task: &str, exec_id: &str) -> TaskError {
    TaskError::NotFound(format!("exec process {exec_id} of task {task} not found"))
}

fn sandbox_error(err: anyhow::Error) -> TaskError {
    TaskError::Unknown(format!("{err:#}"))
}

impl<C> Task<C> {
    fn lock(&self) -> MutexGuard<'_, TaskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: Runtime, P: Publisher> Service<R, P> {
    /// A service creating containers with `runtime` and publishing through `publisher`;
    /// `shutdown` is signalled when containerd asks the shim to exit with no task left.
    pub(crate) fn new(runtime: R, publisher: P, shutdown: Arc<ExitSignal>) -> Self {
        Service {
            runtime,
            publisher,
            tasks: Mutex::new(HashMap::new()),
            pids: Mutex::new(HashMap::new()),
            exits: ExitMonitor::default(),
            oom: None,
            shutdown,
        }
    }

    /// Watches the tasks' cgroups for OOM kills with `monitor`, which calls
    /// [`Service::on_oom`].
    pub(crate) fn set_oom_monitor(&mut self, monitor: OomMonitor) {
        self.oom = Some(monitor);
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Task<R::Container>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pids(&self) -> MutexGuard<'_, HashMap<i32, (String, Option<String>)>> {
        self.pids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn task(&self, id: &str) -> Result<Arc<Task<R::Container>>, TaskError> {
        self.tasks()
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::NotFound(format!("task {id} not found")))
    }

    /// Applies `change` to process `exec_id` of `task` and publishes what it means to
    /// containerd: the one place where statuses change and events go out.
    fn transition(
        &self,
        task: &Task<R::Container>,
        state: &mut TaskState,
        exec_id: ProcessRef,
        change: Change,
    ) -> Result<(), TaskError> {
        if !state.process_mut(exec_id)?.apply(change)? {
            return Ok(());
        }
        let process = state.process(exec_id)?.clone();
        let id = task.id.clone();
        match (exec_id, change) {
            (None, Change::Started { pid }) => {
                self.publisher.publish(TaskEvent::Started { task: id, pid })
            }
            (Some(exec), Change::Started { pid }) => {
                self.publisher.publish(TaskEvent::ExecStarted {
                    task: id,
                    exec_id: exec.to_string(),
                    pid,
                })
            }
            (None, Change::Paused) => self.publisher.publish(TaskEvent::Paused { task: id }),
            (None, Change::Resumed) => self.publisher.publish(TaskEvent::Resumed { task: id }),
            (None, Change::Exited { .. }) => {
                self.unregister(process.pid);
                self.report_ooms(task, state);
                if state.running_execs() > 0 {
                    // They die with their init (in its PID namespace the kernel ends them);
                    // make sure, and publish the init's exit after theirs.
                    state.held_exit = true;
                    if let Err(err) = task.container.kill(process.pid, Signal::SIGKILL, true) {
                        log::warn!("{}: killing its exec processes: {err:#}", task.id);
                    }
                } else {
                    self.publish_exit(&process);
                }
                task.changed.notify_all();
            }
            (Some(_), Change::Exited { .. }) => {
                self.unregister(process.pid);
                self.publish_exit(&process);
                if state.held_exit && state.running_execs() == 0 {
                    state.held_exit = false;
                    self.publish_exit(&state.init);
                }
                task.changed.notify_all();
            }
            (None, Change::Deleted) => {
                if let Some(exit) = process.exit() {
                    self.publisher.publish(TaskEvent::Deleted {
                        task: id,
                        pid: process.pid,
                        exit: exit.clone(),
                    });
                }
                task.changed.notify_all();
            }
            (Some(_), Change::Deleted) | (Some(_), Change::Paused | Change::Resumed) => {}
        }
        Ok(())
    }

    fn publish_exit(&self, process: &Process) {
        if let Some(exit) = process.exit() {
            self.publisher.publish(TaskEvent::Exited {
                task: process.task.clone(),
                id: process
                    .exec_id
                    .clone()
                    .unwrap_or_else(|| process.task.clone()),
                pid: process.pid,
                exit: exit.clone(),
            });
        }
    }

    fn unregister(&self, pid: i32) {
        if pid > 0 {
            self.pids().remove(&pid);
        }
    }

    /// Publishes TaskOOM when the container counts more OOM kills than were reported.
    fn report_ooms(&self, task: &Task<R::Container>, state: &mut TaskState) {
        let kills = task.container.oom_kills();
        if kills > state.oom_kills {
            state.oom_kills = kills;
            self.publisher.publish(TaskEvent::Oom {
                task: task.id.clone(),
            });
        }
    }

    /// Called for every child process that exits. Returns whether it was one of ours.
    pub(crate) fn on_exit(&self, pid: i32, code: i32) -> bool {
        let owner = {
            let pids = self.pids();
            let owner = pids.get(&pid).cloned();
            if owner.is_none() {
                // Kept while the index is still locked: a `create` or `start` that registers
                // this pid now claims the exit once it has registered it, never before.
                self.exits.unclaimed(pid, code);
            }
            owner
        };
        let Some((id, exec_id)) = owner else {
            return false;
        };
        let Ok(task) = self.task(&id) else {
            return false;
        };
        let mut state = task.lock();
        // The pid may have been handed to another process since: only a running process
        // that still has it can exit.
        let ours = state
            .process(exec_id.as_deref())
            .is_ok_and(|p| p.pid == pid && p.exit().is_none());
        if ours {
            if let Err(err) = self.transition(
                &task,
                &mut state,
                exec_id.as_deref(),
                Change::Exited { code },
            ) {
                log::warn!("recording the exit of {pid}: {err}");
            }
        }
        ours
    }

    /// Called when the cgroup of task `id` may have had an OOM kill.
    pub(crate) fn on_oom(&self, id: &str) {
        if let Ok(task) = self.task(id) {
            let mut state = task.lock();
            self.report_ooms(&task, &mut state);
        }
    }

    /// Creates a task: its container, with the init process waiting for `start`.
    pub(crate) fn create(&self, config: TaskConfig) -> Result<i32, TaskError> {
        if self.tasks().contains_key(&config.id) {
            return Err(TaskError::AlreadyExists(format!(
                "task {} already exists",
                config.id
            )));
        }
        let since = self.exits.mark();
        let container = self
            .runtime
            .create(&config)
            .map_err(|e| TaskError::FailedPrecondition(format!("{e:#}")))?;
        let pid = container.pid();
        if let (Some(oom), Some(cgroup)) = (&self.oom, container.memory_cgroup()) {
            if let Err(err) = oom.watch(&config.id, &cgroup) {
                log::warn!("create {}: no OOM events: {err:#}", config.id);
            }
        }
        let init = Process::new(&config.id, None, pid, config.stdio, config.terminal);
        // A new cgroup counts from 0; one that is reused starts where it is.
        let oom_kills = container.oom_kills();
        let task = Arc::new(Task {
            id: config.id.clone(),
            bundle: config.bundle.clone(),
            container,
            state: Mutex::new(TaskState {
                init: init.clone(),
                execs: HashMap::new(),
                oom_kills,
                held_exit: false,
                pending: HashMap::new(),
            }),
            changed: Condvar::new(),
        });
        let mut state = task.lock();
        self.tasks().insert(config.id.clone(), Arc::clone(&task));
        self.pids().insert(pid, (config.id.clone(), None));
        self.publisher.publish(TaskEvent::Created {
            process: init,
            bundle: config.bundle,
        });
        if let Some(code) = self.exits.claim(pid, since) {
            self.transition(&task, &mut state, None, Change::Exited { code })?;
        }
        Ok(pid)
    }

    /// Starts the init process, or exec process `exec_id`; returns its pid.
    pub(crate) fn start(&self, id: &str, exec_id: ProcessRef) -> Result<i32, TaskError> {
        let task = self.task(id)?;
        let mut state = task.lock();
        state.process(exec_id)?.check(Change::Started { pid: 0 })?;
        let Some(exec) = exec_id else {
            task.container.start().map_err(sandbox_error)?;
            let pid = state.init.pid;
            self.transition(&task, &mut state, None, Change::Started { pid })?;
            return Ok(pid);
        };
        match state.init.status() {
            Status::Running => {}
            status => {
                return Err(TaskError::FailedPrecondition(format!(
                    "task {id} is {}: cannot start exec process {exec} in it",
                    Status::name(status)
                )))
            }
        }
        let process = state.process(exec_id)?;
        let (stdio, terminal) = (process.stdio.clone(), process.terminal);
        let config = ExecConfig {
            exec_id: exec.to_string(),
            // Taken: a second start finds nothing to start while this one runs.
            process: state.pending.remove(exec).ok_or_else(|| {
                TaskError::FailedPrecondition(format!(
                    "exec process {exec} of task {id} is being started"
                ))
            })?,
            stdio,
            terminal,
        };
        // Starting a process can take a while (it joins the sandbox, an engine compiles):
        // the task's other calls go on meanwhile. An exit that comes before the pid is
        // registered is kept for `claim`.
        drop(state);
        let since = self.exits.mark();
        let started = task.container.exec(&config);
        let mut state = task.lock();
        let pid = started.map_err(sandbox_error)?;
        self.pids()
            .insert(pid, (id.to_string(), Some(exec.to_string())));
        if state.process(exec_id)?.stdin_closed {
            // CloseIO came while the process was being started, before its stdin was open.
            task.container.close_stdin(exec_id).map_err(sandbox_error)?;
        }
        self.transition(&task, &mut state, exec_id, Change::Started { pid })?;
        if let Some(code) = self.exits.claim(pid, since) {
            self.transition(&task, &mut state, exec_id, Change::Exited { code })?;
        }
        Ok(pid)
    }

    /// Adds exec process `exec_id` to task `id`, to run `process` once started.
    pub(crate) fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: oci_spec::runtime::Process,
        stdio: crate::sandbox::StdioPaths,
        terminal: bool,
    ) -> Result<(), TaskError> {
        if exec_id.is_empty() {
            return Err(TaskError::InvalidArgument(
                "an exec process needs an id".into(),
            ));
        }
        let task = self.task(id)?;
        let mut state = task.lock();
        if state.execs.contains_key(exec_id) {
            return Err(TaskError::AlreadyExists(format!(
                "exec process {exec_id} of task {id} already exists"
            )));
        }
        if !state.init.is_running() {
            return Err(TaskError::FailedPrecondition(format!(
                "task {id} is {}: cannot exec in it",
                Status::name(state.init.status())
            )));
        }
        state.execs.insert(
            exec_id.to_string(),
            Process::new(id, Some(exec_id), 0, stdio, terminal),
        );
        state.pending.insert(exec_id.to_string(), process);
        self.publisher.publish(TaskEvent::ExecAdded {
            task: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    /// A process's state.
    pub(crate) fn state(&self, id: &str, exec_id: ProcessRef) -> Result<ProcessView, TaskError> {
        let task = self.task(id)?;
        let state = task.lock();
        Ok(ProcessView {
            process: state.process(exec_id)?.clone(),
            bundle: task.bundle.clone(),
        })
    }

    /// Blocks until a process has exited, and returns how.
    pub(crate) fn wait(&self, id: &str, exec_id: ProcessRef) -> Result<Exit, TaskError> {
        let task = self.task(id)?;
        let mut state = task.lock();
        loop {
            let process = state.process(exec_id)?;
            // The init's exit counts once published (after its exec processes').
            let held = exec_id.is_none() && state.held_exit;
            if let (Some(exit), false) = (process.exit(), held) {
                return Ok(exit.clone());
            }
            state = task
                .changed
                .wait_timeout(state, Duration::from_secs(60))
                .map(|(guard, _)| guard)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Sends `signal` to a process, or to every process of the task when `all`.
    pub(crate) fn kill(
        &self,
        id: &str,
        exec_id: ProcessRef,
        signal: Signal,
        all: bool,
    ) -> Result<(), TaskError> {
        let task = self.task(id)?;
        let state = task.lock();
        let process = state.process(exec_id)?;
        if all && exec_id.is_none() {
            if state.init.status() == Status::Deleted {
                return Err(TaskError::NotFound(format!("task {id} was deleted")));
            }
            return task
                .container
                .kill(state.init.pid, signal, true)
                .map_err(sandbox_error);
        }
        if !process.is_running() && process.status() != Status::Created {
            return Err(TaskError::NotFound(format!(
                "{}: process already finished",
                process.describe()
            )));
        }
        if process.pid <= 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "{} has not started",
                process.describe()
            )));
        }
        task.container
            .kill(process.pid, signal, false)
            .map_err(sandbox_error)
    }

    /// Deletes an exec process, or the task (its container) once it has stopped; returns
    /// the process's pid and exit.
    pub(crate) fn delete(&self, id: &str, exec_id: ProcessRef) -> Result<(i32, Exit), TaskError> {
        let task = self.task(id)?;
        let mut state = task.lock();
        if let Some(exec) = exec_id {
            self.transition(&task, &mut state, exec_id, Change::Deleted)?;
            let process = state.execs.remove(exec).ok_or_else(|| no_exec(id, exec))?;
            state.pending.remove(exec);
            task.container.forget(exec);
            return Ok((process.pid, process.exit().cloned().unwrap_or_else(no_exit)));
        }
        if state.init.is_running() {
            return Err(TaskError::FailedPrecondition(format!(
                "task {id} is {}: kill it first",
                Status::name(state.init.status())
            )));
        }
        if state.running_execs() > 0 {
            return Err(TaskError::FailedPrecondition(format!(
                "task {id} still has exec processes running"
            )));
        }
        if let Some(oom) = &self.oom {
            oom.unwatch(id);
        }
        if let Err(err) = task.container.delete() {
            log::warn!("delete {id}: {err:#}");
        }
        self.transition(&task, &mut state, None, Change::Deleted)?;
        self.unregister(state.init.pid);
        self.tasks().remove(id);
        let exit = state.init.exit().cloned().unwrap_or_else(no_exit);
        Ok((state.init.pid, exit))
    }

    /// Freezes the task.
    pub(crate) fn pause(&self, id: &str) -> Result<(), TaskError> {
        self.freeze(id, Change::Paused, Status::Running, |c| c.pause())
    }

    /// Thaws the task.
    pub(crate) fn resume(&self, id: &str) -> Result<(), TaskError> {
        self.freeze(id, Change::Resumed, Status::Paused, |c| c.resume())
    }

    fn freeze(
        &self,
        id: &str,
        change: Change,
        from: Status,
        apply: fn(&R::Container) -> anyhow::Result<()>,
    ) -> Result<(), TaskError> {
        let task = self.task(id)?;
        let mut state = task.lock();
        if state.init.status() != from {
            return Err(TaskError::FailedPrecondition(format!(
                "task {id} is {}, not {}",
                Status::name(state.init.status()),
                Status::name(from)
            )));
        }
        apply(&task.container).map_err(sandbox_error)?;
        self.transition(&task, &mut state, None, change)
    }

    /// The pids of every process of the task.
    pub(crate) fn pids_of(&self, id: &str) -> Result<Vec<(i32, Option<String>)>, TaskError> {
        let task = self.task(id)?;
        let _state = task.lock();
        let pids = task.container.pids().map_err(sandbox_error)?;
        let index = self.pids();
        Ok(pids
            .into_iter()
            .map(|pid| {
                let exec_id = index.get(&pid).and_then(|(_, exec_id)| exec_id.clone());
                (pid, exec_id)
            })
            .collect())
    }

    /// The task's cgroup figures, and the OOM kills its cgroup counts.
    pub(crate) fn stats(&self, id: &str) -> Result<(crate::sandbox::Stats, u64), TaskError> {
        let task = self.task(id)?;
        let _state = task.lock();
        let stats = task.container.stats().map_err(sandbox_error)?;
        Ok((stats, task.container.oom_kills()))
    }

    /// Applies new resource limits to the running task.
    pub(crate) fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), TaskError> {
        let task = self.task(id)?;
        let state = task.lock();
        if !state.init.is_running() && state.init.status() != Status::Created {
            return Err(TaskError::FailedPrecondition(format!(
                "task {id} is {}: cannot update it",
                Status::name(state.init.status())
            )));
        }
        task.container.update(resources).map_err(sandbox_error)
    }

    /// Resizes a process's terminal.
    pub(crate) fn resize_pty(
        &self,
        id: &str,
        exec_id: ProcessRef,
        width: u32,
        height: u32,
    ) -> Result<(), TaskError> {
        let task = self.task(id)?;
        let state = task.lock();
        let process = state.process(exec_id)?;
        if !process.terminal {
            return Err(TaskError::FailedPrecondition(format!(
                "{} has no terminal",
                process.describe()
            )));
        }
        task.container
            .resize_pty(exec_id, width, height)
            .map_err(sandbox_error)
    }

    /// Closes a process's standard input.
    pub(crate) fn close_stdin(&self, id: &str, exec_id: ProcessRef) -> Result<(), TaskError> {
        let task = self.task(id)?;
        let mut state = task.lock();
        // Recorded for a start under way, which applies it once the process's stdin is open.
        state.process_mut(exec_id)?.stdin_closed = true;
        task.container.close_stdin(exec_id).map_err(sandbox_error)
    }

    /// The init process's pid, 0 when the task is unknown.
    pub(crate) fn task_pid(&self, id: &str) -> i32 {
        self.task(id).map_or(0, |task| task.lock().init.pid)
    }

    /// Ends the shim once no task is left (containerd asks after each delete).
    pub(crate) fn shutdown(&self) {
        if self.tasks().is_empty() {
            // Events are published from a queue: let containerd have them all before we go.
            self.publisher.flush();
            self.shutdown.signal();
        }
    }
}

/// The exit of a process deleted without one (it cannot happen: a stopped or deleted
/// process has one).
fn no_exit() -> Exit {
    Exit {
        code: 0,
        at: Default::default(),
    }
}
