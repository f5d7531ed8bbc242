//! The containerd task service (shim API over ttrpc): one [`TaskService`] per shim process,
//! serving every task containerd gives that shim, and every process of each task.
//!
//! The lifecycle of a task, call by call:
//! - `create`: read the module from the image's wasm layer if it has one, mount the rootfs,
//!   build the sandbox, compile the module in it (TaskCreate);
//! - `start`: let the init process run the guest (TaskStart);
//! - `exec`, then `start` with its id: a new process in the task's sandbox (TaskExecAdded,
//!   TaskExecStarted);
//! - `wait`: block until a process exits; `kill` signals it; the exit is seen by
//!   containerd-shim's reaper (TaskExit, after TaskOOM when the cgroup's OOM killer ended it);
//! - `delete`: an exec process, or the task once stopped: remove the sandbox and unmount the
//!   rootfs (TaskDelete);
//! - `shutdown`: once no task is left, the shim process exits.
//!
//! Also `state`, `pids`, `pause`/`resume` (cgroup freezer), `stats` (cgroup metrics),
//! `update` (cgroup limits), `resize_pty`, `close_io` and `connect`.
//!
//! [`service`] holds what each call does, over two seams ([`container`]: the sandbox;
//! [`events`]: containerd's event service) and [`process`], each process's state machine.
//! This module adapts it to the ttrpc API.

pub(crate) mod container;
mod events;
mod exits;
mod process;
mod service;
mod stats;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedOutputStream;
use containerd_shim::protos::shim::shim::CheckpointTaskRequest;
use containerd_shim::protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task as TaskApi};
use nix::sys::signal::Signal;

use crate::sandbox::oom::OomMonitor;
use crate::sandbox::{RootfsMount, SandboxRuntime, StdioPaths, Zygote};
use container::TaskConfig;
use events::ContainerdPublisher;
use service::{Service, TaskError};

/// The shim's ttrpc task service; its tasks run with the engine of the zygote it is given.
pub struct TaskService {
    service: Arc<Service<SandboxRuntime, ContainerdPublisher>>,
}

impl TaskService {
    /// A service that builds its tasks' processes through `zygote`, keeps sandbox state under
    /// `state_root`, reads images through containerd at `containerd_address` and publishes
    /// events to containerd's ttrpc address `events_address` in `namespace`, and signals
    /// `shutdown` when containerd asks the shim to exit with no task left.
    pub fn new(
        zygote: Zygote,
        namespace: &str,
        containerd_address: &str,
        state_root: PathBuf,
        events_address: &str,
        shutdown: Arc<ExitSignal>,
    ) -> TaskService {
        let runtime = SandboxRuntime::new(zygote, namespace, containerd_address, state_root);
        let publisher = ContainerdPublisher::new(events_address.to_string(), namespace.to_string());
        let service = Arc::new_cyclic(|weak: &std::sync::Weak<Service<_, _>>| {
            let mut service = Service::new(runtime, publisher, shutdown);
            let weak = weak.clone();
            match OomMonitor::new(move |id| {
                if let Some(service) = weak.upgrade() {
                    service.on_oom(id);
                }
            }) {
                Ok(monitor) => service.set_oom_monitor(monitor),
                Err(err) => log::warn!("no OOM events: {err:#}"),
            }
            service
        });
        let weak = Arc::downgrade(&service);
        exits::ExitMonitor::spawn(move |pid, code| match weak.upgrade() {
            Some(service) => service.on_exit(pid, code),
            None => false,
        });
        TaskService { service }
    }
}

/// What runc's shim tells about an exec process in `Pids` (containerd's
/// `containerd.runc.v1.ProcessDetails`: field 1 is the exec ID), which `ctr task ps` shows.
fn process_details(exec_id: &str) -> Any {
    let mut value = Vec::with_capacity(exec_id.len() + 2);
    let mut out = CodedOutputStream::vec(&mut value);
    // Writing to a Vec cannot fail.
    let _ = out.write_string(1, exec_id).and_then(|()| out.flush());
    drop(out);
    Any {
        type_url: "types.containerd.io/containerd.runc.v1.ProcessDetails".into(),
        value,
        ..Default::default()
    }
}

