//! Task events published to containerd: create, start, exit, delete, paused, resumed.

use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::ttrpc::context;
use containerd_shim::publisher::RemotePublisher;

use super::process::{Exit, Task};

/// Sends events to containerd's event service for one namespace. A failed publish is logged:
/// the task goes on, containerd learns the state from `state` and `wait`.
pub(crate) struct Events {
    publisher: RemotePublisher,
    namespace: String,
}

impl Events {
    pub(crate) fn new(publisher: RemotePublisher, namespace: String) -> Events {
        Events {
            publisher,
            namespace,
        }
    }

    fn send<E: Event + 'static>(&self, event: E) {
        let topic = event.topic();
        let ctx = context::with_timeout(5_000_000_000);
        if let Err(err) = self
            .publisher
            .publish(ctx, &topic, &self.namespace, Box::new(event))
        {
            log::warn!("publishing {topic}: {err}");
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
