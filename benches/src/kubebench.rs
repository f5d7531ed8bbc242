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
//! `kubebench density [COUNTS] [HANDLERS]` measures idle pods by the hundred and the
//! thousand instead (issue 18's density, through the kubelet): at each count (default
//! 100,1000), for runc (busybox `sleep`) and each kwasi handler (the probe guest's `sleep`),
//! a Deployment of that many replicas without probes, applied at once: the time from
//! `kubectl apply` until all are Running (or how many are after 300 s and 1 s a pod); the node
//! memory in use they add per pod (MemTotal - MemAvailable, page cache dropped before), split
//! into the anonymous memory of the shims and the pods' processes, the growth of containerd's
//! and the kubelet's, and the rest (the kernel's: namespaces, veth pairs, cgroups, page
//! tables); the node's busy CPU over 10 s with them idle; whether the node stays Ready and a
//! hello pod still runs beside them; how long their deletion takes and what it leaves behind;
//! and how many such pods 24 GiB would hold. The node takes as many pods as the largest count
//! (`maxPods`, and a /16 for the pods' addresses). HANDLERS (comma-separated) picks among
//! runc and the built shims (`all`: every one); ratios to runc are printed when runc is among
//! them. With STEP, the replicas are scaled up STEP at a time, each step once the last one is
//! all Running (a node of two cores cannot start a thousand pods applied at once; see
//! `benches/README.md`), and every step's time and the node's idle CPU after it are reported.
//!
//! Usage: `kubebench [POD_ROUNDS] [SCALE_ROUNDS]` (default 20 and 3), `kubebench spin
//! [LOAD_ROUNDS] [START_ROUNDS] [SECONDS]` (default 5, 9 and 5) or `kubebench density
//! [COUNTS] [HANDLERS] [STEP]`, after `cargo build --release`, as root, with the node's
//! components (`tests/node/build.sh`) and, for `spin`, `wrk` (Debian's package).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kwasi_e2e::cri::BUSYBOX_IMAGE;
use kwasi_e2e::kube::Cluster;
use kwasi_e2e::layout::{Entry, LinuxImage, BUSYBOX};
use kwasi_e2e::leftovers::cgroup_tree_pids;
use kwasi_e2e::{guests_dir, http, Shim};
use measure::{
    compare, import_spin_http, machine_busy_ticks, median, ms, rollup_bytes, ticks_per_second,
    LoadPlan, MIB, NODE_BYTES,
};

mod measure;

/// The baseline's web server: busybox httpd serving what the component answers on `/`.
const HTTPD_IMAGE: &str = "kwasi.bench/httpd:1";
const REPLICAS: u32 = 50;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("density") {
        args.next();
        let counts: Vec<u32> = match args.next() {
            Some(list) => list
                .split(',')
                .map(|n| n.trim().parse().context("COUNTS: numbers, comma-separated"))
                .collect::<Result<_>>()?,
            None => vec![100, 1000],
        };
        let only: Option<Vec<String>> = args
            .next()
            .filter(|list| list != "all")
            .map(|list| list.split(',').map(|h| h.trim().to_string()).collect());
        let step = args
            .next()
            .map(|n| n.parse::<u32>().context("STEP: a number of pods"))
            .transpose()?
            .filter(|&n| n > 0);
        return density(&counts, only.as_deref(), step);
    }
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

