//! Pods through a real kubelet: the single-node cluster of the Kubernetes suite
//! (`kwasi_e2e::kube::Cluster`: kine, kube-apiserver, kube-controller-manager,
//! kube-scheduler, a kubelet on containerd 2.x), driven with kubectl as a user would.
//!
//! - Pod start: `kubectl apply` of a Pod that prints a line and exits, until its phase is
//!   Succeeded; then `kubectl delete` until it is gone. runc runs busybox `echo`, each kwasi
//!   handler the probe guest's `hello` (compiled on the node in the uncounted first round).
//!   N alternated rounds.
//! - Scale: a Deployment of 50 replicas of an HTTP server with an httpGet readiness probe, from
//!   `kubectl apply` until all 50 are Ready, and the node's memory in use (MemTotal -
//!   MemAvailable) then against before, per pod; then the Deployment is deleted and the node
//!   left to settle. runc runs busybox's httpd, the wasmtime handler the wasi:http component
//!   (`tests/guests/http.wasm`), both answering `/`. M alternated rounds.
//!
//! Prints the medians and their ratios to runc's.
//!
//! `kubebench spin [LOAD_ROUNDS] [START_ROUNDS] [SECONDS]` measures Spin apps in pods instead:
//!
//! - Load: the hello wasi:http component (`tests/guests/http.wasm`) as a Spin app (a
//!   `spin.toml` routing `/...` to it, RuntimeClass `spin`) and as a plain component
//!   (RuntimeClass `wasmtime`), one Deployment of one replica each, both running at once;
//!   `wrk` from the node against each pod's IP, alternated, LOAD_ROUNDS rounds of SECONDS
//!   with 64 connections after a warm-up each: requests/s and p99, and their ratios.
//! - Start: `kubectl apply` of a Pod until its first 200 answer on the pod's IP, polled every
//!   millisecond once the pod has one; then the pod is deleted. The three-component Spin app
//!   (Spin's OCI layout, RuntimeClass `spin`, its components compiled on the node in the
//!   uncounted first round) against runc serving the same page with busybox httpd.
//!   START_ROUNDS alternated rounds.
//!
//! Usage: `kubebench [POD_ROUNDS] [SCALE_ROUNDS]` (default 20 and 3) or `kubebench spin
//! [LOAD_ROUNDS] [START_ROUNDS] [SECONDS]` (default 5, 9 and 5), after `cargo build
//! --release`, as root, with the node's components (`tests/node/build.sh`) and, for `spin`,
//! `wrk` (Debian's package).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kwasi_e2e::cri::BUSYBOX_IMAGE;
use kwasi_e2e::kube::Cluster;
use kwasi_e2e::layout::{Entry, LinuxImage, BUSYBOX};
use kwasi_e2e::{guests_dir, http, Shim};
use measure::{compare, import_spin_http, median, ms, LoadPlan};

mod measure;

