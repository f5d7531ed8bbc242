//! Task events published to containerd: create, start, OOM, exit, delete, paused, resumed.

use std::sync::mpsc;

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::publisher::RemotePublisher;

use super::process::{Exit, Task};

/// Sends events to containerd's event service for one namespace.
///
/// Events are queued, in order, to one thread that publishes them, so that no task call
/// waits for containerd to take its event. A failed publish is logged: the task goes on, and
/// containerd learns the state from `state` and `wait`.
pub(crate) struct Events {
    queue: mpsc::Sender<Queued>,
}

enum Queued {
    Event(Box<dyn Event + Send>),
    /// Answered once every event queued before it has been published.
    Flush(mpsc::Sender<()>),
}

impl Events {
    pub(crate) fn new(publisher: RemotePublisher, namespace: String) -> Events {
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
        Events { queue }
    }

    fn enqueue(&self, item: Queued) -> bool {
        self.queue.send(item).is_ok()
    }

    fn send<E: Event + Send + 'static>(&self, event: E) {
        if !self.enqueue(Queued::Event(Box::new(event))) {
            log::warn!("the event publisher has stopped");
        }
    }

    /// Waits (up to 10 s) until every event queued so far has been published.
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.enqueue(Queued::Flush(done)) {
            let _ = wait.recv_timeout(std::time::Duration::from_secs(10));
        }
    }

    pub(crate) fn created(&self, task: &Task, pid: i32) {
        let event = TaskCreate {
            container_id: task.id.clone(),
            bundle: task.bundle.clone(),
            io: Some(TaskIO {
                stdin: task.stdio.stdin.clone(),
                stdout: task.stdio.stdout.clone(),
                stderr: task.stdio.stderr.clone(),
                terminal: false,
                ..Default::default()
            })
            .into(),
            pid: pid as u32,
            ..Default::default()
        };
        self.send(event);
    }

    pub(crate) fn started(&self, task: &Task, pid: i32) {
        let event = TaskStart {
            container_id: task.id.clone(),
            pid: pid as u32,
            ..Default::default()
        };
        self.send(event);
    }

    /// The kernel's OOM killer ended a process of the task's cgroup.
    pub(crate) fn oom(&self, task: &Task) {
        let event = TaskOOM {
            container_id: task.id.clone(),
            ..Default::default()
        };
        self.send(event);
    }

    pub(crate) fn exited(&self, task: &Task, pid: i32, exit: &Exit) {
        let event = TaskExit {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        };
        self.send(event);
    }

    pub(crate) fn deleted(&self, task: &Task, pid: i32, exit: &Exit) {
        let event = TaskDelete {
            container_id: task.id.clone(),
            id: task.id.clone(),
            pid: pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        };
        self.send(event);
    }

    pub(crate) fn paused(&self, task: &Task) {
        let event = TaskPaused {
            container_id: task.id.clone(),
            ..Default::default()
        };
        self.send(event);
    }

    pub(crate) fn resumed(&self, task: &Task) {
        let event = TaskResumed {
            container_id: task.id.clone(),
            ..Default::default()
        };
        self.send(event);
    }
}
