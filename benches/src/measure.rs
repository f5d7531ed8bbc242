//! What the benchmarks share: medians, checked runs, the CRI node. Each benchmark includes
//! this module and uses its part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kwasi_e2e::cri::Node;
use kwasi_e2e::{Containerd, CtrOutput, Release, Shim, TMP_PREFIX};

/// Bytes in a MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// The node memory the extrapolations of how many containers or pods fit fill: 24 GiB.
pub const NODE_BYTES: f64 = 24.0 * 1024.0 * 1024.0 * 1024.0;

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median (the upper one for an even count).
pub fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Fails unless the run exited 0 and printed `expected` (trimmed).
pub fn check(out: &CtrOutput, expected: &str) -> Result<()> {
    if out.status != 0 || out.stdout.trim() != expected {
        bail!("unexpected run: {out:?}");
    }
    Ok(())
}

/// A containerd 2.x node with CRI on and the probe guest imported (its image reference), and
/// the handlers to alternate: `runc` first, the baseline, then every built kwasi shim's.
pub fn cri_bench_node() -> Result<(Node, String, Vec<&'static str>)> {
    let shims = Shim::built_ones();
    if shims.is_empty() {
        bail!("no shim is built: cargo build --release");
    }
    let mut node = Node::start(Release::V2)?;
    let probe = node.wasm_image("probe.wasm")?;
    let handlers = ["runc"]
        .into_iter()
        .chain(shims.iter().map(|s| s.engine))
        .collect();
    Ok((node, probe, handlers))
}

/// What one `wrk` run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests per second.
    pub rps: f64,
    /// The 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// How hard and how long to load each server.
pub struct LoadPlan {
    /// Alternated rounds.
    pub rounds: usize,
    /// The length of one `wrk` run.
    pub seconds: u64,
    /// `wrk`'s connections.
    pub connections: u64,
}

/// Loads `a` and `b` in alternated rounds after a warm-up each; prints each round, the
/// medians and the ratios a / b.
pub fn compare(load: &LoadPlan, a: (&str, SocketAddr), b: (&str, SocketAddr)) -> Result<()> {
    let LoadPlan {
        rounds,
        seconds,
        connections,
    } = *load;
    println!("wrk -t2 -c{connections} -d{seconds}s, {rounds} alternated rounds");
    // Warm-up: the first requests fill the pools and caches of both servers.
    wrk(a.1, 2, connections)?;
    wrk(b.1, 2, connections)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let x = wrk(a.1, seconds, connections)?;
        let y = wrk(b.1, seconds, connections)?;
        println!(
            "round {round}: {} {:>9.0} rps p99 {:>6.2} ms | {} {:>9.0} rps p99 {:>6.2} ms",
            a.0, x.rps, x.p99_ms, b.0, y.rps, y.p99_ms
        );
        ours.push(x);
        theirs.push(y);
    }
    let (ours_rps, ours_p99) = medians(&ours);
    let (theirs_rps, theirs_p99) = medians(&theirs);
    println!(
        "median: {} {ours_rps:.0} rps, p99 {ours_p99:.2} ms | {} {theirs_rps:.0} rps, \
         p99 {theirs_p99:.2} ms | rps ratio {:.2} x, p99 ratio {:.2} x",
        a.0,
        b.0,
        ours_rps / theirs_rps,
        ours_p99 / theirs_p99
    );
    Ok(())
}

fn medians(loads: &[Load]) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(loads.iter().map(|l| l.rps).collect()),
        median(loads.iter().map(|l| l.p99_ms).collect()),
    )
}

/// One `wrk --latency` run against `http://ADDR/`.
pub fn wrk(addr: SocketAddr, seconds: u64, connections: u64) -> Result<Load> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .arg("--latency")
        .arg(format!("http://{addr}/"))
        .output()
        .context("running wrk (apt install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if text.contains("Non-2xx or 3xx responses") {
        bail!("wrk saw error responses from {addr}:\n{text}");
    }
    if let Some(errors) = text.lines().find(|l| l.contains("Socket errors")) {
        println!("  {addr}: {}", errors.trim());
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in:\n{text}"))?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| duration_ms(v.trim()))
        .with_context(|| format!("no 99% latency in:\n{text}"))?;
    Ok(Load { rps, p99_ms: p99 })
}

/// wrk's durations (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
pub fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|ch: char| ch.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

/// Imports `component` (a wasi:http component) into `c` as `name`, as a Spin app: a
/// `spin.toml` routing `/...` to it, at `/app/spin.toml` (the task's argument).
pub fn import_spin_http(c: &Containerd, name: &str, component: &Path) -> Result<String> {
    let toml = c.dir().join("spin.toml");
    std::fs::write(
        &toml,
        "spin_manifest_version = 2\n[application]\nname = \"bench\"\n\
         [[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n\
         [component.hello]\nsource = \"http.wasm\"\n",
    )?;
    c.import_wasm(
        name,
        component,
        &[
            "--module-path",
            "/app/http.wasm",
            "--file",
            &format!("{}:/app/spin.toml", toml.display()),
        ],
    )
}

