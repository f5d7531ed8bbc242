//! The zygote: a process forked from the shim server before the server starts any thread, from
//! which every container process descends.
//!
//! libcontainer clones a container's first process with a raw `clone3`, which copies the
//! calling thread alone. Cloned from the shim, which runs threads (ttrpc starts and ends one
//! per burst of requests), that copy can hold a lock another thread held at that instant:
//! std's registry of threads, which every thread takes when it exits, or one of malloc's
//! arenas. Nothing is left in the copy to release it, so the new process hangs for ever, and
//! with it `create` or `exec` (a kubelet exec probe never returns).
//!
//! So the shim forks once, early, while it has one thread: the zygote. It stays
//! single-threaded. For each create or exec it forks a worker (the fork of a single-threaded
//! process copies no held lock), which builds the process with libcontainer, answers and
//! exits. The container's processes, orphaned then, are adopted by the shim, a child
//! subreaper, which reaps them as it always did.
//!
//! The shim and the zygote talk over a seqpacket socket: one message per request, JSON and
//! descriptors (a socket for the answer, the process's stdio, and the image's layers in a
//! memfd). A module's layer comes unread at first (its header only): the worker looks its
//! compiled form up in the compile cache, and only when it is not there asks the shim, over
//! the answer's socket, for the whole layer. A warm start of a large module then costs what a
//! small one does: its bytes are neither read from containerd nor copied.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::memfd::MemFdCreateFlag;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

use super::executor::WasmExecutor;
use super::{exec, ProcessStdio};
use crate::cache::{CompileCache, Stored};
use crate::engine::Engine;
use crate::image::layers::{ImageContent, ImageReader, WasmLayer};

/// The largest request: a process spec's seccomp profile is the bulk of it.
const MAX_MESSAGE: usize = 1 << 20;

/// The shim's handle on its zygote. Requests may come from any thread, several at a time.
pub struct Zygote {
    socket: OwnedFd,
    /// Whether the zygote opened the compile cache.
    caches: bool,
}

/// An image's content on its way to a container process, and where to read what it left
/// unread.
pub(crate) struct Image<'a> {
    /// The layers read so far.
    pub(crate) content: ImageContent,
    /// containerd, for the rest.
    pub(crate) reader: &'a ImageReader,
}

/// The zygote's answers, on a request's own socket.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    /// The process is built: its pid.
    Built(i32),
    /// It could not be: why.
    Failed(String),
    /// The module is not in the compile cache: send the whole image (its memfd).
    ReadModule,
}

/// What the shim asks the zygote to build.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    /// The container's id.
    pub(crate) id: String,
    /// libcontainer's state root, where the container's state directory is.
    pub(crate) state_root: PathBuf,
    /// The process.
    pub(crate) process: Process,
}

/// Which process a [`Request`] builds.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Process {
    /// The container and its init process, from the bundle at `bundle`.
    Init {
        /// The bundle directory.
        bundle: PathBuf,
        /// Whether systemd manages the container's cgroup.
        systemd: bool,
    },
    /// An exec process in a running container.
    Exec {
        /// The process spec, a JSON file (as `runc exec --process` reads).
        process_file: PathBuf,
        /// The container's seccomp profile, which the exec process installs.
        seccomp: Option<LinuxSeccomp>,
    },
}

/// The header of a request's message, which says what follows the answer socket: the
/// process's three stdio descriptors unless it has a terminal (`terminal`: the console socket
/// libcontainer sends the terminal's master to), then the image's memfd if `image`.
#[derive(Serialize, Deserialize)]
struct Envelope {
    request: Request,
    terminal: Option<PathBuf>,
    image: bool,
}

