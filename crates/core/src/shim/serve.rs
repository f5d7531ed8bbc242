//! The long-lived shim server: the process `start` forks, serving containerd's task API over
//! ttrpc until containerd shuts it down.
//!
//! kwasi serves the task service under both of its names: `containerd.task.v2.Task`, which
//! containerd 1.6 and 1.7 call, and `containerd.task.v3.Task`, which containerd 2.x calls (the
//! messages are the same). containerd-shim's own server loop registers only the latter, hence
//! this one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use containerd_shim::monitor::monitor_notify_by_pid;
use containerd_shim::protos::shim::shim_ttrpc::create_task;
use containerd_shim::protos::ttrpc::Server;
use containerd_shim::util::write_address;
use containerd_shim::{Flags, Shim, StartOpts};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::ForkResult;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::KwasiShim;
use crate::engine::Engine;
use crate::sandbox::Zygote;

const TASK_V3: &str = "/containerd.task.v3.Task/";
const TASK_V2: &str = "/containerd.task.v2.Task/";

/// Forks the server off the `start` process (which has no thread yet, so forking is safe):
/// the child detaches into its own session, serves on `address` and exits when containerd
/// shuts it down; the parent returns at once.
pub(super) fn fork_server<E: Engine + Default>(opts: &StartOpts, address: &str) -> Result<()> {
    let flags = Flags {
        namespace: opts.namespace.clone(),
        id: opts.id.clone(),
        address: opts.address.clone(),
        socket: address.to_string(),
        debug: opts.debug,
        ..Default::default()
    };
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    // SAFETY: the start process is single-threaded here; the child only continues with
    // ordinary code and exits without returning into the caller.
    match unsafe { nix::unistd::fork() }.context("forking the shim server")? {
        ForkResult::Parent { .. } => Ok(()),
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            // stdout stays containerd's pipe until the server listens (see `close_stdout`).
            // SAFETY: dup2 onto our own standard descriptors.
            unsafe {
                libc::dup2(devnull.as_raw_fd(), libc::STDIN_FILENO);
                libc::dup2(devnull.as_raw_fd(), libc::STDERR_FILENO);
            }
            drop(devnull);
            if !opts.ttrpc_address.is_empty() {
                // SAFETY: single-threaded child, before any thread is spawned.
                unsafe { std::env::set_var("TTRPC_ADDRESS", &opts.ttrpc_address) };
            }
            let code = match serve(KwasiShim::<E>::for_flags(&flags), &flags) {
                Ok(()) => 0,
                Err(err) => {
                    log::error!("shim server: {err:#}");
                    1
                }
            };
            std::process::exit(code)
        }
    }
}

/// Serves `shim`'s task service on `flags.socket` until containerd calls `shutdown` with no
/// task left.
pub(super) fn serve<E: Engine + Default>(mut shim: KwasiShim<E>, flags: &Flags) -> Result<()> {
    // Block the signals the reaper thread waits for before any thread exists, so that every
    // thread inherits the mask and only `sigwait` sees them.
    let signals = signal_set();
    signals
        .thread_block()
        .context("blocking signals in the shim")?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes no pointer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("becoming a child subreaper");
    }
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .map_err(|e| anyhow!("setting up the shim log: {e}"))?;
    super::libcontainer_log::forward_to_log();
    if already_served(&flags.socket) {
        // Another server of the same group (pod) answers: containerd will use it.
        write_address(&flags.socket).map_err(|e| anyhow!("{e}"))?;
        close_stdout();
        return Ok(());
    }
    // Container processes are cloned from the zygote, forked now, while the shim has one
    // thread (ttrpc's clients and server start theirs).
    let zygote = Zygote::start(E::default()).context("starting the zygote")?;
    // The shim's threads (ttrpc's, about a dozen) share one malloc arena: each thread's own
    // arena would keep a few pages of its own, for a handful of small calls a minute. The
    // zygote, forked already, keeps glibc's default for the container processes.
    // SAFETY: mallopt sets one of glibc's malloc tunables; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }

    let socket_path = socket_path(&flags.socket).to_string();
    let _ = std::fs::remove_file(&socket_path);
    if let Some(dir) = std::path::Path::new(&socket_path).parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }

    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set by containerd")?;
    let service: Arc<dyn containerd_shim::Task + Send + Sync> =
        Arc::new(shim.task_service(zygote, &ttrpc_address));
    let v2: HashMap<_, _> = create_task(Arc::clone(&service))
        .into_iter()
        .map(|(name, handler)| (name.replacen(TASK_V3, TASK_V2, 1), handler))
        .collect();
    let mut server = Server::new()
        .bind(&flags.socket)
        .map_err(|e| anyhow!("listening on {}: {e}", flags.socket))?
        .register_service(create_task(service))
        .register_service(v2);
    std::thread::spawn(move || reap_children(signals));
    server
        .start()
        .map_err(|e| anyhow!("starting the ttrpc server: {e}"))?;
    close_stdout();
    log::info!("kwasi shim serving {}", flags.socket);

    shim.wait();
    log::info!("kwasi shim shutting down");
    let _ = std::fs::remove_file(&socket_path);
    if !within(SHUTDOWN_GRACE, move || server.shutdown()) {
        log::warn!(
            "the ttrpc server's connections did not close within {} ms; exiting without them",
            SHUTDOWN_GRACE.as_millis()
        );
    }
    Ok(())
}