/// What the hello image prints.
pub const HELLO: &str = "Hello from WebAssembly, run by kwasi!";

/// A static busybox image for runc, packed with `kwasi image build` (Debian's busybox-static).
pub fn busybox_image(c: &Containerd) -> Result<String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox is missing: apt-get install busybox-static");
    }
    c.import_wasm(
        "kwasi.bench/busybox",
        busybox,
        &["--module-path", "/bin/busybox"],
    )
}

/// What the `ctr run` benchmarks start from: the rounds asked for (the first argument,
/// default 20), the built shims, a private containerd 2.x with the hello image and the
/// busybox image imported.
pub struct HelloBench {
    /// Rounds to run.
    pub rounds: usize,
    /// Every built shim.
    pub shims: Vec<Shim>,
    /// The containerd.
    pub containerd: Containerd,
    /// The hello image (`examples/hello`).
    pub hello: String,
    /// The busybox image, for runc.
    pub busybox: String,
    /// The mounts that stand for a full node's (`KWASI_BENCH_MOUNTS`), while the bench runs.
    pub node_mounts: NodeMounts,
}

/// `KWASI_BENCH_MOUNTS=N` small tmpfs mounts on the host for as long as the bench runs, as a
/// node full of pods has (each pod adds its rootfs, `shm`, network namespace and volumes:
/// about 4,000 lines in `/proc/self/mountinfo` at 1,000 pods). Every runtime reads the mount
/// table while it starts and deletes a container, so a start slows as a node fills; this
/// measures that on a private containerd, without a cluster. Unmounted when dropped (the
/// suite's `kwasi-sweep` removes them after an interrupted run).
pub struct NodeMounts {
    dir: Option<tempfile::TempDir>,
}

impl NodeMounts {
    /// Mounts `KWASI_BENCH_MOUNTS` tmpfs (none when unset), and says so.
    pub fn from_env() -> Result<NodeMounts> {
        let count: usize = match std::env::var("KWASI_BENCH_MOUNTS") {
            Ok(n) => n.parse().context("KWASI_BENCH_MOUNTS must be a number")?,
            Err(_) => return Ok(NodeMounts { dir: None }),
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TMP_PREFIX}mounts-"))
            .tempdir()?;
        let mounts = NodeMounts { dir: Some(dir) };
        let root = mounts
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        for n in 0..count {
            let point = root.join(format!("m{n}"));
            std::fs::create_dir(&point)?;
            nix::mount::mount(
                Some("kwasi-bench"),
                &point,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=4k"),
            )
            .with_context(|| format!("mounting a tmpfs on {}", point.display()))?;
        }
        let lines = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .count();
        eprintln!("{count} extra mounts: /proc/self/mountinfo has {lines} lines");
        Ok(mounts)
    }
}

impl Drop for NodeMounts {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            kwasi_e2e::unmount_below(dir.path());
        }
    }
}

impl HelloBench {
    /// Reads the arguments, checks that a shim is built, starts containerd and imports the
    /// images.
    pub fn start() -> Result<HelloBench> {
        let rounds: usize = match std::env::args().nth(1) {
            Some(n) => n.parse().context("ROUNDS must be a number")?,
            None => 20,
        };
        let shims = Shim::built_ones();
        if shims.is_empty() {
            bail!("no shim is built: cargo build --release");
        }
        let node_mounts = NodeMounts::from_env()?;
        let containerd = Containerd::start(Release::V2)?;
        let hello = kwasi_e2e::guests_dir().join("../../examples/hello/hello.wasm");
        let hello = containerd.import_wasm("kwasi.bench/hello", &hello, &[])?;
        let busybox = busybox_image(&containerd)?;
        Ok(HelloBench {
            rounds,
            shims,
            containerd,
            hello,
            busybox,
            node_mounts,
        })
    }
}

/// The shim processes serving `ids` and the processes in their containers' cgroups.
pub fn pids_of(c: &Containerd, ids: &[String]) -> Vec<i32> {
    let socket = c.socket().display().to_string();
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let mut pids: Vec<i32> = kwasi_e2e::processes()
        .into_iter()
        .filter(|(_, cmdline)| cmdline.contains("containerd-shim") && cmdline.contains(&socket))
        .filter(|(_, cmdline)| {
            let mut words = cmdline.split_whitespace();
            words.any(|w| w == "-id") && words.next().is_some_and(|id| wanted.contains(id))
        })
        .map(|(pid, _)| pid)
        .collect();
    for id in ids {
        if let Some(dir) = kwasi_e2e::cgroup_dirs(id).first() {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A process's proportional set size, in bytes (0 once it has gone).
pub fn pss_bytes(pid: i32) -> f64 {
    rollup_bytes(pid, "Pss:")
}

/// One line of a process's `smaps_rollup` (`field` with its colon), in bytes.
pub fn rollup_bytes(pid: i32, field: &str) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    kib as f64 * 1024.0
}

/// The machine's busy CPU time so far, in clock ticks (`/proc/stat`: user, nice, system, irq
/// and softirq, over every CPU).
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let fields: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
}

/// Clock ticks per second, as `/proc/PID/stat` counts them.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