/// `kubebench density`: at each count, a Deployment of that many idle pods on each handler,
/// measured once all are Running, then deleted.
fn density(counts: &[u32], only: Option<&[String]>, step: Option<u32>) -> Result<()> {
    let shims = Shim::built_ones();
    let most = counts.iter().copied().max().context("COUNTS is empty")?;
    // Room for the hello pod beside them.
    let mut cluster = Cluster::start_for_pods(most + 1)?;
    let probe = cluster.node.wasm_image("probe.wasm")?;
    let mut handlers: Vec<(&str, String, &str, &str)> = vec![(
        "runc",
        BUSYBOX_IMAGE.to_string(),
        r#"command: ["/bin/busybox", "sleep", "36000"]"#,
        r#"command: ["/bin/sh", "-c", "echo hello"]"#,
    )];
    for shim in &shims {
        handlers.push((
            shim.engine,
            probe.clone(),
            r#"args: ["sleep"]"#,
            r#"args: ["hello"]"#,
        ));
    }
    if let Some(only) = only {
        handlers.retain(|(handler, ..)| only.iter().any(|h| h == handler));
        if handlers.is_empty() {
            bail!("HANDLERS: none of {only:?} is runc or a built shim");
        }
    }
    // One hello pod of each first, so that every handler starts with its module compiled.
    let mut empty_node_hello = Vec::new();
    for (handler, image, _, hello) in &handlers {
        pod_start(&cluster, handler, image, hello)?;
        empty_node_hello.push(pod_start(&cluster, handler, image, hello)?);
    }
    let mut rows: Vec<Vec<IdlePods>> = vec![Vec::new(); handlers.len()];
    for &count in counts {
        for (i, (handler, image, idle, hello)) in handlers.iter().enumerate() {
            let row = idle_pods(&mut cluster, handler, image, idle, hello, count, step)?;
            println!("{handler} at {count}: {row:?}");
            rows[i].push(row);
        }
    }
    println!(
        "idle pods through the kubelet (Deployment of N replicas, no probe; runc: busybox \
         sleep, kwasi: the probe guest's sleep)"
    );
    for (k, &count) in counts.iter().enumerate() {
        println!("at {count} pods:");
        // Ratios are to runc's, when it ran.
        let base = handlers
            .iter()
            .position(|(handler, ..)| *handler == "runc")
            .map(|i| &rows[i][k]);
        let ratio = |mine: f64, runc: Option<f64>| {
            runc.map_or(String::new(), |runc| {
                format!(" ({:.2} x runc)", mine / runc)
            })
        };
        for (i, (handler, ..)) in handlers.iter().enumerate() {
            let row = &rows[i][k];
            let healthy = row.running == count
                && row.node_ready
                && row.hello.is_ok()
                && row.leftovers.is_empty();
            let running = match (row.running_in(), base.and_then(|b| b.running_in())) {
                (Some(mine), runc) => format!(
                    "all Running in {:.1} s{}",
                    mine.as_secs_f64(),
                    ratio(mine.as_secs_f64(), runc.map(|r| r.as_secs_f64()))
                ),
                (None, _) => format!(
                    "NOT all Running: {} of {count} when a step's limit (300 s + 1 s a new \
                     pod) passed",
                    row.running,
                ),
            };
            println!(
                "  {handler:>9}: {running}; node memory {:.2} MiB \
                 per pod{}, of which anonymous memory of the shims and the pods' \
                 processes {:.2}, of containerd and the kubelet {:.2}, the rest (the kernel's) \
                 {:.2}; idle node \
                 CPU {:.2} cores; hello pod beside them {}; deleted in {:.1} s; left behind: \
                 {}; fit in 24 GiB: {:.0} pods{}; healthy: {}",
                row.node_per / MIB,
                ratio(row.node_per, base.map(|b| b.node_per)),
                row.pods_per / MIB,
                row.daemons_per / MIB,
                (row.node_per - row.pods_per - row.daemons_per) / MIB,
                row.cpu_busy(),
                match &row.hello {
                    Ok(took) => format!(
                        "{:.0} ms (on the empty node {:.0})",
                        ms(*took),
                        ms(empty_node_hello[i])
                    ),
                    Err(err) => format!("FAILED: {err}"),
                },
                row.deleted_in.as_secs_f64(),
                if row.leftovers.is_empty() {
                    "nothing".to_string()
                } else {
                    row.leftovers.join("; ")
                },
                NODE_BYTES / row.node_per,
                base.map_or(String::new(), |b| format!(
                    " (runc {:.0})",
                    NODE_BYTES / b.node_per
                )),
                if healthy { "yes" } else { "NO" },
            );
            if row.steps.len() > 1 {
                let steps: Vec<String> = row
                    .steps
                    .iter()
                    .map(|s| {
                        format!(
                            "{} in {} (idle CPU {:.2})",
                            s.pods,
                            s.took.map_or("NOT all Running".to_string(), |t| format!(
                                "{:.1} s",
                                t.as_secs_f64()
                            )),
                            s.cpu_busy
                        )
                    })
                    .collect();
                println!("             steps: {}", steps.join(", "));
            }
        }
    }
    Ok(())
}

