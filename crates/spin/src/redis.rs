//! Redis, as Spin gives it to components:
//! - outbound, through `fermyon:spin/redis@2.0.0` and `spin:redis/redis@3.0.0` (the same
//!   commands, as `async` functions): a component opens a connection to a server
//!   its `allowed_outbound_hosts` allows (`redis://host:port`) and sends commands on it;
//! - the Redis trigger, `[[trigger.redis]]`: a component that exports
//!   `fermyon:spin/inbound-redis` is called, in a fresh instance, with each message published
//!   on its channel. The server is the trigger's `address`, or the app's
//!   `[application.trigger.redis] address`; both may refer to variables. At SIGTERM it stops
//!   taking messages and lets the components called with earlier ones finish, for at most the
//!   drain time (`KWASI_HTTP_DRAIN_SECONDS`, as the HTTP trigger).

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kwasi_core::http::Shutdown;
use kwasi_engine_wasmtime::{Host, LinkedComponent};
use wasmtime::component::{Accessor, HasSelf, Resource};

use crate::host::{SpinHost, SpinState};

/// The bindings of the interfaces in `crates/spin/spin-wit`.
pub(crate) mod bindings {
    /// `fermyon:spin/redis@2.0.0`, which components import.
    pub mod outbound {
        wasmtime::component::bindgen!({
            path: "spin-wit",
            world: "kwasi:spin-wit/outbound-redis",
            imports: { default: async },
            with: {
                "fermyon:spin/redis.connection": crate::redis::Connection,
            },
        });
    }

    /// `fermyon:spin/inbound-redis`, which a Redis trigger's components export.
    pub mod trigger {
        wasmtime::component::bindgen!({
            path: "spin-wit",
            world: "kwasi:spin-wit/redis-trigger",
            exports: { default: async },
        });
    }

    /// `spin:redis/inbound-redis@3.0.0`, which WASI 0.3 components of a Redis trigger export.
    pub mod trigger_v3 {
        wasmtime::component::bindgen!({
            path: "spin-wit",
            world: "kwasi:spin-wit/redis-trigger-v3",
        });
    }
}

use crate::host::bindings::spin::redis::redis as v3;
use bindings::outbound::fermyon::spin2_0_0::redis::{
    self as wit, Error, HostConnection, Payload, RedisParameter, RedisResult,
};

/// An open connection of an instance.
pub struct Connection {
    connection: redis::aio::MultiplexedConnection,
}

/// The most connections one instance may have open at once.
const MAX_CONNECTIONS: usize = 16;

impl SpinState {
    /// A client of the server at `address`, if the component may reach it and has a
    /// connection to spare.
    fn redis_client(&self, address: &str) -> Result<redis::Client, Error> {
        let Ok(url) = url::Url::parse(address) else {
            return Err(Error::InvalidAddress);
        };
        let host = url.host_str().unwrap_or("");
        if let Err(refused) = self.outbound.check(url.scheme(), host, url.port()) {
            eprintln!(
                "component {}: outbound connection refused {refused}",
                self.outbound.component()
            );
            return Err(Error::InvalidAddress);
        }
        if self.connections >= MAX_CONNECTIONS {
            return Err(Error::TooManyConnections);
        }
        redis::Client::open(address).map_err(|_| Error::InvalidAddress)
    }

    /// Keeps `connection` among the instance's open ones.
    fn add_connection(
        &mut self,
        connection: redis::aio::MultiplexedConnection,
    ) -> Result<Resource<Connection>, Error> {
        let resource = self
            .table
            .push(Connection { connection })
            .map_err(|e| Error::Other(e.to_string()))?;
        self.connections += 1;
        Ok(resource)
    }

    /// A handle on open connection `c`, to send commands on.
    fn multiplexed(
        &self,
        c: &Resource<Connection>,
    ) -> Result<redis::aio::MultiplexedConnection, Error> {
        self.table
            .get(c)
            .map(|c| c.connection.clone())
            .map_err(|e| Error::Other(format!("no such connection: {e}")))
    }

    fn close_connection(&mut self, c: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        self.connections = self.connections.saturating_sub(1);
        Ok(())
    }
}

/// Connects `client`.
async fn connect(client: redis::Client) -> Result<redis::aio::MultiplexedConnection, Error> {
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| Error::Other(e.to_string()))
}

/// Sends `command` on `connection` and reads its answer as `T`.
async fn query<T: redis::FromRedisValue>(
    mut connection: redis::aio::MultiplexedConnection,
    command: redis::Cmd,
) -> Result<T, Error> {
    command.query_async(&mut connection).await.map_err(|e| {
        if e.kind() == redis::ErrorKind::UnexpectedReturnType {
            Error::TypeError
        } else {
            Error::Other(e.to_string())
        }
    })
}