impl Zygote {
    /// Forks the zygote, which runs containers with `engine` and compiles through the compile
    /// cache (when it can be opened). Call it while the process has a single thread: it fails
    /// otherwise.
    pub fn start<E: Engine>(engine: E) -> Result<Zygote> {
        let threads = std::fs::read_dir("/proc/self/task")
            .context("counting the shim's threads")?
            .count();
        if threads > 1 {
            bail!("the zygote must be forked before the shim starts a thread ({threads} run)");
        }
        let cache = match CompileCache::open(&CompileCache::root_from_env(), engine.name()) {
            Ok(cache) => Some(Arc::new(cache)),
            Err(err) => {
                log::warn!(
                    "compile cache {} unusable, compiling at every start: {err}",
                    CompileCache::root_from_env().display()
                );
                None
            }
        };
        let (ours, theirs) = seqpacket_pair().context("creating the zygote's socket")?;
        let shim = nix::unistd::getpid();
        // SAFETY: the process has one thread (checked above); the child runs the zygote's
        // loop and ends with `_exit`, never returning into the caller.
        match unsafe { fork() }.context("forking the zygote")? {
            ForkResult::Parent { .. } => Ok(Zygote {
                socket: ours,
                caches: cache.is_some(),
            }),
            ForkResult::Child => {
                drop(ours);
                let code = serve(theirs, shim, engine, cache);
                // SAFETY: ends the zygote without running the shim's exit handlers.
                unsafe { libc::_exit(code) }
            }
        }
    }

    /// Whether a module may be found compiled in the cache: then its layer need not be read
    /// before the zygote asks for it ([`ImageContent::UnreadModule`]).
    pub(crate) fn caches(&self) -> bool {
        self.caches
    }

    /// Builds the process `request` asks for, with `stdio` and the image's layers, and returns
    /// its pid once libcontainer has created it.
    pub(crate) fn build(
        &self,
        request: Request,
        stdio: ProcessStdio,
        image: Option<Image<'_>>,
    ) -> Result<i32> {
        let (answer, answer_theirs) =
            seqpacket_pair().context("creating a socket for the zygote's answer")?;
        let memfd = image
            .as_ref()
            .map(|image| write_image(&image.content))
            .transpose()?;
        let mut fds = vec![answer_theirs.as_raw_fd()];
        let terminal = match &stdio {
            ProcessStdio::Terminal(socket) => Some(socket.clone()),
            ProcessStdio::Streams {
                stdin,
                stdout,
                stderr,
            } => {
                fds.extend([stdin, stdout, stderr].map(AsRawFd::as_raw_fd));
                None
            }
        };
        fds.extend(memfd.iter().map(AsRawFd::as_raw_fd));
        let envelope = Envelope {
            request,
            terminal,
            image: memfd.is_some(),
        };
        let json = serde_json::to_vec(&envelope).context("encoding the zygote's request")?;
        send(&self.socket, &json, &fds).context("asking the zygote (is it still running?)")?;
        // Only the worker holds the answer's other end now: its exit ends the wait.
        drop(answer_theirs);
        drop(stdio);
        drop(memfd);
        loop {
            let (reply, _) = receive(&answer, 0)
                .context("reading the zygote's answer")?
                .ok_or_else(|| anyhow!("the zygote's worker exited without an answer"))?;
            match serde_json::from_slice(&reply).context("decoding the zygote's answer")? {
                Answer::Built(pid) => return Ok(pid),
                Answer::Failed(message) => bail!(message),
                Answer::ReadModule => {
                    let Some(Image {
                        content: ImageContent::UnreadModule(layer),
                        reader,
                    }) = &image
                    else {
                        bail!("the zygote's worker asked for a module the request did not name");
                    };
                    let started = std::time::Instant::now();
                    let whole = ImageContent::Module(reader.read_module(layer)?);
                    log::info!(
                        "{}: wasm layer {} not in the compile cache; read from containerd in \
                         {:.1} ms",
                        envelope.request.id,
                        layer.digest,
                        started.elapsed().as_secs_f64() * 1000.0
                    );
                    let memfd = write_image(&whole)?;
                    send(&answer, b"", &[memfd.as_raw_fd()])
                        .context("sending the module to the zygote's worker")?;
                }
            }
        }
    }
}

