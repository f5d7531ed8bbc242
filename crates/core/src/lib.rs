//! # kwasi-core
//!
//! Everything in a kwasi shim that does not depend on the WebAssembly runtime.
//!
//! Read it in the order of a task's life:
//! - [`shim`]: the binary's entry point (`start`, `delete`, serve) over containerd-shim;
//! - [`task`]: the containerd task service, call by call (create, start, wait, kill, delete,
//!   state, pids, pause/resume, stats, connect, shutdown) and the events it publishes;
//! - [`sandbox`]: the container a task runs in (rootfs, namespaces, cgroup, seccomp,
//!   capabilities, user) built with youki's libcontainer, and its stdio;
//! - [`workload`]: what to run, read from the OCI spec: module, entry function, args, env,
//!   cwd, preopened directories;
//! - [`engine`]: the [`Engine`](engine::Engine) trait a runtime crate implements;
//! - [`http`]: the HTTP server of `wasi:http` components (listener, limits, drain);
//! - [`cache`]: the node-local cache of compiled modules;
//! - [`image`]: OCI images of wasm: reading a module from an image's wasm layer, and packing
//!   one into an image archive that `ctr images import` accepts;
//!
//! Exit statuses follow containerd's convention: the guest's exit code, or 128 + N when
//! signal N ended it.

#![deny(missing_docs)]

pub mod cache;
pub mod engine;
pub mod http;
pub mod image;
pub mod sandbox;
pub mod shim;
mod signals;
pub mod task;
pub mod workload;

pub use signals::wait_for_termination;

/// `prefix` followed by this process's id and the clock's nanoseconds: a file name that no
/// other process, nor this one a moment before, picks in the same directory.
fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The SHA-256 of `data`, in lowercase hex.
fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
