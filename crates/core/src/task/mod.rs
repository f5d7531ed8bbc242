//! The containerd task service (shim API v2 over ttrpc): one [`TaskService`] per shim process,
//! serving every task containerd gives that shim.
//!
//! The lifecycle of a task, call by call:
//! - `create`: read the module from the image's wasm layer if it has one, mount the rootfs,
//!   build the sandbox, compile the module in it (TaskCreate);
//! - `start`: let the container process run the guest (TaskStart);
//! - `wait`: block until it exits; `kill` signals it; the exit is seen by containerd-shim's
//!   reaper and recorded by `exits` (TaskExit, after TaskOOM when the cgroup's OOM killer
//!   ended it);
//! - `delete`: remove the sandbox and unmount the rootfs (TaskDelete);
//! - `shutdown`: once no task is left, the shim process exits.
//!
//! Also `state`, `pids`, `pause`/`resume` (cgroup freezer), `stats` (cgroup metrics) and
//! `connect`.

mod events;
mod exits;
mod process;
mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    PidsResponse, ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, Task as TaskApi};
use nix::sys::signal::Signal;

use crate::cache::CompileCache;
use crate::engine::Engine;
use crate::image::layers::wasm_layer;
use crate::sandbox::oom::OomMonitor;
use crate::sandbox::{RootfsMount, Sandbox, SandboxConfig, StdioPaths};
use events::Events;
use process::Task;

/// The shim's ttrpc task service, generic over the wasm engine it runs tasks with.
pub struct TaskService<E: Engine> {
    inner: Arc<Inner<E>>,
}

struct Inner<E: Engine> {
    engine: E,
    namespace: String,
    containerd_address: String,
    state_root: PathBuf,
    cache: Option<Arc<CompileCache>>,
    events: Events,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    exits: exits::ExitMonitor,
    /// OOM kills in the tasks' cgroups; `None` where the monitor could not be set up.
    oom: Option<OomMonitor>,
    shutdown: Arc<ExitSignal>,
}

impl<E: Engine> TaskService<E> {
    /// A service that runs tasks with `engine`, keeps sandbox state under `state_root`,
    /// reads images and publishes events through containerd at `containerd_address` in
    /// `namespace`, and signals `shutdown` when containerd asks the shim to exit with no task
    /// left.
    pub fn new(
        engine: E,
        namespace: &str,
        containerd_address: &str,
        state_root: PathBuf,
        publisher: RemotePublisher,
        shutdown: Arc<ExitSignal>,
    ) -> TaskService<E> {
        let cache = match CompileCache::open(&CompileCache::root_from_env(), engine.name()) {
            Ok(cache) => Some(Arc::new(cache)),
            Err(err) => {
                log::warn!(
                    "compile cache {} unusable, compiling at every start: {err}",
                    CompileCache::root_from_env().display()
                );
                None
            }
        };
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner<E>>| {
            let weak = weak.clone();
            let oom = OomMonitor::new(move |id| {
                if let Some(inner) = weak.upgrade() {
                    inner.on_oom(id);
                }
            })
            .inspect_err(|e| log::warn!("no OOM events: {e:#}"))
            .ok();
            Inner {
                engine,
                namespace: namespace.to_string(),
                containerd_address: containerd_address.to_string(),
                state_root,
                cache,
                events: Events::new(publisher, namespace.to_string()),
                tasks: Mutex::new(HashMap::new()),
                exits: exits::ExitMonitor::default(),
                oom,
                shutdown,
            }
        });
        let weak = Arc::downgrade(&inner);
        exits::ExitMonitor::spawn(move |pid, code| match weak.upgrade() {
            Some(inner) => inner.on_exit(pid, code),
            None => false,
        });
        TaskService { inner }
    }
}

impl<E: Engine> Inner<E> {
    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn task(&self, id: &str) -> ttrpc::Result<Arc<Task>> {
        self.tasks()
            .get(id)
            .cloned()
            .ok_or_else(|| rpc_error(Code::NOT_FOUND, format!("task {id} not found")))
    }

    /// Called for every child process that exits. Returns whether it was one of our tasks.
    fn on_exit(&self, pid: i32, code: i32) -> bool {
        let task = self
            .tasks()
            .values()
            .find(|t| t.lock().pid == pid && t.lock().exit.is_none())
            .cloned();
        let Some(task) = task else {
            self.exits.unclaimed(pid, code);
            return false;
        };
        let mut state = task.lock();
        self.record_exit(&task, &mut state, code);
        true
    }

    /// Records that the task's process ended with `code` and publishes it: TaskOOM first when
    /// the cgroup's OOM killer ended it, then TaskExit. Nothing when an exit was recorded.
    fn record_exit(&self, task: &Task, state: &mut process::TaskState, code: i32) {
        if task.set_exited(state, code) {
            self.report_ooms(task, state);
            if let Some(exit) = &state.exit {
                self.events.exited(task, state.pid, exit);
            }
        }
    }