/// The zygote's loop: a worker per request, until the shim closes its end of `socket`.
fn serve<E: Engine>(
    socket: OwnedFd,
    shim: Pid,
    engine: E,
    cache: Option<Arc<CompileCache>>,
) -> i32 {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string that outlives the call; the other
    // calls take no pointer. The zygote is named (`ps -e` shows `kwasi-zygote`; its command
    // line stays the shim's) and dies with the shim; the kernel reaps its workers (a worker
    // sets SIGCHLD back before it waits for its own children); and stdout, which containerd
    // may read until every holder closes it, is let go.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"kwasi-zygote".as_ptr(), 0, 0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::signal(libc::SIGCHLD, libc::SIG_IGN);
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
    if nix::unistd::getppid() != shim {
        return 0;
    }
    loop {
        let (message, fds) = match receive(&socket, 1 + 3 + 1) {
            Ok(Some(received)) => received,
            Ok(None) => return 0,
            Err(err) => {
                log::error!("zygote: {err:#}");
                return 1;
            }
        };
        let mut fds = fds.into_iter();
        let Some(answer) = fds.next() else {
            log::error!("zygote: a request came without its answer socket");
            continue;
        };
        // SAFETY: the zygote has one thread; the worker ends with `_exit`.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(socket);
                // SAFETY: signal takes no pointer; libcontainer waits for its children.
                unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
                let built = match work(&engine, &cache, &message, &answer, fds) {
                    Ok(pid) => Answer::Built(pid),
                    Err(err) => Answer::Failed(format!("{err:#}")),
                };
                let reply = serde_json::to_vec(&built).unwrap_or_default();
                if let Err(err) = send(&answer, &reply, &[]) {
                    log::error!("zygote: answering the shim: {err}");
                }
                // SAFETY: ends the worker without running exit handlers.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { .. }) => {}
            Err(err) => {
                let refused = Answer::Failed(format!("forking the zygote's worker: {err}"));
                let reply = serde_json::to_vec(&refused).unwrap_or_default();
                let _ = send(&answer, &reply, &[]);
            }
        }
    }
}

/// What a worker does: builds the process of the request in `message` with the descriptors
/// that came with it (asking the shim on `answer` for a module it needs whole), and returns
/// its pid.
fn work<E: Engine>(
    engine: &E,
    cache: &Option<Arc<CompileCache>>,
    message: &[u8],
    answer: &OwnedFd,
    mut fds: impl Iterator<Item = OwnedFd>,
) -> Result<i32> {
    let envelope: Envelope =
        serde_json::from_slice(message).context("decoding the shim's request")?;
    let mut next = |what: &str| {
        fds.next()
            .ok_or_else(|| anyhow!("the shim's request came without {what}"))
    };
    let stdio = match envelope.terminal {
        Some(socket) => ProcessStdio::Terminal(socket),
        None => ProcessStdio::Streams {
            stdin: next("stdin")?,
            stdout: next("stdout")?,
            stderr: next("stderr")?,
        },
    };
    let image = match envelope.image {
        true => Some(read_image(next("the image")?)?),
        false => None,
    };
    let request = envelope.request;
    match request.process {
        Process::Init { bundle, systemd } => {
            let (image, stored) = match image {
                Some(ImageContent::UnreadModule(layer)) => {
                    cached_or_whole(engine, cache.as_deref(), layer, answer)?
                }
                image => (image, None),
            };
            let executor =
                WasmExecutor::new(engine.clone(), cache.clone(), image.map(Arc::new), stored);
            super::build_init(
                &request.id,
                &request.state_root,
                executor,
                stdio,
                &bundle,
                systemd,
            )
        }
        Process::Exec {
            process_file,
            seccomp,
        } => {
            let executor = WasmExecutor::for_exec(engine.clone(), cache.clone(), seccomp);
            exec::build(
                &request.id,
                &request.state_root,
                executor,
                stdio,
                &process_file,
            )
        }
    }
}

/// An unread module's compiled form from the cache, or, when the cache has none, the whole
/// module, which the worker asks the shim for on `answer`.
fn cached_or_whole<E: Engine>(
    engine: &E,
    cache: Option<&CompileCache>,
    layer: WasmLayer,
    answer: &OwnedFd,
) -> Result<(Option<ImageContent>, Option<Stored>)> {
    let stored = cache
        .zip(layer.sha256())
        .and_then(|(cache, key)| cache.lookup(engine, key));
    if let Some(stored) = stored {
        return Ok((Some(ImageContent::UnreadModule(layer)), Some(stored)));
    }
    let reply = serde_json::to_vec(&Answer::ReadModule).context("encoding a request")?;
    send(answer, &reply, &[]).context("asking the shim for the module")?;
    let (_, fds) = receive(answer, 1)?
        .ok_or_else(|| anyhow!("the shim closed the request before sending the module"))?;
    let memfd = fds
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the shim sent no module"))?;
    match read_image(memfd)? {
        whole @ ImageContent::Module(_) => Ok((Some(whole), None)),
        _ => bail!("the shim sent something other than the module"),
    }
}

