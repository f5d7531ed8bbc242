//! The events a task service publishes ([`TaskEvent`]), behind the [`Publisher`] seam; and
//! the publisher that sends them to containerd ([`ContainerdPublisher`]).
//!
//! Events are encoded without protobuf reflection: each message's name is written here, not
//! read from its descriptor. Reading a descriptor parses the whole `.proto` file it comes
//! from and those it imports, about half a MiB of heap that every shim would keep.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use containerd_shim::event::Event;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::ttrpc::context;
use containerd_shim::protos::{Client, EventsClient};
use containerd_shim::util::timestamp;

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
///
/// The connection to containerd is made for a burst of events and closed once no event has
/// come for [`IDLE_CONNECTION`]: ttrpc's synchronous client keeps a thread that wakes every
/// 10 ms while connected, which on a node of a thousand idle shims is a hundred thousand
/// wake-ups a second.
pub(crate) struct ContainerdPublisher {
    queue: mpsc::Sender<Queued>,
}

/// How long the publisher keeps its connection to containerd after the last event.
const IDLE_CONNECTION: Duration = Duration::from_secs(1);

enum Queued {
    Event(Encoded),
    /// Answered once every event queued before it has been published.
    Flush(mpsc::Sender<()>),
}

/// Connects to containerd's event service at its ttrpc address (`TTRPC_ADDRESS`).
fn events_client(ttrpc_address: &str) -> anyhow::Result<EventsClient> {
    let address = match ttrpc_address.strip_prefix("unix://") {
        Some(_) => ttrpc_address.to_string(),
        None => format!("unix://{ttrpc_address}"),
    };
    let client = Client::connect(&address)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("connecting to containerd's events at {ttrpc_address}"))?;
    Ok(EventsClient::new(client))
}

