//! Talking to a task that serves HTTP: a free port on loopback, waiting until it listens, and
//! requests with `ureq` (plain HTTP/1.1, keep-alive).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A loopback address with a port nobody listens on now. Each call in a process gets a port
/// no earlier call got, below Linux's ephemeral range (32768 and up): a port the kernel chose
/// could be handed again to a case running at the same time, or be a client's port, before
/// the server meant to listen on it binds it.
pub fn free_addr() -> SocketAddr {
    const FIRST: u32 = 10_000;
    const PORTS: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 200 * 100;
    for _ in 0..PORTS {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset + n) % PORTS;
        let addr = SocketAddr::from(([127, 0, 0, 1], port as u16));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + PORTS);
}

/// Whether something accepts connections at `addr` now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until something accepts connections at `addr`.
pub fn wait_listening(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if accepts(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP client that returns every status as a response, not an error.
pub fn client() -> ureq::Agent {
    ureq::config::Config::builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

/// `GET http://ADDR/PATH`: the status and body.
pub fn get(agent: &ureq::Agent, addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut response = agent
        .get(format!("http://{addr}{path}"))
        .call()
        .with_context(|| format!("GET {path}"))?;
    let body = response.body_mut().read_to_string()?;
    Ok((response.status().as_u16(), body))
}

/// `POST http://ADDR/PATH` with `body`: the status and body.
pub fn post(
    agent: &ureq::Agent,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut response = agent
        .post(format!("http://{addr}{path}"))
        .send(body)
        .with_context(|| format!("POST {path}"))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()?;
    Ok((response.status().as_u16(), body))
}

/// Sends `count` GET requests for `path` one after the other on a single connection and
/// returns their statuses: the connection stays open between them only with keep-alive.
pub fn get_on_one_connection(addr: SocketAddr, path: &str, count: usize) -> Result<Vec<u16>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut statuses = Vec::new();
    for _ in 0..count {
        write!(writer, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut status_line = String::new();
        reader.read_line(&mut status_line)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {status_line:?}"))?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        statuses.push(status);
    }
    Ok(statuses)
}

/// A server on a loopback port that answers every request `200` with `body` and counts the
/// connections it accepted; it lives as long as the test process.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Upstream {
    /// Starts one, answering `body`.
    pub fn start(body: &'static str) -> Result<Upstream> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = answer(stream, body);
            }
        });
        Ok(Upstream { addr, accepted })
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads a request's head from `stream` and answers `200` with `body`.
fn answer(stream: TcpStream, body: &str) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// `PUT http://ADDR/PATH` with `body`: the status and body.
pub fn put(
    agent: &ureq::Agent,
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut response = agent
        .put(format!("http://{addr}{path}"))
        .send(body)
        .with_context(|| format!("PUT {path}"))?;
    let body = response.body_mut().read_to_string()?;
    Ok((response.status().as_u16(), body))
}