/// A connected pair of seqpacket sockets, closed on exec.
fn seqpacket_pair() -> nix::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// Sends one message with descriptors `fds`.
fn send(socket: &OwnedFd, message: &[u8], fds: &[RawFd]) -> Result<()> {
    let iov = [IoSlice::new(message)];
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives one message and up to `max_fds` descriptors; `None` when the peer has closed.
fn receive(socket: &OwnedFd, max_fds: usize) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buffer = vec![0u8; MAX_MESSAGE];
    let mut control = nix::cmsg_space!([RawFd; 8]);
    debug_assert!(max_fds <= 8);
    let (length, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let received = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            received => received?,
        };
        let mut fds = Vec::new();
        for message in received.cmsgs()? {
            if let ControlMessageOwned::ScmRights(rights) = message {
                // SAFETY: the kernel just gave us these descriptors; nothing else owns them.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let truncated = received
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
        break (received.bytes, fds, truncated);
    };
    if truncated || fds.len() > max_fds {
        bail!("a message larger than {MAX_MESSAGE} bytes or {max_fds} descriptors");
    }
    if length == 0 && fds.is_empty() {
        return Ok(None);
    }
    buffer.truncate(length);
    Ok(Some((buffer, fds)))
}

/// A layer of the image, as [`write_image`] lays it out: its bytes follow the header.
#[derive(Serialize, Deserialize)]
struct LayerHeader {
    digest: String,
    media_type: String,
    title: Option<String>,
    length: usize,
}

/// Which [`ImageContent`] an image in a memfd is.
#[derive(Serialize, Deserialize)]
enum Kind {
    Module,
    UnreadModule,
    Application,
}

/// The header of an image in a memfd.
#[derive(Serialize, Deserialize)]
struct ImageHeader {
    kind: Kind,
    layers: Vec<LayerHeader>,
}

/// The image's layers in a memfd: the header's length (8 bytes, little-endian), the header
/// (JSON), then each layer's bytes.
fn write_image(image: &ImageContent) -> Result<OwnedFd> {
    let (kind, layers) = match image {
        ImageContent::Module(layer) => (Kind::Module, std::slice::from_ref(layer)),
        ImageContent::UnreadModule(layer) => (Kind::UnreadModule, std::slice::from_ref(layer)),
        ImageContent::Application(layers) => (Kind::Application, layers.as_slice()),
    };
    let header = ImageHeader {
        kind,
        layers: layers
            .iter()
            .map(|layer| LayerHeader {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                title: layer.title.clone(),
                length: layer.bytes.len(),
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header).context("encoding the image's layers")?;
    let fd = nix::sys::memfd::memfd_create(c"kwasi-image", MemFdCreateFlag::MFD_CLOEXEC)
        .context("creating a memfd for the image")?;
    let mut file = File::from(fd);
    let written = file
        .write_all(&(header.len() as u64).to_le_bytes())
        .and_then(|()| file.write_all(&header))
        .and_then(|()| layers.iter().try_for_each(|l| file.write_all(&l.bytes)))
        .and_then(|()| file.rewind());
    written.context("writing the image to a memfd")?;
    Ok(file.into())
}

/// Reads back what [`write_image`] wrote.
fn read_image(fd: OwnedFd) -> Result<ImageContent> {
    let mut file = File::from(fd);
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .context("reading the image's header")?;
    let mut header = vec![0u8; u64::from_le_bytes(length) as usize];
    file.read_exact(&mut header)
        .context("reading the image's header")?;
    let header: ImageHeader =
        serde_json::from_slice(&header).context("decoding the image's header")?;
    let mut layers = Vec::with_capacity(header.layers.len());
    for layer in header.layers {
        let mut bytes = vec![0u8; layer.length];
        file.read_exact(&mut bytes)
            .with_context(|| format!("reading layer {}", layer.digest))?;
        layers.push(WasmLayer {
            digest: layer.digest,
            media_type: layer.media_type,
            title: layer.title,
            bytes,
        });
    }
    match (header.kind, layers.len()) {
        (Kind::Application, _) => Ok(ImageContent::Application(layers)),
        (Kind::Module, 1) => Ok(ImageContent::Module(layers.remove(0))),
        (Kind::UnreadModule, 1) => Ok(ImageContent::UnreadModule(layers.remove(0))),
        (_, n) => bail!("a module image with {n} layers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineError, WasmBytes, Workload};

    /// An engine the zygote is never asked to run anything with.
    #[derive(Clone)]
    struct Inert;

    impl Engine for Inert {
        type Module = ();
        fn name(&self) -> &'static str {
            "inert"
        }
        fn compile(&self, _: &WasmBytes) -> Result<(), EngineError> {
            Ok(())
        }
        fn exports_entry(&self, _: &(), _: &str) -> bool {
            false
        }
        fn run(&self, _: (), _: &Workload) -> Result<i32, EngineError> {
            Ok(0)
        }
    }

    #[test]
    fn the_zygote_is_not_forked_from_a_process_that_has_threads() {
        // The test harness runs this test on a thread of its own: the process has two.
        let Err(err) = Zygote::start(Inert) else {
            panic!("a zygote was forked from a multi-threaded process");
        };
        assert!(
            err.to_string().contains("before the shim starts a thread"),
            "{err}"
        );
    }

    fn layer(digest: &str, bytes: &[u8]) -> WasmLayer {
        WasmLayer {
            digest: digest.into(),
            media_type: "application/vnd.wasm.content.layer.v1+wasm".into(),
            title: Some(format!("{digest}.wasm")),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn a_module_image_comes_back_from_its_memfd_unchanged() {
        let image = ImageContent::Module(layer("sha256:a", b"\0asm module"));
        let ImageContent::Module(back) = read_image(write_image(&image).unwrap()).unwrap() else {
            panic!("not a module");
        };
        assert_eq!(back.digest, "sha256:a");
        assert_eq!(back.title.as_deref(), Some("sha256:a.wasm"));
        assert_eq!(back.bytes, b"\0asm module");
    }

    #[test]
    fn an_unread_module_comes_back_from_its_memfd_still_unread() {
        let image = ImageContent::UnreadModule(layer("sha256:a", b"\0asm\x01\0\0\0"));
        let back = read_image(write_image(&image).unwrap()).unwrap();
        let ImageContent::UnreadModule(back) = back else {
            panic!("not an unread module: {back:?}");
        };
        assert_eq!(back.digest, "sha256:a");
        assert_eq!(back.bytes, b"\0asm\x01\0\0\0");
    }

    #[test]
    fn an_application_image_keeps_its_layers_in_order() {
        let image = ImageContent::Application(vec![
            layer("sha256:a", b"first"),
            layer("sha256:b", b""),
            layer("sha256:c", b"third"),
        ]);
        let ImageContent::Application(back) = read_image(write_image(&image).unwrap()).unwrap()
        else {
            panic!("not an application");
        };
        let digests: Vec<_> = back.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:a", "sha256:b", "sha256:c"]);
        assert_eq!(back[2].bytes, b"third");
    }

    #[test]
    fn a_message_and_its_descriptors_cross_the_socket() {
        let (a, b) = seqpacket_pair().unwrap();
        let file = write_image(&ImageContent::Module(layer("sha256:x", b"bytes"))).unwrap();
        send(&a, b"hello", &[file.as_raw_fd()]).unwrap();
        let (message, fds) = receive(&b, 1).unwrap().unwrap();
        assert_eq!(message, b"hello");
        let ImageContent::Module(back) = read_image(fds.into_iter().next().unwrap()).unwrap()
        else {
            panic!("not a module");
        };
        assert_eq!(back.bytes, b"bytes");
    }

    #[test]
    fn a_closed_peer_reads_as_none() {
        let (a, b) = seqpacket_pair().unwrap();
        drop(a);
        assert!(receive(&b, 0).unwrap().is_none());
    }

    #[test]
    fn a_message_with_more_descriptors_than_expected_is_refused() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, y) = (a.as_raw_fd(), b.as_raw_fd());
        send(&a, b"two", &[x, y]).unwrap();
        assert!(receive(&b, 1).is_err());
    }
}
