//! The task's standard streams: containerd's fifos, opened by the shim and handed to the
//! container process as its descriptors 0, 1 and 2.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The paths containerd gives for a task's stdio; an empty path means `/dev/null`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// Read by the task.
    pub stdin: String,
    /// Written by the task.
    pub stdout: String,
    /// Written by the task.
    pub stderr: String,
}

pub(crate) struct OpenStdio {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

impl StdioPaths {
    /// Opens the three streams without blocking on a peer that has not opened its end yet.
    ///
    /// Output fifos are opened read-write, which never blocks; stdin is opened non-blocking and
    /// then switched back to blocking reads.
    pub(crate) fn open(&self) -> Result<OpenStdio> {
        Ok(OpenStdio {
            stdin: open_input(&self.stdin)?.into(),
            stdout: open_output(&self.stdout)?.into(),
            stderr: open_output(&self.stderr)?.into(),
        })
    }
}

fn open_input(path: &str) -> Result<File> {
    if path.is_empty() {
        return File::open("/dev/null").context("opening /dev/null");
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
    Ok(file)
}

fn open_output(path: &str) -> Result<File> {
    let path = if path.is_empty() { "/dev/null" } else { path };
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))
}