impl ContainerdPublisher {
    /// A publisher to containerd's event service at `ttrpc_address` (`TTRPC_ADDRESS`).
    pub(crate) fn new(ttrpc_address: String, namespace: String) -> ContainerdPublisher {
        let (queue, items) = mpsc::channel::<Queued>();
        std::thread::spawn(move || {
            let mut client: Option<EventsClient> = None;
            loop {
                let item = match &client {
                    Some(_) => match items.recv_timeout(IDLE_CONNECTION) {
                        Ok(item) => item,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            client = None;
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    },
                    None => match items.recv() {
                        Ok(item) => item,
                        Err(_) => break,
                    },
                };
                match item {
                    Queued::Event(Encoded { topic, event }) => {
                        if client.is_none() {
                            client = events_client(&ttrpc_address)
                                .map_err(|err| log::warn!("publishing {topic}: {err:#}"))
                                .ok();
                        }
                        let Some(connected) = &client else { continue };
                        let ctx = context::with_timeout(5_000_000_000);
                        let request = ForwardRequest {
                            envelope: Some(Envelope {
                                timestamp: timestamp().ok().into(),
                                namespace: namespace.clone(),
                                topic: topic.clone(),
                                event: Some(event).into(),
                                ..Default::default()
                            })
                            .into(),
                            ..Default::default()
                        };
                        if let Err(err) = connected.forward(ctx, &request) {
                            log::warn!("publishing {topic}: {err}");
                            client = None;
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

/// An event ready to send: its topic and its message in an `Any`.
struct Encoded {
    topic: String,
    event: Any,
}

/// `message`, named `name` (its protobuf full name, which containerd reads as its type).
fn encoded<M: Message + Event>(name: &str, message: M) -> Encoded {
    let value = message.write_to_bytes().unwrap_or_else(|err| {
        log::warn!("encoding {name}: {err}");
        Vec::new()
    });
    Encoded {
        topic: message.topic(),
        event: Any {
            type_url: name.to_string(),
            value,
            ..Default::default()
        },
    }
}

/// The protobuf message containerd expects for `event`.
fn to_protobuf(event: TaskEvent) -> Encoded {
    match event {
        TaskEvent::Created { process, bundle } => encoded(
            names::CREATE,
            TaskCreate {
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
            },
        ),
        TaskEvent::Started { task, pid } => encoded(
            names::START,
            TaskStart {
                container_id: task,
                pid: pid as u32,
                ..Default::default()
            },
        ),
        TaskEvent::ExecAdded { task, exec_id } => encoded(
            names::EXEC_ADDED,
            TaskExecAdded {
                container_id: task,
                exec_id,
                ..Default::default()
            },
        ),
        TaskEvent::ExecStarted { task, exec_id, pid } => encoded(
            names::EXEC_STARTED,
            TaskExecStarted {
                container_id: task,
                exec_id,
                pid: pid as u32,
                ..Default::default()
            },
        ),
        TaskEvent::Oom { task } => encoded(
            names::OOM,
            TaskOOM {
                container_id: task,
                ..Default::default()
            },
        ),
        TaskEvent::Exited {
            task,
            id,
            pid,
            exit,
        } => encoded(
            names::EXIT,
            TaskExit {
                container_id: task,
                id,
                pid: pid as u32,
                exit_status: exit.code,
                exited_at: Some(exit.at).into(),
                ..Default::default()
            },
        ),
        TaskEvent::Deleted { task, pid, exit } => encoded(
            names::DELETE,
            TaskDelete {
                container_id: task.clone(),
                id: task,
                pid: pid as u32,
                exit_status: exit.code,
                exited_at: Some(exit.at).into(),
                ..Default::default()
            },
        ),
        TaskEvent::Paused { task } => encoded(
            names::PAUSED,
            TaskPaused {
                container_id: task,
                ..Default::default()
            },
        ),
        TaskEvent::Resumed { task } => encoded(
            names::RESUMED,
            TaskResumed {
                container_id: task,
                ..Default::default()
            },
        ),
    }
}

/// The protobuf full names of the task events, as their descriptors give them.
mod names {
    pub(super) const CREATE: &str = "containerd.events.TaskCreate";
    pub(super) const START: &str = "containerd.events.TaskStart";
    pub(super) const EXEC_ADDED: &str = "containerd.events.TaskExecAdded";
    pub(super) const EXEC_STARTED: &str = "containerd.events.TaskExecStarted";
    pub(super) const OOM: &str = "containerd.events.TaskOOM";
    pub(super) const EXIT: &str = "containerd.events.TaskExit";
    pub(super) const DELETE: &str = "containerd.events.TaskDelete";
    pub(super) const PAUSED: &str = "containerd.events.TaskPaused";
    pub(super) const RESUMED: &str = "containerd.events.TaskResumed";
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::MessageFull;

    #[test]
    fn each_event_is_named_as_its_descriptor_names_it() {
        let pairs = [
            (names::CREATE, TaskCreate::descriptor()),
            (names::START, TaskStart::descriptor()),
            (names::EXEC_ADDED, TaskExecAdded::descriptor()),
            (names::EXEC_STARTED, TaskExecStarted::descriptor()),
            (names::OOM, TaskOOM::descriptor()),
            (names::EXIT, TaskExit::descriptor()),
            (names::DELETE, TaskDelete::descriptor()),
            (names::PAUSED, TaskPaused::descriptor()),
            (names::RESUMED, TaskResumed::descriptor()),
        ];
        for (name, descriptor) in pairs {
            assert_eq!(name, descriptor.full_name());
        }
    }

    #[test]
    fn an_encoded_event_carries_its_topic_and_decodes_back() {
        let encoded = to_protobuf(TaskEvent::Started {
            task: "t".into(),
            pid: 42,
        });
        assert_eq!(encoded.topic, "/tasks/start");
        let start = TaskStart::parse_from_bytes(&encoded.event.value).unwrap();
        assert_eq!((start.container_id.as_str(), start.pid), ("t", 42));
    }
}
