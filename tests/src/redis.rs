//! A private Redis server (Debian's redis-server) on a free loopback port, for the Redis
//! trigger and outbound Redis: no persistence, stopped when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running redis-server.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one and waits until it answers.
    pub fn start() -> Result<Redis> {
        let addr = crate::http::free_addr();
        let dir = tempfile::tempdir()?;
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (Debian's redis-server package)")?;
        let redis = Redis {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.cli(&["PING"])? != "PONG" {
            if Instant::now() > deadline {
                bail!("redis-server on {addr} does not answer");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Its address as a Redis URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// What `redis-cli` prints for `args`, trimmed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .context("running redis-cli")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Waits until `args` prints `expected`; what it printed last otherwise.
    pub fn wait_for(&self, args: &[&str], expected: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.cli(args)?;
            if got == expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-cli {args:?} printed {got:?}, not {expected:?}, for {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