/// The commands of the interface's operations that `redis::Cmd` does not build as such.
mod command {
    use super::RedisParameter;
    use redis::{cmd, Cmd};

    /// INCR (`Cmd::incr` sends INCRBY).
    pub fn incr(key: String) -> Cmd {
        let mut incr = cmd("INCR");
        incr.arg(key);
        incr
    }

    /// Any command, with its arguments.
    pub fn execute(command: String, arguments: Vec<RedisParameter>) -> Cmd {
        let mut cmd = cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(n) => cmd.arg(n),
                RedisParameter::Binary(bytes) => cmd.arg(bytes),
            };
        }
        cmd
    }
}

/// The results of `execute`'s answer.
fn results(value: redis::Value) -> Vec<RedisResult> {
    let mut results = Vec::new();
    flatten(value, &mut results);
    results
}

impl wit::Host for SpinState {}

impl HostConnection for SpinState {
    async fn open(&mut self, address: String) -> Result<Resource<Connection>, Error> {
        let connection = connect(self.redis_client(&address)?).await?;
        self.add_connection(connection)
    }

    async fn publish(
        &mut self,
        c: Resource<Connection>,
        channel: String,
        payload: Payload,
    ) -> Result<(), Error> {
        query::<i64>(self.multiplexed(&c)?, redis::Cmd::publish(channel, payload))
            .await
            .map(drop)
    }

