//! Serving a `wasi:http` component: the HTTP/1.1 server an engine hands each request to.
//!
//! Everything here is independent of the engine: the listener on the task's network namespace,
//! keep-alive connections, bounded concurrency with a bounded queue (503 beyond it), limits on
//! the request head and body, a 500 for a request whose handler fails while the server goes
//! on, and the drain on SIGTERM. An engine supplies a [`Handler`] that runs one request in a
//! fresh instance.
//!
//! The settings come from the task's environment ([`HttpConfig::from_env`]):
//!
//! | variable | default |
//! | --- | --- |
//! | `WASMTIME_HTTP_PROXY_SOCKET_ADDR` | `0.0.0.0:8080` |
//! | `KWASI_HTTP_MAX_CONCURRENCY` | 64 per CPU of the cgroup, at most one per 16 MiB of its memory limit, 1 to 1000 |
//! | `KWASI_HTTP_MAX_QUEUE` | the concurrency |
//! | `KWASI_HTTP_MAX_BODY_BYTES` | 16 MiB |
//! | `KWASI_HTTP_MAX_HEADER_BYTES` | 64 KiB (at least 8192) |
//! | `KWASI_HTTP_DRAIN_SECONDS` | 25 |

mod body;
mod config;
mod server;

pub use body::{BodyError, RequestBody};
pub use config::*;
pub use server::{serve, Admission, ClientAddr, Handler, ServeError, Shutdown};