/// How long ttrpc's shutdown may take before the shim exits without it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Runs `work` on a thread of its own and waits at most `grace` for it: whether it finished.
///
/// ttrpc's `Server::shutdown` closes every connection and joins their threads, which sends
/// the replies still in flight (the answer to containerd's `shutdown` among them). It can hang
/// for ever: under load, a connection's handler may be left waiting for a word from its reader
/// and workers, which all ended without one, and the shutdown then joins it without end (seen
/// with ttrpc 0.10 on a node with 4,000 mounts, twice in about 600 containers removed four to
/// eight at a time: the server and its zygote stayed after the container was deleted). The
/// process's exit closes whatever is left.
fn within(grace: Duration, work: impl FnOnce() + Send + 'static) -> bool {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    finished.recv_timeout(grace).is_ok()
}

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGPIPE,
    ] {
        set.add(s);
    }
    set
}

/// The file of the socket at `address`: `unix://PATH`, or a bare `PATH`.
fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Whether a live server already listens on `address` (`unix://PATH`). A bare connect, with
/// no ttrpc client (whose threads would forbid a later fork).
pub(super) fn already_served(address: &str) -> bool {
    UnixStream::connect(socket_path(address)).is_ok()
}

/// Removes the socket file at `address` (`unix://PATH`) unless a server answers on it: a
/// server killed before it could remove its own leaves it.
pub(super) fn remove_dead_socket(address: &str) {
    if already_served(address) {
        return;
    }
    let path = socket_path(address);
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed the socket {path} of a dead shim server"),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => log::warn!("removing the socket {path}: {err}"),
    }
}

/// Tells the `start` process, which reads our stdout until it closes, that we are serving.
fn close_stdout() {
    // SAFETY: dup2 on the process's own standard descriptors.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

/// Waits for signals; on SIGCHLD reaps every exited child and reports it to containerd-shim's
/// monitor (exit code, or 128 + N for signal N). SIGTERM, SIGINT and SIGPIPE are ignored:
/// containerd ends a shim with `shutdown`.
fn reap_children(signals: SigSet) {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => notify(pid, code),
                    Ok(WaitStatus::Signaled(pid, sig, _)) => notify(pid, 128 + sig as i32),
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(err) => {
                        log::warn!("waitpid: {err}");
                        break;
                    }
                }
            },
            Ok(sig) => log::debug!("ignoring {sig}"),
            Err(err) => log::warn!("sigwait: {err}"),
        }
    }
}

fn notify(pid: Pid, code: i32) {
    if let Err(err) = monitor_notify_by_pid(pid.as_raw(), code) {
        log::warn!("reporting the exit of {pid}: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shutdown_that_finishes_is_waited_for() {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(within(Duration::from_secs(10), move || {
            let _ = tx.send(());
        }));
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn a_shutdown_that_hangs_is_given_up_after_the_grace() {
        let (_keep, hang) = std::sync::mpsc::channel::<()>();
        assert!(!within(Duration::from_millis(50), move || {
            let _ = hang.recv();
        }));
    }
}
