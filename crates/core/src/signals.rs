//! Signals in the container process.
//!
//! A wasm guest runs as PID 1 of its PID namespace. The kernel drops every signal sent to such a
//! process that has no handler, SIGKILL aside, so a guest sleeping in `poll_oneoff` would ignore
//! `ctr task kill` (SIGTERM). A guest cannot install handlers of its own (WASI has no signals),
//! so the container process installs them for it: each signal whose default action is to
//! terminate ends the process at once with the conventional status 128 + N.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use libc::c_int;

/// The signals that terminate a process by default and that a container is sent in practice.
const TERMINATING: &[c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

extern "C" fn exit_with_signal_status(sig: c_int) {
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// Makes each terminating signal end this process with status 128 + N, and unblocks every
/// signal (the shim's threads block the ones its reaper waits for, and a cloned process
/// inherits that mask).
///
/// Call it in the container process just before running the guest. Failures are ignored: the
/// only effect would be the kernel's default (ignoring the signal as PID 1).
pub(crate) fn exit_on_termination_signals() {
    // SAFETY: plain sigaction/sigprocmask calls with a handler that only calls `_exit`.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = exit_with_signal_status as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        for &sig in TERMINATING {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    unblock_all_signals();
}

/// Unblocks every signal in the calling thread.
fn unblock_all_signals() {
    // SAFETY: sigemptyset and pthread_sigmask on a local set.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// Gives a native program the signal state a freshly executed process expects: nothing
/// blocked (the shim's threads block the signals its reaper waits for, and a mask survives
/// `exec`) and SIGPIPE at its default action (Rust's runtime ignores it, which also survives
/// `exec`). Handlers need no reset: `exec` resets them.
pub(crate) fn restore_for_exec() {
    // SAFETY: setting a signal's disposition to its default.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    unblock_all_signals();
}

/// Where [`notify_termination`] signals SIGTERM and SIGINT: an eventfd, or -1.
static TERMINATION_EVENTFD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn notify_termination(_: c_int) {
    let fd = TERMINATION_EVENTFD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: `write` is async-signal-safe; the eventfd lives as long as the process.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Makes SIGTERM and SIGINT readable events on a non-blocking eventfd instead of ending the
/// process: for a workload that shuts down by itself (the HTTP server drains).
///
/// Our own handler, not an async runtime's: the container process is a copy of the shim,
/// whose signal bookkeeping (signal-hook's, which tokio uses) it inherits, so such a library
/// may believe its handler is still installed when ours has replaced it.
pub(crate) fn termination_as_event() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    TERMINATION_EVENTFD.store(fd.as_raw_fd(), Ordering::Relaxed);
    // SAFETY: a plain sigaction with a handler that only writes to the eventfd.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = notify_termination as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(fd)
}

/// Blocks until SIGTERM or SIGINT comes to this process: for a workload with no server of its
/// own that runs until it is told to stop (an app whose triggers wait for messages).
pub fn wait_for_termination() -> std::io::Result<()> {
    let event = termination_as_event()?;
    loop {
        let mut poll = libc::pollfd {
            fd: event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, and an 8-byte buffer for the eventfd's counter.
        unsafe {
            if libc::poll(&mut poll, 1, -1) < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    return Err(err);
                }
                continue;
            }
            let mut count: u64 = 0;
            if libc::read(event.as_raw_fd(), (&mut count as *mut u64).cast(), 8) == 8 {
                return Ok(());
            }
        }
    }
}