    async fn get(
        &mut self,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Option<Payload>, Error> {
        query(self.multiplexed(&c)?, redis::Cmd::get(key)).await
    }

    async fn set(
        &mut self,
        c: Resource<Connection>,
        key: String,
        value: Payload,
    ) -> Result<(), Error> {
        query(self.multiplexed(&c)?, redis::Cmd::set(key, value)).await
    }

    async fn incr(&mut self, c: Resource<Connection>, key: String) -> Result<i64, Error> {
        query(self.multiplexed(&c)?, command::incr(key)).await
    }

    async fn del(&mut self, c: Resource<Connection>, keys: Vec<String>) -> Result<u32, Error> {
        query(self.multiplexed(&c)?, redis::Cmd::del(keys)).await
    }

    async fn sadd(
        &mut self,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        query(self.multiplexed(&c)?, redis::Cmd::sadd(key, values)).await
    }

    async fn smembers(
        &mut self,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Vec<String>, Error> {
        query(self.multiplexed(&c)?, redis::Cmd::smembers(key)).await
    }

    async fn srem(
        &mut self,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, Error> {
        query(self.multiplexed(&c)?, redis::Cmd::srem(key, values)).await
    }

    async fn execute(
        &mut self,
        c: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> Result<Vec<RedisResult>, Error> {
        query(self.multiplexed(&c)?, command::execute(command, arguments))
            .await
            .map(results)
    }

    async fn drop(&mut self, c: Resource<Connection>) -> wasmtime::Result<()> {
        self.close_connection(c)
    }
}

/// `spin:redis@3.0.0`: the connections of `fermyon:spin/redis@2.0.0`, through `async`
/// functions that send the same commands.
impl v3::Host for SpinState {}

impl v3::HostConnection for SpinState {
    fn drop(&mut self, c: Resource<Connection>) -> wasmtime::Result<()> {
        self.close_connection(c)
    }
}

/// Sends `command` on connection `c` of the instance `accessor` reaches.
async fn query_v3<T: redis::FromRedisValue, U>(
    accessor: &Accessor<U, HasSelf<SpinState>>,
    c: &Resource<Connection>,
    command: redis::Cmd,
) -> Result<T, v3::Error> {
    let connection = accessor
        .with(|mut access| access.get().multiplexed(c))
        .map_err(v3_error)?;
    query(connection, command).await.map_err(v3_error)
}

impl<U> v3::HostConnectionWithStore<U> for HasSelf<SpinState> {
    async fn open(
        accessor: &Accessor<U, Self>,
        address: String,
    ) -> Result<Resource<Connection>, v3::Error> {
        let client = accessor
            .with(|mut access| access.get().redis_client(&address))
            .map_err(v3_error)?;
        let connection = connect(client).await.map_err(v3_error)?;
        accessor
            .with(|mut access| access.get().add_connection(connection))
            .map_err(v3_error)
    }

    async fn publish(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        channel: String,
        payload: Payload,
    ) -> Result<(), v3::Error> {
        query_v3::<i64, U>(accessor, &c, redis::Cmd::publish(channel, payload))
            .await
            .map(drop)
    }

    async fn get(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Option<Payload>, v3::Error> {
        query_v3(accessor, &c, redis::Cmd::get(key)).await
    }

    async fn set(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
        value: Payload,
    ) -> Result<(), v3::Error> {
        query_v3(accessor, &c, redis::Cmd::set(key, value)).await
    }

    async fn incr(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<i64, v3::Error> {
        query_v3(accessor, &c, command::incr(key)).await
    }

    async fn del(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        keys: Vec<String>,
    ) -> Result<u32, v3::Error> {
        query_v3(accessor, &c, redis::Cmd::del(keys)).await
    }

    async fn sadd(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, v3::Error> {
        query_v3(accessor, &c, redis::Cmd::sadd(key, values)).await
    }

    async fn smembers(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
    ) -> Result<Vec<String>, v3::Error> {
        query_v3(accessor, &c, redis::Cmd::smembers(key)).await
    }

    async fn srem(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> Result<u32, v3::Error> {
        query_v3(accessor, &c, redis::Cmd::srem(key, values)).await
    }

    async fn execute(
        accessor: &Accessor<U, Self>,
        c: Resource<Connection>,
        command: String,
        arguments: Vec<v3::RedisParameter>,
    ) -> Result<Vec<v3::RedisResult>, v3::Error> {
        let arguments = arguments
            .into_iter()
            .map(|a| match a {
                v3::RedisParameter::Int64(n) => RedisParameter::Int64(n),
                v3::RedisParameter::Binary(bytes) => RedisParameter::Binary(bytes),
            })
            .collect();
        let value: redis::Value =
            query_v3(accessor, &c, command::execute(command, arguments)).await?;
        Ok(results(value)
            .into_iter()
            .map(|r| match r {
                RedisResult::Nil => v3::RedisResult::Nil,
                RedisResult::Status(s) => v3::RedisResult::Status(s),
                RedisResult::Int64(n) => v3::RedisResult::Int64(n),
                RedisResult::Binary(bytes) => v3::RedisResult::Binary(bytes),
            })
            .collect())
    }
}

/// What a WASI 0.3 Redis handler's error says.
fn v3_reason(error: bindings::trigger_v3::spin::redis::redis::Error) -> String {
    use bindings::trigger_v3::spin::redis::redis::Error;
    match error {
        Error::InvalidAddress => "invalid address".into(),
        Error::TooManyConnections => "too many connections".into(),
        Error::TypeError => "type error".into(),
        Error::Other(reason) => reason,
    }
}

fn v3_error(err: Error) -> v3::Error {
    match err {
        Error::InvalidAddress => v3::Error::InvalidAddress,
        Error::TooManyConnections => v3::Error::TooManyConnections,
        Error::TypeError => v3::Error::TypeError,
        Error::Other(reason) => v3::Error::Other(reason),
    }
}

/// `value` as the results `execute` gives: an array's elements one after the other.
fn flatten(value: redis::Value, out: &mut Vec<RedisResult>) {
    use redis::Value;
    match value {
        Value::Nil => out.push(RedisResult::Nil),
        Value::Int(n) => out.push(RedisResult::Int64(n)),
        Value::BulkString(bytes) => out.push(RedisResult::Binary(bytes)),
        Value::SimpleString(s) => out.push(RedisResult::Status(s)),
        Value::Okay => out.push(RedisResult::Status("OK".into())),
        Value::Boolean(b) => out.push(RedisResult::Int64(i64::from(b))),
        Value::Double(d) => out.push(RedisResult::Binary(d.to_string().into_bytes())),
        Value::Array(values) | Value::Set(values) => {
            values.into_iter().for_each(|v| flatten(v, out))
        }
        Value::Map(pairs) => pairs.into_iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out)
        }),
        Value::VerbatimString { text, .. } => out.push(RedisResult::Binary(text.into_bytes())),
        other => out.push(RedisResult::Binary(format!("{other:?}").into_bytes())),
    }
}

/// A component of the Redis trigger, ready to be called with messages.
#[derive(Clone)]
pub struct RedisHandler {
    component: String,
    linked: LinkedComponent<SpinHost>,
    pre: HandlerPre,
}

/// The handler a component exports, by WASI version.
#[derive(Clone)]
enum HandlerPre {
    /// `fermyon:spin/inbound-redis` (WASI 0.2 and earlier SDKs).
    V2(bindings::trigger::RedisTriggerPre<Host<SpinState>>),
    /// `spin:redis/inbound-redis@3.0.0`, an `async` function (WASI 0.3).
    V3(bindings::trigger_v3::RedisTriggerV3Pre<Host<SpinState>>),
}

impl RedisHandler {
    /// The handler of `linked`, component `component`, which must export
    /// `fermyon:spin/inbound-redis` or `spin:redis/inbound-redis@3.0.0`.
    pub fn new(component: &str, linked: LinkedComponent<SpinHost>) -> Result<RedisHandler, String> {
        let instance = linked.instance_pre();
        let pre = match bindings::trigger::RedisTriggerPre::new(instance.clone()) {
            Ok(pre) => HandlerPre::V2(pre),
            Err(v2) => match bindings::trigger_v3::RedisTriggerV3Pre::new(instance.clone()) {
                Ok(pre) => HandlerPre::V3(pre),
                Err(_) => {
                    return Err(format!(
                        "exports neither fermyon:spin/inbound-redis nor \
                         spin:redis/inbound-redis@3.0.0, which a Redis trigger calls: {}",
                        v2.to_string().lines().next().unwrap_or_default()
                    ))
                }
            },
        };
        Ok(RedisHandler {
            component: component.to_string(),
            linked,
            pre,
        })
    }

    /// Calls the component, in a fresh instance, with `message`.
    async fn handle(&self, message: Vec<u8>) -> Result<(), String> {
        let mut store = self.linked.new_store()?;
        let instantiating = |e: wasmtime::Error| format!("instantiating: {e:#}");
        let returned = match &self.pre {
            HandlerPre::V2(pre) => {
                let trigger = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiating)?;
                trigger
                    .fermyon_spin_inbound_redis()
                    .call_handle_message(&mut store, &message)
                    .await
                    .map(|r| r.map_err(|_| String::new()))
            }
            HandlerPre::V3(pre) => {
                let trigger = pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(instantiating)?;
                store
                    .run_concurrent(async move |accessor| {
                        trigger
                            .spin_redis_inbound_redis()
                            .call_handle_message(accessor, message)
                            .await
                    })
                    .await
                    .and_then(|called| called)
                    .map(|r| r.map_err(|e| format!(": {}", v3_reason(e))))
            }
        };
        match returned {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(format!("the component returned an error{reason}")),
            Err(trap) => Err(format!("{trap:#}")),
        }
    }
}

/// An app's Redis trigger: for each server, its channels and the components each calls.
#[derive(Default)]
pub struct RedisTrigger {
    servers: BTreeMap<String, BTreeMap<String, Vec<RedisHandler>>>,
}

impl RedisTrigger {
    /// Calls `handler` with the messages of `channel` on the server at `address`.
    pub fn subscribe(&mut self, address: String, channel: String, handler: RedisHandler) {
        self.servers
            .entry(address)
            .or_default()
            .entry(channel)
            .or_default()
            .push(handler);
    }

    /// Whether it has no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Subscribes on every server, in a thread of its own, and returns once all
    /// subscriptions are made (or one failed); the thread then calls the components with each
    /// message until it is stopped ([`RunningRedis::stop`]) or a connection ends.
    pub fn start(self) -> Result<RunningRedis, String> {
        let (ready, subscribed) = mpsc::channel::<Result<(), String>>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<Duration>();
        let thread = std::thread::Builder::new()
            .name("redis-trigger".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let e = format!("redis trigger: starting its runtime: {e}");
                        let _ = ready.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                runtime.block_on(self.run(ready, stopped))
            })
            .map_err(|e| format!("redis trigger: starting its thread: {e}"))?;
        match subscribed.recv() {
            Ok(Ok(())) => Ok(RunningRedis {
                thread,
                stop: StopRedis(Arc::new(Mutex::new(Some(stop)))),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => "redis trigger: its thread ended before subscribing".into(),
            }),
        }
    }

    async fn run(
        self,
        ready: mpsc::Sender<Result<(), String>>,
        stopped: tokio::sync::oneshot::Receiver<Duration>,
    ) -> Result<Shutdown, String> {
        let mut streams = Vec::new();
        for (address, channels) in self.servers {
            let subscribed = subscribe(&address, channels.keys()).await;
            match subscribed {
                Ok(pubsub) => streams.push((address, channels, pubsub)),
                Err(e) => {
                    let _ = ready.send(Err(e.clone()));
                    return Err(e);
                }
            }
        }
        for (address, channels, _) in &streams {
            for (channel, handlers) in channels {
                let ids: Vec<&str> = handlers.iter().map(|h| h.component.as_str()).collect();
                eprintln!(
                    "redis trigger: {address} channel {channel}: {}",
                    ids.join(", ")
                );
            }
        }
        let _ = ready.send(Ok(()));
        // Each call holds a clone of `in_flight`; `all_done` ends when the last is dropped.
        let (in_flight, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
        let listeners: Vec<_> = streams
            .into_iter()
            .map(|(address, channels, pubsub)| {
                let in_flight = in_flight.clone();
                tokio::spawn(async move {
                    let mut messages = pubsub.into_on_message();
                    while let Some(message) = messages.next().await {
                        let channel = message.get_channel_name().to_string();
                        let Some(handlers) = channels.get(&channel) else {
                            continue;
                        };
                        for handler in handlers.iter().cloned() {
                            let payload = message.get_payload_bytes().to_vec();
                            let channel = channel.clone();
                            let call = in_flight.clone();
                            tokio::spawn(async move {
                                let _call = call;
                                if let Err(e) = handler.handle(payload).await {
                                    eprintln!(
                                        "component {}: a message on channel {channel}: {e}",
                                        handler.component
                                    );
                                }
                            });
                        }
                    }
                    format!("redis trigger: the connection to {address} ended")
                })
            })
            .collect();
        drop(in_flight);
        let subscriptions: Vec<_> = listeners.iter().map(|l| l.abort_handle()).collect();
        let drain = tokio::select! {
            (ended, _, _) = futures_util::future::select_all(listeners) => {
                // Wakes the app's main thread, which waits for SIGTERM, to stop the app.
                // SAFETY: sending a signal to this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                return Err(ended.unwrap_or_else(|e| format!("redis trigger: {e}")));
            }
            drain = stopped => drain.unwrap_or_default(),
        };
        // No more messages: the subscriptions end with their connections.
        subscriptions.iter().for_each(|s| s.abort());
        match tokio::time::timeout(drain, all_done.recv()).await {
            Ok(_) => Ok(Shutdown::Drained),
            Err(_) => Ok(Shutdown::DeadlineExceeded),
        }
    }
}

/// A Redis trigger taking messages.
pub struct RunningRedis {
    thread: std::thread::JoinHandle<Result<Shutdown, String>>,
    stop: StopRedis,
}

/// Tells a running Redis trigger to stop taking messages and to let the components called
/// with earlier ones finish within a drain time. Clones tell the same trigger; the first
/// call counts.
#[derive(Clone)]
pub struct StopRedis(Arc<Mutex<Option<tokio::sync::oneshot::Sender<Duration>>>>);

impl StopRedis {
    /// Starts the trigger's drain of at most `drain`, unless it has started already.
    pub fn stop(&self, drain: Duration) {
        let sender = self.0.lock().ok().and_then(|mut sender| sender.take());
        if let Some(sender) = sender {
            let _ = sender.send(drain);
        }
    }
}

impl RunningRedis {
    /// What stops the trigger from elsewhere (the HTTP trigger's drain, which starts this
    /// one's at the same time).
    pub fn stopper(&self) -> StopRedis {
        self.stop.clone()
    }

    /// Stops taking messages (unless told to already) and waits, at most `drain`, for the
    /// components called with earlier ones to finish. An error says why the trigger had
    /// ended before (a lost connection).
    pub fn stop(self, drain: Duration) -> Result<Shutdown, String> {
        self.stop.stop(drain);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("redis trigger: its thread panicked".into()))
    }
}

/// A connection to `address` subscribed to `channels`.
async fn subscribe<'a>(
    address: &str,
    channels: impl Iterator<Item = &'a String>,
) -> Result<redis::aio::PubSub, String> {
    let fail = |e: redis::RedisError| format!("redis trigger: {address}: {e}");
    let client = redis::Client::open(address).map_err(fail)?;
    let mut pubsub = client.get_async_pubsub().await.map_err(fail)?;
    for channel in channels {
        pubsub.subscribe(channel).await.map_err(fail)?;
    }
    Ok(pubsub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_results_flatten_arrays_and_keep_scalars() {
        let value = redis::Value::Array(vec![
            redis::Value::Int(3),
            redis::Value::Nil,
            redis::Value::Array(vec![redis::Value::BulkString(b"x".to_vec())]),
            redis::Value::Okay,
        ]);
        let mut out = Vec::new();
        flatten(value, &mut out);
        let expected = [
            RedisResult::Int64(3),
            RedisResult::Nil,
            RedisResult::Binary(b"x".to_vec()),
            RedisResult::Status("OK".into()),
        ];
        assert_eq!(format!("{out:?}"), format!("{expected:?}"));
    }
}