    /// Called when the cgroup watched as `id` may have had an OOM kill.
    fn on_oom(&self, id: &str) {
        if let Ok(task) = self.task(id) {
            let mut state = task.lock();
            self.report_ooms(&task, &mut state);
        }
    }

    /// Publishes TaskOOM when the task's cgroup counts more OOM kills than were reported.
    fn report_ooms(&self, task: &Task, state: &mut process::TaskState) {
        let kills = state
            .sandbox
            .as_ref()
            .and_then(Sandbox::memory_cgroup)
            .map_or(0, |cgroup| cgroup.oom_kills());
        if kills > state.oom_kills {
            state.oom_kills = kills;
            self.events.oom(task);
        }
    }

    fn create(&self, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        if req.terminal {
            return Err(rpc_error(
                Code::INVALID_ARGUMENT,
                "kwasi does not support terminals (-t) yet: run without a tty",
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(rpc_error(
                Code::UNIMPLEMENTED,
                "kwasi cannot restore checkpoints",
            ));
        }
        if self.tasks().contains_key(&req.id) {
            return Err(rpc_error(
                Code::ALREADY_EXISTS,
                format!("task {} already exists", req.id),
            ));
        }
        // A module shipped as a wasm layer is read from the image here, in the shim; one shipped
        // as a file is read in the container.
        let looked_up = std::time::Instant::now();
        let wasm_layer =
            wasm_layer(&self.containerd_address, &self.namespace, &req.id).map_err(|e| {
                log::error!("create {}: {e}", req.id);
                rpc_error(Code::FAILED_PRECONDITION, e.to_string())
            })?;
        if let Some(layer) = &wasm_layer {
            log::info!(
                "create {}: wasm layer {} ({} bytes) read from containerd in {:.1} ms",
                req.id,
                layer.digest,
                layer.bytes.len(),
                looked_up.elapsed().as_secs_f64() * 1000.0
            );
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let config = SandboxConfig {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    typ: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: stdio.clone(),
            state_root: self.state_root.clone(),
            cache: self.cache.clone(),
            wasm_layer: wasm_layer.map(Arc::new),
        };
        let since = self.exits.mark();
        let sandbox = Sandbox::create(self.engine.clone(), &config).map_err(|e| {
            log::error!("create {}: {e:#}", req.id);
            rpc_error(Code::FAILED_PRECONDITION, format!("{e:#}"))
        })?;
        log::debug!("create {}: sandbox ready in {:?}", req.id, since.elapsed());
        let pid = sandbox.pid();
        if let (Some(oom), Some(cgroup)) = (&self.oom, sandbox.memory_cgroup()) {
            if let Err(err) = oom.watch(&req.id, cgroup) {
                log::warn!("create {}: no OOM events: {err:#}", req.id);
            }
        }
        let task = Arc::new(Task::new(req.id.clone(), req.bundle, stdio, sandbox));
        self.tasks().insert(req.id.clone(), Arc::clone(&task));
        self.events.created(&task, pid);
        if let Some(code) = self.exits.claim(pid, since) {
            let mut state = task.lock();
            self.record_exit(&task, &mut state, code);
        }
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, req: StartRequest) -> ttrpc::Result<StartResponse> {
        reject_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let mut state = task.lock();
        if state.status != Status::CREATED {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!(
                    "task {} cannot be started: it is {:?}",
                    req.id, state.status
                ),
            ));
        }
        let pid = state.pid;
        let sandbox = state.sandbox.as_mut().ok_or_else(|| deleted(&req.id))?;
        let t0 = std::time::Instant::now();
        sandbox
            .start()
            .map_err(|e| rpc_error(Code::FAILED_PRECONDITION, format!("{e:#}")))?;
        state.status = Status::RUNNING;
        log::debug!("start {}: started in {:?}", req.id, t0.elapsed());
        // Published while holding the task's lock, so that TaskExit cannot overtake it.
        self.events.started(&task, pid);
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn state(&self, req: StateRequest) -> ttrpc::Result<StateResponse> {
        reject_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let state = task.lock();
        let mut resp = StateResponse {
            id: task.id.clone(),
            bundle: task.bundle.clone(),
            pid: state.pid as u32,
            stdin: task.stdio.stdin.clone(),
            stdout: task.stdio.stdout.clone(),
            stderr: task.stdio.stderr.clone(),
            terminal: false,
            ..Default::default()
        };
        resp.status = state.status.into();
        if let Some(exit) = &state.exit {
            resp.exit_status = exit.code;
            resp.exited_at = Some(exit.at.clone()).into();
        }
        Ok(resp)
    }

    fn wait(&self, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        reject_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let exit = task.wait();
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn kill(&self, req: KillRequest) -> ttrpc::Result<Empty> {
        reject_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let signal = Signal::try_from(req.signal as i32).map_err(|_| {
            rpc_error(
                Code::INVALID_ARGUMENT,
                format!("invalid signal {}", req.signal),
            )
        })?;
        let mut state = task.lock();
        if state.exit.is_some() && !req.all {
            return Err(rpc_error(
                Code::NOT_FOUND,
                format!("task {}: process already finished", req.id),
            ));
        }
        let sandbox = state.sandbox.as_mut().ok_or_else(|| deleted(&req.id))?;
        sandbox
            .kill(signal, req.all)
            .map_err(|e| rpc_error(Code::UNKNOWN, format!("{e:#}")))?;
        Ok(Empty::new())
    }

    fn delete(&self, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        reject_exec(&req.exec_id)?;
        let task = self.task(&req.id)?;
        let mut state = task.lock();
        if matches!(state.status, Status::RUNNING | Status::PAUSED) {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!("task {} is still running: kill it first", req.id),
            ));
        }
        let pid = state.pid;
        let t0 = std::time::Instant::now();
        if let Some(oom) = &self.oom {
            oom.unwatch(&req.id);
        }
        if let Some(sandbox) = state.sandbox.take() {
            if let Err(err) = sandbox.delete() {
                log::warn!("delete {}: {err:#}", req.id);
            }
        }
        log::debug!("delete {}: sandbox removed in {:?}", req.id, t0.elapsed());
        // A task deleted before it started never ran: it reports 137 like a killed one.
        if state.exit.is_none() {
            task.set_exited(&mut state, 128 + libc::SIGKILL);
        }
        let exit = state.exit.clone().unwrap_or_else(|| process::Exit {
            code: 0,
            at: Default::default(),
        });
        drop(state);
        self.tasks().remove(&req.id);
        self.events.deleted(&task, pid, &exit);
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let task = self.task(&req.id)?;
        let state = task.lock();
        let sandbox = state.sandbox.as_ref().ok_or_else(|| deleted(&req.id))?;
        let pids = sandbox
            .pids()
            .map_err(|e| rpc_error(Code::UNKNOWN, format!("{e:#}")))?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    /// Moves a task from status `from` to `to` with `change` (freeze or thaw its cgroup),
    /// then publishes the matching event with `announce`.
    fn freeze(
        &self,
        id: &str,
        (from, to): (Status, Status),
        change: fn(&mut Sandbox) -> anyhow::Result<()>,
        announce: fn(&Events, &Task),
    ) -> ttrpc::Result<Empty> {
        let task = self.task(id)?;
        let mut state = task.lock();
        if state.status != from {
            return Err(rpc_error(
                Code::FAILED_PRECONDITION,
                format!("task {id} is not {}", format!("{from:?}").to_lowercase()),
            ));
        }
        let sandbox = state.sandbox.as_mut().ok_or_else(|| deleted(id))?;
        change(sandbox).map_err(|e| rpc_error(Code::UNKNOWN, format!("{e:#}")))?;
        state.status = to;
        announce(&self.events, &task);
        Ok(Empty::new())
    }

    fn stats(&self, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let task = self.task(&req.id)?;
        let state = task.lock();
        let sandbox = state.sandbox.as_ref().ok_or_else(|| deleted(&req.id))?;
        let stats = sandbox
            .stats()
            .and_then(|s| stats::to_metrics(&s))
            .map_err(|e| rpc_error(Code::UNKNOWN, format!("{e:#}")))?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn connect(&self, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let task_pid = self
            .tasks()
            .get(&req.id)
            .map(|t| t.lock().pid as u32)
            .unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    fn shutdown(&self, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        if self.tasks().is_empty() {
            // Events are published from a queue: let containerd have them all before we go.
            self.events.flush();
            self.shutdown.signal();
        }
        Ok(Empty::new())
    }
}

fn rpc_error(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn deleted(id: &str) -> ttrpc::Error {
    rpc_error(Code::NOT_FOUND, format!("task {id} was deleted"))
}

fn reject_exec(exec_id: &str) -> ttrpc::Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(rpc_error(
            Code::NOT_FOUND,
            format!("exec process {exec_id} not found: kwasi does not support exec"),
        ))
    }
}

impl<E: Engine> TaskApi for TaskService<E> {
    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.inner.state(req)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.inner.create(req)
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.inner.start(req)
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.inner.delete(req)
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.inner.pids(req)
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        let paused = (Status::RUNNING, Status::PAUSED);
        self.inner
            .freeze(&req.id, paused, Sandbox::pause, Events::paused)
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        let resumed = (Status::PAUSED, Status::RUNNING);
        self.inner
            .freeze(&req.id, resumed, Sandbox::resume, Events::resumed)
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.inner.kill(req)
    }

    fn exec(&self, _: &TtrpcContext, _req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        Err(rpc_error(
            Code::UNIMPLEMENTED,
            "kwasi does not support exec into a wasm task",
        ))
    }

    fn update(&self, _: &TtrpcContext, _req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        Err(rpc_error(
            Code::UNIMPLEMENTED,
            "kwasi does not support updating a task's resources yet",
        ))
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.inner.wait(req)
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.inner.stats(req)
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        self.inner.connect(req)
    }

    fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.inner.shutdown(req)
    }
}