fn rpc_error(err: TaskError) -> ttrpc::Error {
    let code = match &err {
        TaskError::NotFound(_) => Code::NOT_FOUND,
        TaskError::AlreadyExists(_) => Code::ALREADY_EXISTS,
        TaskError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        TaskError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        TaskError::Unimplemented(_) => Code::UNIMPLEMENTED,
        TaskError::Unknown(_) => Code::UNKNOWN,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, err.to_string()))
}

/// The exec id of a request: `None` for the init process.
fn exec_id(id: &str) -> Option<&str> {
    (!id.is_empty()).then_some(id)
}

fn signal(number: u32) -> Result<Signal, TaskError> {
    Signal::try_from(number as i32)
        .map_err(|_| TaskError::InvalidArgument(format!("invalid signal {number}")))
}

/// The OCI JSON in a request's `Any` (a process spec, resources), as containerd sends it;
/// `what` names it in the error when it is missing or malformed.
fn required_json<T: serde::de::DeserializeOwned>(
    any: Option<&Any>,
    what: &str,
) -> Result<T, TaskError> {
    let any =
        any.ok_or_else(|| TaskError::InvalidArgument(format!("the request has no {what}")))?;
    serde_json::from_slice(&any.value)
        .map_err(|e| TaskError::InvalidArgument(format!("decoding the {what}: {e}")))
}

impl TaskApi for TaskService {
    fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let view = self
            .service
            .state(&req.id, exec_id(&req.exec_id))
            .map_err(rpc_error)?;
        let process = view.process;
        let mut resp = StateResponse {
            id: process.task.clone(),
            bundle: view.bundle,
            pid: process.pid as u32,
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.terminal,
            exec_id: req.exec_id,
            ..Default::default()
        };
        resp.status = process.status().to_api().into();
        if let Some(exit) = process.exit() {
            resp.exit_status = exit.code;
            resp.exited_at = Some(exit.at.clone()).into();
        }
        Ok(resp)
    }

    fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(rpc_error(TaskError::Unimplemented(
                "kwasi cannot restore checkpoints: create the task without --checkpoint".into(),
            )));
        }
        let config = TaskConfig {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| RootfsMount {
                    typ: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
            },
            terminal: req.terminal,
            options: req.options.clone().into_option(),
        };
        let pid = self.service.create(config).map_err(|e| {
            log::error!("create {}: {e}", req.id);
            rpc_error(e)
        })?;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = self
            .service
            .start(&req.id, exec_id(&req.exec_id))
            .map_err(|e| {
                log::error!("start {} {}: {e}", req.id, req.exec_id);
                rpc_error(e)
            })?;
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit) = self
            .service
            .delete(&req.id, exec_id(&req.exec_id))
            .map_err(rpc_error)?;
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        let pids = self.service.pids_of(&req.id).map_err(rpc_error)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|(pid, exec_id)| ProcessInfo {
                    pid: pid as u32,
                    info: exec_id.as_deref().map(process_details).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.service.pause(&req.id).map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.service.resume(&req.id).map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, _req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(rpc_error(TaskError::Unimplemented(
            "kwasi cannot checkpoint a task (no CRIU support): stop it instead".into(),
        )))
    }

    fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let signal = signal(req.signal).map_err(rpc_error)?;
        self.service
            .kill(&req.id, exec_id(&req.exec_id), signal, req.all)
            .map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let process = required_json(req.spec.as_ref(), "exec process spec").map_err(rpc_error)?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        self.service
            .exec(&req.id, &req.exec_id, process, stdio, req.terminal)
            .map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.service
            .resize_pty(&req.id, exec_id(&req.exec_id), req.width, req.height)
            .map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        if req.stdin {
            self.service
                .close_stdin(&req.id, exec_id(&req.exec_id))
                .map_err(rpc_error)?;
        }
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let resources = required_json(req.resources.as_ref(), "resources").map_err(rpc_error)?;
        self.service
            .update(&req.id, &resources)
            .map_err(rpc_error)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self
            .service
            .wait(&req.id, exec_id(&req.exec_id))
            .map_err(rpc_error)?;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let stats = self
            .service
            .stats(&req.id)
            .and_then(|(stats, oom_kills)| {
                stats::to_metrics(&stats, oom_kills)
                    .map_err(|e| TaskError::Unknown(format!("{e:#}")))
            })
            .map_err(rpc_error)?;
        Ok(StatsResponse {
            stats: Some(stats).into(),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.service.task_pid(&req.id) as u32,
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.service.shutdown();
        Ok(Empty::new())
    }
}