/// What `count` idle pods of one handler cost the node.
#[derive(Clone, Debug)]
struct IdlePods {
    /// Replicas Running once the wait for them all ended.
    running: u32,
    /// Bytes of node memory in use (MemTotal - MemAvailable) they added, per pod.
    node_per: f64,
    /// Bytes of anonymous memory (PSS) of the shims and the processes in the pods' cgroups,
    /// per pod.
    pods_per: f64,
    /// Bytes containerd's and the kubelet's anonymous memory (PSS) grew by, per pod.
    daemons_per: f64,
    /// Each step of the scale-up (one, without STEP).
    steps: Vec<Step>,
    /// Whether the node was still Ready with them.
    node_ready: bool,
    /// A hello pod on the same handler beside them: from apply to Succeeded.
    hello: Result<Duration, String>,
    /// From `kubectl delete` until every pod is gone.
    deleted_in: Duration,
    /// What they left on the node (see [`Cluster::leftovers`]).
    leftovers: Vec<String>,
}

impl IdlePods {
    /// From `kubectl apply` until every replica is Running (the sum of the steps' times);
    /// `None` when a step's pods were not all Running within 300 s + 1 s a new pod.
    fn running_in(&self) -> Option<Duration> {
        self.steps.iter().map(|s| s.took).sum()
    }

    /// Cores the node kept busy over 10 s with them all idle (every process, the kernel's
    /// too): the last step's.
    fn cpu_busy(&self) -> f64 {
        self.steps.last().map_or(0.0, |s| s.cpu_busy)
    }
}

/// One step of a scale-up.
#[derive(Clone, Debug)]
struct Step {
    /// Replicas asked for.
    pods: u32,
    /// From the apply or scale until they were all Running; `None` when they were not within
    /// 300 s + 1 s a new pod.
    took: Option<Duration>,
    /// Cores the node kept busy over 10 s once they were Running.
    cpu_busy: f64,
}

