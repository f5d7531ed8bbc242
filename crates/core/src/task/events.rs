//! The events a task service publishes ([`TaskEvent`]), behind the [`Publisher`] seam; and
//! the publisher that sends them to containerd ([`ContainerdPublisher`]).

use std::sync::mpsc;

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::publisher::RemotePublisher;

use super::process::{Exit, Process};

/// One event of a task, as containerd's task events name them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TaskEvent {
    /// `/tasks/create`: the init process is created.
    Created { process: Process, bundle: String },
    /// `/tasks/start`: the init process runs.
    Started { task: String, pid: i32 },
    /// `/tasks/exec-added`: an exec process is created.
    ExecAdded { task: String, exec_id: String },
    /// `/tasks/exec-started`: an exec process runs.
    ExecStarted {
        task: String,
        exec_id: String,
        pid: i32,
    },
    /// `/tasks/oom`: the cgroup's OOM killer ended a process of the task.
    Oom { task: String },
    /// `/tasks/exit`: a process exited (`id` is the exec id, or the task's for init).
    Exited {
        task: String,
        id: String,
        pid: i32,
        exit: Exit,
    },
    /// `/tasks/delete`: the task is deleted.
    Deleted { task: String, pid: i32, exit: Exit },
    /// `/tasks/paused`.
    Paused { task: String },
    /// `/tasks/resumed`.
    Resumed { task: String },
}

/// Where a task service's events go. Events must reach containerd in the order they are
/// published.
pub(crate) trait Publisher: Send + Sync + 'static {
    /// Publishes `event` (without waiting for containerd to take it).
    fn publish(&self, event: TaskEvent);

    /// Waits (a little) until every event published so far has been delivered.
    fn flush(&self);
}

/// Sends events to containerd's event service for one namespace.
///
/// Events are queued, in order, to one thread that publishes them, so that no task call
/// waits for containerd to take its event. A failed publish is logged: the task goes on, and
/// containerd learns the state from `state` and `wait`.
pub(crate) struct ContainerdPublisher {
    queue: mpsc::Sender<Queued>,
}

enum Queued {
    Event(Box<dyn Event + Send>),
    /// Answered once every event queued before it has been published.
    Flush(mpsc::Sender<()>),
}

impl ContainerdPublisher {
    pub(crate) fn new(publisher: RemotePublisher, namespace: String) -> ContainerdPublisher {
        let (queue, items) = mpsc::channel::<Queued>();
        std::thread::spawn(move || {
            for item in items {
                match item {
                    Queued::Event(event) => {
                        let topic = event.topic();
                        let ctx = context::with_timeout(5_000_000_000);
                        let message: Box<dyn MessageDyn> = event;
                        if let Err(err) = publisher.publish(ctx, &topic, &namespace, message) {
                            log::warn!("publishing {topic}: {err}");
                        }
                    }
                    Queued::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        ContainerdPublisher { queue }
    }

    fn enqueue(&self, item: Queued) -> bool {
        self.queue.send(item).is_ok()
    }
}

impl Publisher for ContainerdPublisher {
    fn publish(&self, event: TaskEvent) {
        if !self.enqueue(Queued::Event(to_protobuf(event))) {
            log::warn!("the event publisher has stopped");
        }
    }

    fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.enqueue(Queued::Flush(done)) {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

/// The protobuf message containerd expects for `event`.
fn to_protobuf(event: TaskEvent) -> Box<dyn Event + Send> {
    match event {
        TaskEvent::Created { process, bundle } => Box::new(TaskCreate {
            container_id: process.task.clone(),
            bundle,
            io: Some(TaskIO {
                stdin: process.stdio.stdin.clone(),
                stdout: process.stdio.stdout.clone(),
                stderr: process.stdio.stderr.clone(),
                terminal: process.terminal,
                ..Default::default()
            })
            .into(),
            pid: process.pid as u32,
            ..Default::default()
        }),
        TaskEvent::Started { task, pid } => Box::new(TaskStart {
            container_id: task,
            pid: pid as u32,
            ..Default::default()
        }),
        TaskEvent::ExecAdded { task, exec_id } => Box::new(TaskExecAdded {
            container_id: task,
            exec_id,
            ..Default::default()
        }),
        TaskEvent::ExecStarted { task, exec_id, pid } => Box::new(TaskExecStarted {
            container_id: task,
            exec_id,
            pid: pid as u32,
            ..Default::default()
        }),
        TaskEvent::Oom { task } => Box::new(TaskOOM {
            container_id: task,
            ..Default::default()
        }),
        TaskEvent::Exited {
            task,
            id,
            pid,
            exit,
        } => Box::new(TaskExit {
            container_id: task,
            id,
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        }),
        TaskEvent::Deleted { task, pid, exit } => Box::new(TaskDelete {
            container_id: task.clone(),
            id: task,
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        }),
        TaskEvent::Paused { task } => Box::new(TaskPaused {
            container_id: task,
            ..Default::default()
        }),
        TaskEvent::Resumed { task } => Box::new(TaskResumed {
            container_id: task,
            ..Default::default()
        }),
    }
}
