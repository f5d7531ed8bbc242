//! A process's standard streams: containerd's fifos, opened by the shim and handed to the
//! container process as its descriptors 0, 1 and 2 (or, on a terminal, copied to and from it:
//! `console`).
//!
//! Standard input follows containerd's contract: the process reads end of file once the
//! client has closed its end *and* asked the shim to close stdin (`CloseIO`, which `ctr` and
//! CRI send when their input ends). The shim holds a writer on the fifo until then, so that
//! a client that has not opened its end yet, or reopens it, does not end the input early.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The paths containerd gives for a process's stdio; an empty path means `/dev/null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Read by the process.
    pub stdin: String,
    /// Written by the process.
    pub stdout: String,
    /// Written by the process.
    pub stderr: String,
}

/// The three descriptors for a process, and the shim's hold on its stdin.
pub(crate) struct OpenStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// The shim's writer on the stdin fifo: dropping it lets the process read end of file.
    pub(crate) stdin_writer: Option<File>,
}

impl StdioPaths {
    /// Opens the three streams without blocking on a peer that has not opened its end yet.
    ///
    /// Output fifos are opened read-write, which never blocks; stdin is opened non-blocking,
    /// switched back to blocking reads, and held open for writing by the shim.
    pub(crate) fn open(&self) -> Result<OpenStdio> {
        let stdin = open_input(&self.stdin)?;
        let stdin_writer = if self.stdin.is_empty() {
            None
        } else {
            Some(
                OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&self.stdin)
                    .with_context(|| format!("holding stdin {}", self.stdin))?,
            )
        };
        Ok(OpenStdio {
            stdin,
            stdout: open_output(&self.stdout)?,
            stderr: open_output(&self.stderr)?,
            stdin_writer,
        })
    }
}

/// Opens an input fifo for blocking reads (`/dev/null` for an empty path).
pub(crate) fn open_input(path: &str) -> Result<OwnedFd> {
    if path.is_empty() {
        return Ok(File::open("/dev/null").context("opening /dev/null")?.into());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening stdin {path}"))?;
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        FcntlArg::F_SETFL(OFlag::empty()),
    )
    .with_context(|| format!("making stdin {path} blocking"))?;
    Ok(file.into())
}

/// Opens an output fifo without blocking (`/dev/null` for an empty path).
pub(crate) fn open_output(path: &str) -> Result<OwnedFd> {
    let path = if path.is_empty() { "/dev/null" } else { path };
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))?
        .into())
}
