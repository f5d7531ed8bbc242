//! Terminals. For a process with `terminal: true`, libcontainer opens a pseudo-terminal inside
//! the container and sends its master end over a unix socket (runc's `--console-socket`):
//! the shim listens on one ([`ConsoleSocket`]), takes the master, and copies between it and
//! containerd's fifos ([`Console`]): stdin into the terminal, the terminal into stdout (a
//! terminal has no separate stderr).

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::stdio::{open_input, open_output, StdioPaths};

/// How long the shim waits for the master once the process is created.
const MASTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A unix socket the shim listens on for one terminal's master.
pub(crate) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Listens on a new socket in `dir`, the state root beside the containers' state
    /// directories (a path short enough for a socket's): its name starts with a dot, which no
    /// container id can, and it is removed when dropped.
    pub(crate) fn bind(dir: &Path) -> Result<ConsoleSocket> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(".{}.sock", crate::unique_name("console")));
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("listening on {}", path.display()))?;
        Ok(ConsoleSocket { listener, path })
    }

    /// Where it listens (libcontainer's `with_console_socket`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the master libcontainer sent (the process is created by then: its connection
    /// and message wait in the socket) and starts copying between it and `stdio`.
    pub(crate) fn receive(self, stdio: &StdioPaths) -> Result<Console> {
        self.listener.set_nonblocking(true)?;
        let deadline = std::time::Instant::now() + MASTER_TIMEOUT;
        let (stream, _) = loop {
            match self.listener.accept() {
                Ok(accepted) => break accepted,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        bail!("no terminal came from the container within {MASTER_TIMEOUT:?}");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(err) => return Err(err).context("accepting the terminal's connection"),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(MASTER_TIMEOUT))?;
        let master = receive_fd(stream.as_raw_fd())?;
        Console::start(master, stdio)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receives one descriptor (SCM_RIGHTS) from a unix socket.
fn receive_fd(socket: RawFd) -> Result<OwnedFd> {
    let mut name = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receiving the terminal's master")?;
    for cmsg in message.cmsgs().context("reading the terminal's message")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(anyhow!("the container sent no terminal"))
}

/// A process's terminal, as the shim holds it: its master, and the threads that copy
/// between it and containerd's fifos.
pub(crate) struct Console {
    master: Arc<OwnedFd>,
    /// Closed by `close_stdin`: the stdin copy stops.
    stdin_open: Arc<Mutex<bool>>,
}

impl Console {
    fn start(master: OwnedFd, stdio: &StdioPaths) -> Result<Console> {
        let master = Arc::new(master);
        let stdin_open = Arc::new(Mutex::new(true));
        let output = File::from(open_output(&stdio.stdout)?);
        let from_master = File::from(master.try_clone().context("copying the terminal's fd")?);
        std::thread::spawn(move || copy(from_master, output));
        if !stdio.stdin.is_empty() {
            let input = File::from(open_input(&stdio.stdin)?);
            let to_master = File::from(master.try_clone().context("copying the terminal's fd")?);
            let open = Arc::clone(&stdin_open);
            std::thread::spawn(move || copy_while(input, to_master, &open));
        }
        Ok(Console { master, stdin_open })
    }

    /// Sets the terminal's size.
    pub(crate) fn resize(&self, width: u32, height: u32) -> Result<()> {
        let size = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer, which outlives the call.
        let done = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if done != 0 {
            return Err(std::io::Error::last_os_error()).context("resizing the terminal");
        }
        Ok(())
    }

    /// Stops copying stdin into the terminal, and sends it end of file (`^D`), as a user
    /// closing their input would.
    pub(crate) fn close_stdin(&self) -> Result<()> {
        let mut open = self.stdin_open.lock().unwrap_or_else(|p| p.into_inner());
        if *open {
            *open = false;
            let mut master = File::from(self.master.try_clone()?);
            master
                .write_all(&[4])
                .context("sending end of file to the terminal")?;
        }
        Ok(())
    }
}

/// Copies until either side ends (the terminal reports EIO once its process is gone).
fn copy(mut from: File, mut to: File) {
    let _ = std::io::copy(&mut from, &mut to);
}

/// Copies `from` into `to` while `open` holds.
fn copy_while(mut from: File, mut to: File, open: &Mutex<bool>) {
    let mut buf = [0u8; 8192];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !*open.lock().unwrap_or_else(|p| p.into_inner()) || to.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
