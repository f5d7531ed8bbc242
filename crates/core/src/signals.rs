//! Signals in the container process.
//!
//! A wasm guest runs as PID 1 of its PID namespace. The kernel drops every signal sent to such a
//! process that has no handler, SIGKILL aside, so a guest sleeping in `poll_oneoff` would ignore
//! `ctr task kill` (SIGTERM). A guest cannot install handlers of its own (WASI has no signals),
//! so the container process installs them for it: each signal whose default action is to
//! terminate ends the process at once with the conventional status 128 + N.

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
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}