/// Runs `count` replicas of `image` on `handler` with `idle` (a YAML line) until all are
/// Running (`step` at a time, when given), measures them, runs a hello pod (`hello`) beside
/// them, and deletes them.
fn idle_pods(
    cluster: &mut Cluster,
    handler: &str,
    image: &str,
    idle: &str,
    hello: &str,
    count: u32,
    step: Option<u32>,
) -> Result<IdlePods> {
    let class = runtime_class(handler);
    let pod_spec = format!(
        r#"      {class}
      terminationGracePeriodSeconds: 1
      containers:
      - name: idle
        image: {image}
        imagePullPolicy: Never
        {idle}
"#
    );
    let step = step.unwrap_or(count).min(count);
    settle();
    let before = NodeMemory::take(cluster)?;
    let mut steps = Vec::new();
    let mut running = 0;
    while running < count {
        let target = (running + step).min(count);
        let started = Instant::now();
        if running == 0 {
            cluster.apply(&kwasi_e2e::kube::deployment("idle", target, &pod_spec))?;
        } else {
            cluster.kubectl_ok(&[
                "scale",
                "deployment",
                "idle",
                &format!("--replicas={target}"),
            ])?;
        }
        // Ready is Running here: the pods have no probe. A node that cannot start them all in
        // time is measured as it is, and its count of Running pods reported.
        let limit = Duration::from_secs(300 + u64::from(target - running));
        let took = cluster
            .wait_ready("idle", target, limit)
            .ok()
            .map(|()| started.elapsed());
        running = cluster
            .kubectl(&[
                "get",
                "deployment",
                "idle",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .stdout
            .trim()
            .parse()
            .unwrap_or(0);
        // Let the kubelet's and containerd's first round of status and stats pass.
        let cpu_busy = idle_cpu(if target == count { 15 } else { 5 });
        steps.push(Step {
            pods: target,
            took,
            cpu_busy,
        });
        if took.is_none() {
            break;
        }
    }
    let after = NodeMemory::take(cluster)?;
    let node_ready = cluster
        .kubectl(&[
            "get",
            "node",
            kwasi_e2e::kube::NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .stdout
        == "True";
    let hello = hello_pod(cluster, handler, image, hello).map_err(|e| format!("{e:#}"));
    let deleting = Instant::now();
    cluster.delete_workloads()?;
    let deleted_in = deleting.elapsed();
    let leftovers = cluster.leftovers();
    let n = f64::from(count);
    Ok(IdlePods {
        running,
        node_per: (after.in_use - before.in_use) / n,
        pods_per: (after.pods - before.pods) / n,
        daemons_per: (after.daemons - before.daemons) / n,
        steps,
        node_ready,
        hello,
        deleted_in,
        leftovers,
    })
}

/// Cores the node keeps busy over 10 s (every process, the kernel's too), after `settle`
/// seconds.
fn idle_cpu(settle: u64) -> f64 {
    std::thread::sleep(Duration::from_secs(settle));
    let busy_before = machine_busy_ticks();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    (machine_busy_ticks() - busy_before) as f64
        / ticks_per_second()
        / window.elapsed().as_secs_f64()
}

/// A hello pod `hello-beside` on `handler`, from apply until it has Succeeded; then it is
/// deleted (and nothing else).
fn hello_pod(cluster: &Cluster, handler: &str, image: &str, command: &str) -> Result<Duration> {
    let name = "hello-beside";
    let started = Instant::now();
    cluster.apply(&pod(name, handler, image, command))?;
    let took = loop {
        let phase = cluster
            .kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
            .stdout;
        match phase.as_str() {
            "Succeeded" => break started.elapsed(),
            "Failed" => bail!("{handler}: the hello pod failed"),
            _ if started.elapsed() > Duration::from_secs(300) => {
                bail!("{handler}: the hello pod is still {phase:?} after 5 minutes")
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    cluster.kubectl_ok(&["delete", "pod", name, "--wait=true"])?;
    Ok(took)
}

/// Where the node's memory is, in bytes. Processes count by their anonymous pages (their
/// proportional share): the file pages they map are page cache, which MemAvailable counts as
/// available.
struct NodeMemory {
    /// MemTotal - MemAvailable.
    in_use: f64,
    /// The node's shims (and kwasi's zygotes) and the processes in the pods' cgroups.
    pods: f64,
    /// containerd and the kubelet.
    daemons: f64,
}

impl NodeMemory {
    fn take(cluster: &Cluster) -> Result<NodeMemory> {
        let socket = cluster.node.containerd.socket().display().to_string();
        let processes = kwasi_e2e::processes();
        let mut pods: Vec<i32> = processes
            .iter()
            .filter(|(_, cmdline)| cmdline.contains("containerd-shim") && cmdline.contains(&socket))
            .map(|(pid, _)| *pid)
            .collect();
        pods.extend(cgroup_tree_pids(
            &Path::new("/sys/fs/cgroup/memory").join(kwasi_e2e::kube::CGROUP_ROOT),
        ));
        pods.sort_unstable();
        pods.dedup();
        let containerd = cluster.node.containerd.pid().context("containerd's pid")? as i32;
        let kubelet_binary = kwasi_e2e::node::binary("kubelet")?.display().to_string();
        let daemons = processes
            .iter()
            .filter(|(pid, cmdline)| {
                *pid == containerd || cmdline.starts_with(&format!("{kubelet_binary} "))
            })
            .map(|(pid, _)| anonymous_bytes(*pid))
            .sum();
        Ok(NodeMemory {
            in_use: memory_in_use()? * MIB,
            pods: pods.iter().map(|&pid| anonymous_bytes(pid)).sum(),
            daemons,
        })
    }
}

/// A process's anonymous pages, its proportional share, in bytes (0 once it has gone).
fn anonymous_bytes(pid: i32) -> f64 {
    rollup_bytes(pid, "Pss_Anon:")
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