/// The baseline's web server: busybox httpd serving what the component answers on `/`.
const HTTPD_IMAGE: &str = "kwasi.bench/httpd:1";
const REPLICAS: u32 = 50;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("spin") {
        args.next();
        let mut next = |default: usize, what: &str| -> Result<usize> {
            args.next()
                .map_or(Ok(default), |n| n.parse())
                .with_context(|| what.to_string())
        };
        let load = LoadPlan {
            rounds: next(5, "LOAD_ROUNDS")?,
            seconds: 0,
            connections: 64,
        };
        let start_rounds = next(9, "START_ROUNDS")?;
        let load = LoadPlan {
            seconds: next(5, "SECONDS")? as u64,
            ..load
        };
        return spin(&load, start_rounds);
    }
    let pod_rounds: usize = args
        .next()
        .map_or(Ok(20), |n| n.parse())
        .context("POD_ROUNDS")?;
    let scale_rounds: usize = args
        .next()
        .map_or(Ok(3), |n| n.parse())
        .context("SCALE_ROUNDS")?;
    let shims = Shim::built_ones();
    if shims.is_empty() {
        bail!("no shim is built: cargo build --release");
    }
    let mut cluster = Cluster::start()?;
    let probe = cluster.node.wasm_image("probe.wasm")?;
    let http = cluster.node.wasm_image("http.wasm")?;
    import_httpd(&cluster)?;

    let mut handlers: Vec<(&str, String, &str)> = vec![(
        "runc",
        BUSYBOX_IMAGE.to_string(),
        r#"command: ["/bin/sh", "-c", "echo hello"]"#,
    )];
    for shim in &shims {
        handlers.push((shim.engine, probe.clone(), r#"args: ["hello"]"#));
    }
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    for round in 0..=pod_rounds {
        for (i, (handler, image, command)) in handlers.iter().enumerate() {
            let took = pod_start(&cluster, handler, image, command)?;
            if round > 0 {
                starts[i].push(took);
            }
        }
    }
    let base = ms(median(&mut starts[0]));
    println!("pod start (apply to Succeeded), medians of {pod_rounds} alternated rounds");
    for (i, (handler, _, _)) in handlers.iter().enumerate() {
        let start = ms(median(&mut starts[i]));
        println!("{handler:>9}: {start:7.0} ms ({:.2} x runc)", start / base);
    }

    let servers = [
        ("runc", HTTPD_IMAGE.to_string(), 8080),
        ("wasmtime", http, 8080),
    ];
    let mut ready: Vec<Vec<Duration>> = vec![Vec::new(); servers.len()];
    let mut memory: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for _ in 0..scale_rounds {
        for (i, (handler, image, port)) in servers.iter().enumerate() {
            let (took, per_pod) = scale(&mut cluster, handler, image, *port)?;
            ready[i].push(took);
            memory[i].push(per_pod);
        }
    }
    let base_ready = ms(median(&mut ready[0]));
    let base_memory = median_f64(&mut memory[0]);
    println!(
        "{REPLICAS} replicas (apply to all Ready), medians of {scale_rounds} alternated rounds"
    );
    for (i, (handler, _, _)) in servers.iter().enumerate() {
        let took = ms(median(&mut ready[i]));
        let mem = median_f64(&mut memory[i]);
        println!(
            "{handler:>9}: all Ready in {:5.1} s ({:.2} x runc), node memory {mem:5.2} MiB per pod ({:.2} x runc)",
            took / 1000.0,
            took / base_ready,
            mem / base_memory
        );
    }
    Ok(())
}

/// Applies a Pod on `handler` running `image` with `command` (a YAML line), waits until it
/// has Succeeded, and returns how long that took; then deletes it.
fn pod_start(cluster: &Cluster, handler: &str, image: &str, command: &str) -> Result<Duration> {
    let manifest = pod("bench", handler, image, command);
    let started = Instant::now();
    cluster.apply(&manifest)?;
    loop {
        let phase = cluster
            .kubectl(&["get", "pod", "bench", "-o", "jsonpath={.status.phase}"])
            .stdout;
        match phase.as_str() {
            "Succeeded" => break,
            "Failed" => bail!("{handler}: the pod failed"),
            _ if started.elapsed() > Duration::from_secs(120) => {
                bail!("{handler}: the pod is still {phase:?} after 2 minutes")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    let took = started.elapsed();
    cluster.delete_workloads()?;
    Ok(took)
}

/// Applies a Deployment of [`REPLICAS`] HTTP servers on `handler`, waits until all are
/// Ready, and returns how long that took and the node memory it added per pod; then deletes
/// it and waits for the node to settle.
fn scale(cluster: &mut Cluster, handler: &str, image: &str, port: u16) -> Result<(Duration, f64)> {
    let manifest = web_deployment("scale", REPLICAS, handler, image, "", port);
    settle();
    let before = memory_in_use()?;
    let started = Instant::now();
    cluster.apply(&manifest)?;
    cluster.wait_ready("scale", REPLICAS, Duration::from_secs(600))?;
    let took = started.elapsed();
    let after = memory_in_use()?;
    cluster.delete_workloads()?;
    Ok((took, (after - before) / REPLICAS as f64))
}

/// `kubebench spin`: the Spin app against the plain component under load, then the
/// three-component app's start against busybox httpd's, all in pods.
fn spin(load: &LoadPlan, start_rounds: usize) -> Result<()> {
    Shim::SPIN.built();
    Shim::WASMTIME.built();
    let mut cluster = Cluster::start()?;
    let http_wasm = guests_dir().join("http.wasm");
    let spin_http = import_spin_http(
        &cluster.node.containerd,
        "kwasi.bench/spin-http",
        &http_wasm,
    )?;
    let plain = cluster.node.wasm_image("http.wasm")?;
    let spin_server = serve(
        &cluster,
        "spin-http",
        "spin",
        &spin_http,
        r#"command: ["/app/spin.toml"]"#,
        80,
    )?;
    let plain_server = serve(&cluster, "plain-http", "wasmtime", &plain, "", 8080)?;
    println!("in pods, the Spin app ({spin_server}) against the plain component ({plain_server})");
    compare(
        load,
        ("spin app", spin_server),
        ("plain component", plain_server),
    )?;
    cluster.delete_workloads()?;

    let three = "kwasi.bench/spin-three:v1";
    kwasi_e2e::spin::import_three_components(&cluster.node.containerd, three)?;
    import_httpd(&cluster)?;
    let apps = [
        ("spin", three, r#"command: ["/"]"#, 80, "/api/"),
        ("runc", HTTPD_IMAGE, "", 8080, "/"),
    ];
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); apps.len()];
    for round in 0..=start_rounds {
        let mut line = format!("round {round}:");
        for (i, (handler, image, command, port, path)) in apps.iter().enumerate() {
            let took = first_answer(&cluster, handler, image, command, *port, path)?;
            line.push_str(&format!(" {handler} {:.0} ms", ms(took)));
            if round > 0 {
                starts[i].push(took);
            }
        }
        let uncounted = if round == 0 { " (uncounted)" } else { "" };
        println!("{line}{uncounted}");
    }
    let spin_start = ms(median(&mut starts[0]));
    let runc_start = ms(median(&mut starts[1]));
    println!(
        "pod start (apply to first answer), medians of {start_rounds} alternated rounds: \
         three-component Spin app {spin_start:.0} ms | runc busybox httpd {runc_start:.0} ms | \
         ratio {:.2} x",
        spin_start / runc_start
    );
    Ok(())
}

/// Applies a Deployment `name` of one replica of `image` on `handler` with `command` (a YAML
/// line), Ready once it answers `/` on `port`; returns the pod's address.
fn serve(
    cluster: &Cluster,
    name: &str,
    handler: &str,
    image: &str,
    command: &str,
    port: u16,
) -> Result<SocketAddr> {
    cluster.apply(&web_deployment(name, 1, handler, image, command, port))?;
    cluster.wait_ready(name, 1, Duration::from_secs(300))?;
    let ip = cluster
        .kubectl(&[
            "get",
            "pods",
            "-l",
            &format!("app={name}"),
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .stdout;
    format!("{ip}:{port}")
        .parse()
        .with_context(|| format!("the address of {name}'s pod ({ip:?})"))
}

/// Applies a Pod of `image` on `handler` (`runc`: none) with `command` (a YAML line), and
/// returns the time until it first answers `GET path` with 200 on `port`; then deletes it.
fn first_answer(
    cluster: &Cluster,
    handler: &str,
    image: &str,
    command: &str,
    port: u16,
    path: &str,
) -> Result<Duration> {
    let manifest = pod("start", handler, image, command);
    let agent = http::client();
    let started = Instant::now();
    cluster.apply(&manifest)?;
    let timeout = Duration::from_secs(120);
    let mut addr: Option<SocketAddr> = None;
    let took = loop {
        if started.elapsed() > timeout {
            bail!("{handler}: the pod did not answer within {timeout:?}");
        }
        let Some(at) = addr else {
            let ip = cluster
                .kubectl(&["get", "pod", "start", "-o", "jsonpath={.status.podIP}"])
                .stdout;
            addr = format!("{ip}:{port}").parse().ok();
            continue;
        };
        if let Ok((200, _)) = http::get(&agent, at, path) {
            break started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    cluster.delete_workloads()?;
    Ok(took)
}

/// `runtimeClassName: HANDLER`, or nothing for runc (the node's default runtime).
fn runtime_class(handler: &str) -> String {
    if handler == "runc" {
        String::new()
    } else {
        format!("runtimeClassName: {handler}")
    }
}

/// A Pod `name` of `image` on `handler`, never restarted, with `command` (a YAML line).
fn pod(name: &str, handler: &str, image: &str, command: &str) -> String {
    let class = runtime_class(handler);
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  {class}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: {name}
    image: {image}
    imagePullPolicy: Never
    {command}
"#
    )
}

/// A Deployment `name` of `replicas` HTTP servers of `image` on `handler` with `command` (a
/// YAML line), Ready once they answer `/` on `port`.
fn web_deployment(
    name: &str,
    replicas: u32,
    handler: &str,
    image: &str,
    command: &str,
    port: u16,
) -> String {
    let class = runtime_class(handler);
    let pod_spec = format!(
        r#"      {class}
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        imagePullPolicy: Never
        {command}
        readinessProbe:
          httpGet: {{path: /, port: {port}}}
          periodSeconds: 1
"#
    );
    kwasi_e2e::kube::deployment(name, replicas, &pod_spec)
}

/// Lets the node reclaim what the last round freed.
fn settle() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    std::thread::sleep(Duration::from_secs(5));
}

/// The node's memory in use, MiB: MemTotal - MemAvailable.
fn memory_in_use() -> Result<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let field = |name: &str| -> Result<f64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .with_context(|| format!("{name} in /proc/meminfo"))
    };
    Ok((field("MemTotal:")? - field("MemAvailable:")?) / 1024.0)
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Imports the baseline's web server: Debian's static busybox running its httpd on 8080,
/// serving the component's answer as `/index.html`.
fn import_httpd(cluster: &Cluster) -> Result<()> {
    let tar = cluster.dir().join("httpd.tar");
    LinuxImage {
        name: HTTPD_IMAGE,
        entries: vec![
            Entry::File(std::path::Path::new(BUSYBOX), "/bin/busybox", 0o755),
            Entry::Data("/www/index.html", b"hello from kwasi\n", 0o644),
        ],
        entrypoint: &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        ..Default::default()
    }
    .write(&tar)?;
    cluster.node.containerd.import_archive(&tar)
}
