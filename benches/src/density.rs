//! Density: every figure of issue 18 in one run, each against runc in the same run, through
//! one private containerd 2.x.
//!
//! 1. `ctr run --rm` of the hello image (its module compiled before) against runc's busybox
//!    `echo`, ROUNDS alternated rounds, medians.
//! 2. Task throughput: TASKS hello tasks for runc and each shim, through `ctr run --rm` 8 and
//!    then 16 at a time, and through containerd's API from this one process (as kubelet's
//!    calls come from one process) 16 at a time; tasks per second, the CPU time each task
//!    cost (the client, containerd, and the runtime: the rest of the machine's busy time),
//!    failed tasks, and what the tasks left behind. The summary adds the ceiling the client
//!    and containerd put on the ratio.
//! 3. Idle containers (`ctr run -d` of a sleeping module, or busybox `sleep` for runc), at
//!    each of COUNTS: the processes and threads each keeps alive, their PSS (shim, zygote and
//!    container processes, all counted) per container, containerd's own growth per
//!    container, the time to start them one after another, and whether the node stays
//!    healthy with them (all running, and a hello task still runs); from the largest count,
//!    how many would fit in 24 GiB.
//! 4. A warm start of an 8 MiB module against one of a small module, per engine (the
//!    compile cache's figure, see `compilecache`).
//!
//! Then a summary of the ratios and a plot of memory per container against the number of
//! containers, written to `KWASI_DENSITY_PNG` (default `benches/density.png`).
//!
//! Usage: `density [ROUNDS] [COUNTS] [TASKS]` (defaults 20, `1,10,100,1000` and 96), after
//! `cargo build --release`, as root. `KWASI_BIN_DIR` picks other shims, as in every bench;
//! `KWASI_BENCH_MOUNTS=4000` adds the mount table of a node with about 1,000 pods.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kwasi_e2e::*;
use measure::{
    machine_busy_ticks, median, ms, pids_of, pss_bytes, rollup_bytes, ticks_per_second, HelloBench,
    HELLO, MIB, NODE_BYTES,
};

mod compiled;
mod measure;

/// One runtime as the bench drives it: how it is named, and what its hello and idle
/// containers run.
struct Runtime {
    name: String,
    runtime: &'static str,
    image: String,
    hello_args: Vec<&'static str>,
    /// `process.args` of the hello task when it is made through the API, which (as CRI's
    /// clients do) gives the whole command rather than the image's entrypoint.
    api_args: Vec<&'static str>,
    hello_output: &'static str,
    idle_image: String,
    idle_args: Vec<&'static str>,
}

fn main() -> Result<()> {
    let HelloBench {
        rounds,
        shims,
        containerd: c,
        hello,
        busybox,
        node_mounts: _node_mounts,
    } = HelloBench::start()?;
    let mut argv = std::env::args().skip(2);
    let counts: Vec<usize> = match argv.next() {
        Some(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("COUNTS: numbers separated by commas")
            })
            .collect::<Result<_>>()?,
        None => vec![1, 10, 100, 1000],
    };
    let tasks: usize = argv.next().map_or(Ok(96), |n| n.parse()).context("TASKS")?;
    let probe = c.import_wasm("kwasi.bench/probe", &guests_dir().join("probe.wasm"), &[])?;
    let mut runtimes = vec![Runtime {
        name: "runc".into(),
        runtime: RUNC,
        image: busybox.clone(),
        hello_args: vec!["/bin/busybox", "echo", "hello"],
        api_args: vec!["/bin/busybox", "echo", "hello"],
        hello_output: "hello",
        idle_image: busybox.clone(),
        idle_args: vec!["/bin/busybox", "sleep", "36000"],
    }];
    for shim in &shims {
        runtimes.push(Runtime {
            name: format!("kwasi {}", shim.engine),
            runtime: shim.runtime,
            image: hello.clone(),
            hello_args: vec![],
            api_args: vec!["/app.wasm"],
            hello_output: HELLO,
            idle_image: probe.clone(),
            idle_args: vec!["/app.wasm", "sleep"],
        });
    }
    // One untimed run of each, so that all start from warm page caches and compiled modules.
    for (i, r) in runtimes.iter().enumerate() {
        run_hello(&c, r, &format!("warm-{i}"))?;
    }

    println!("== 1. ctr run --rm hello, median of {rounds} alternated rounds");
    let mut starts = vec![Vec::new(); runtimes.len()];
    for round in 0..rounds {
        for (i, r) in runtimes.iter().enumerate() {
            starts[i].push(run_hello(&c, r, &format!("h{round}-{i}"))?);
        }
    }
    let starts: Vec<Duration> = starts.iter_mut().map(|v| median(v)).collect();
    for (r, d) in runtimes.iter().zip(&starts) {
        println!(
            "  {:<16} {:>7.1} ms  {:.2} x runc",
            r.name,
            ms(*d),
            ratio(*d, starts[0])
        );
    }

    println!("== 2. task throughput: {tasks} hello tasks through containerd");
    let mut throughput: BTreeMap<(Client, usize), Vec<Throughput>> = BTreeMap::new();
    for (client, parallel) in [(Client::Ctr, 8), (Client::Ctr, 16), (Client::Api, 16)] {
        for (i, r) in runtimes.iter().enumerate() {
            let tag = format!("t{}{parallel}-{i}", client.tag());
            let t = run_tasks(&c, r, client, tasks, parallel, &tag)?;
            let key = (client, parallel);
            println!(
                "  {parallel:>2} at a time, {:<4} {:<16} {:>6.1} tasks/s  {:.2} x runc  failed {}  left behind {}",
                client.tag(),
                r.name,
                t.per_second,
                t.per_second / throughput.get(&key).map_or(t.per_second, |v| v[0].per_second),
                t.failed.len(),
                t.leftovers.len()
            );
            println!(
                "      CPU per task {:.1} ms: client {:.1}, containerd {:.1}, the runtime (shims, containers, kernel work) {:.1}",
                t.cpu.total() * 1e3,
                t.cpu.client * 1e3,
                t.cpu.containerd * 1e3,
                t.cpu.runtime * 1e3
            );
            for line in t.failed.iter().chain(&t.leftovers).take(3) {
                println!("      {line}");
            }
            throughput.entry(key).or_default().push(t);
        }
    }

    // The idle containers run a module that ran before (its compiled form is cached), as a
    // restarted or scaled-out pod does.
    for (i, r) in runtimes.iter().enumerate().skip(1) {
        measure::check(
            &c.run(
                r.runtime,
                &[],
                &r.idle_image,
                &format!("warm-idle-{i}"),
                &["/app.wasm", "hello"],
            ),
            "hello from wasm",
        )?;
    }
    println!("== 3. idle containers");
    let mut idle: Vec<Vec<Idle>> = (0..runtimes.len()).map(|_| Vec::new()).collect();
    for &count in &counts {
        for (i, r) in runtimes.iter().enumerate() {
            let found = idle_containers(&c, r, count, &format!("i{count}-{i}"))?;
            let base = idle[0].last().filter(|_| i > 0).map(|b: &Idle| b.pss_per);
            println!(
                "  {count:>5} x {:<16} {:.1} processes, {:.1} threads, PSS {:>5.2} MiB each{}, containerd {:+.2} MiB each, started in {:.1} s, idle CPU {:.1} % of a core, {}/{} running, hello while idle: {}",
                r.name,
                found.processes_per,
                found.threads_per,
                found.pss_per / MIB,
                base.map_or(String::new(), |b| format!(" ({:.2} x runc)", found.pss_per / b)),
                found.containerd_per / MIB,
                found.start.as_secs_f64(),
                found.cpu * 100.0,
                found.running,
                count,
                match &found.hello {
                    Ok(d) => format!("{:.1} ms", ms(*d)),
                    Err(e) => format!("FAILED {e}"),
                },
            );
            println!("      MiB each: {}", found.breakdown);
            for line in found.leftovers.iter().take(3) {
                println!("      left behind: {line}");
            }
            idle[i].push(found);
        }
    }

    println!("== 4. warm start of an 8 MiB module against a small one");
    let modules = compiled::Modules::import(&c, 16_000)?;
    println!("  {}", modules.describe());
    let mut sizes = Vec::new();
    for shim in &shims {
        let s = modules.measure(&c, shim, rounds.clamp(1, 8))?;
        println!(
            "  kwasi {:<10} warm large {:>6.1} ms, warm small {:>6.1} ms: {:.2} x",
            shim.engine,
            ms(s.warm),
            ms(s.small_warm),
            s.large_over_small()
        );
        sizes.push(s);
    }

    println!("== summary (issue 18's goals in brackets)");
    for (i, r) in runtimes.iter().enumerate().skip(1) {
        println!("  {}:", r.name);
        println!(
            "    ctr run --rm hello             {:.2} x runc   [<= 0.5]",
            ratio(starts[i], starts[0])
        );
        for ((client, parallel), rows) in &throughput {
            println!(
                "    tasks/s, {parallel:>2} at a time, {:<4}   {:.2} x runc   [>= 3]  failed {}, left behind {}",
                client.tag(),
                rows[i].per_second / rows[0].per_second,
                rows[i].failed.len(),
                rows[i].leftovers.len()
            );
            // When the tasks keep every core busy, tasks/s goes as 1 / CPU per task: a
            // runtime that cost nothing would still pay the client's and containerd's share.
            println!(
                "      CPU per task {:.2} x runc's; ceiling at no runtime CPU, with this client: {:.2} x",
                rows[i].cpu.total() / rows[0].cpu.total(),
                rows[0].cpu.total() / (rows[i].cpu.client + rows[i].cpu.containerd)
            );
        }
        for (k, &count) in counts.iter().enumerate() {
            let (mine, runc) = (&idle[i][k], &idle[0][k]);
            println!(
                "    idle PSS per container at {count:>4} {:.2} MiB, {:.2} x runc   [<= 1.5 MiB and <= 0.5 x at 100]",
                mine.pss_per / MIB,
                mine.pss_per / runc.pss_per
            );
        }
        if let (Some(mine), Some(&count)) = (idle[i].last(), counts.last()) {
            let per = mine.pss_per + mine.containerd_per.max(0.0);
            let runc = idle[0]
                .last()
                .map_or(0.0, |b| b.pss_per + b.containerd_per.max(0.0));
            println!(
                "    fit in 24 GiB (PSS at {count} + containerd's share) {:.0}, runc {:.0}   [>= 10000]; healthy at {count} (all running, a hello still runs, idle CPU < 10 % of a core, nothing left behind): {}",
                NODE_BYTES / per,
                NODE_BYTES / runc,
                if mine.running == count
                    && mine.hello.is_ok()
                    && mine.leftovers.is_empty()
                    && mine.cpu < 0.1
                {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
        if let Some(s) = sizes.get(i - 1) {
            println!(
                "    warm 8 MiB / warm small module {:.2} x        [<= 1.2]",
                s.large_over_small()
            );
        }
    }
    let png = std::env::var_os("KWASI_DENSITY_PNG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("density.png"));
    let series: Vec<(String, Vec<(usize, f64)>)> = runtimes
        .iter()
        .zip(&idle)
        .map(|(r, rows)| {
            let points = rows
                .iter()
                .map(|row| (row.count, row.pss_per / MIB))
                .collect();
            (r.name.clone(), points)
        })
        .collect();
    plot(&png, &series)?;
    println!("plot: {}", png.display());
    Ok(())
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// One `ctr run --rm` of `r`'s hello task, checked, timed.
fn run_hello(c: &Containerd, r: &Runtime, id: &str) -> Result<Duration> {
    let t = Instant::now();
    measure::check(
        &c.run(r.runtime, &[], &r.image, id, &r.hello_args),
        r.hello_output,
    )?;
    Ok(t.elapsed())
}

/// How a burst's tasks reach containerd.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Client {
    /// One `ctr run --rm` process per task.
    Ctr,
    /// containerd's gRPC API, from this one process (as kubelet's calls reach containerd from
    /// one long-lived process): unpack, container, task, start, wait, then delete them all.
    Api,
}

impl Client {
    fn tag(self) -> &'static str {
        match self {
            Client::Ctr => "ctr",
            Client::Api => "api",
        }
    }

    /// Runs `r`'s hello task as `id` through this client, and checks what it printed.
    fn run_hello(self, c: &Containerd, r: &Runtime, id: &str) -> Result<()> {
        match self {
            Client::Ctr => run_hello(c, r, id).map(|_| ()),
            Client::Api => {
                let env = [kwasi_e2e::api::ApiRun::DEFAULT_ENV.to_string()];
                let out = kwasi_e2e::api::ApiRun {
                    socket: &c.socket(),
                    dir: c.dir(),
                    runtime: r.runtime,
                    image: &r.image,
                    id,
                    args: &r.api_args,
                    env: &env,
                }
                .run()?;
                measure::check(&out, r.hello_output)
            }
        }
    }
}

/// What a burst of tasks did.
struct Throughput {
    per_second: f64,
    /// The CPU time each task cost, by who spent it.
    cpu: CpuPerTask,
    failed: Vec<String>,
    leftovers: Vec<String>,
}

/// The CPU time a task cost, in seconds: the client's (the `ctr` processes, or this process
/// for the API), containerd's, and the rest of the machine's busy time (the runtime: its
/// shims, container processes, and the kernel's work for them, such as network namespaces
/// torn down in kernel threads).
#[derive(Clone, Copy)]
struct CpuPerTask {
    client: f64,
    containerd: f64,
    runtime: f64,
}

impl CpuPerTask {
    fn total(&self) -> f64 {
        self.client + self.containerd + self.runtime
    }
}

/// CPU clocks read together, in seconds: the machine's busy time, containerd's, and the
/// bench's own and its reaped children's (the `ctr` processes).
struct CpuClocks {
    machine: f64,
    containerd: f64,
    children: f64,
    own: f64,
}

impl CpuClocks {
    fn read(containerd: i32) -> CpuClocks {
        CpuClocks {
            machine: machine_busy_ticks() as f64 / ticks_per_second(),
            containerd: cpu_ticks(containerd) as f64 / ticks_per_second(),
            children: rusage_seconds(libc::RUSAGE_CHILDREN),
            own: rusage_seconds(libc::RUSAGE_SELF),
        }
    }

    /// What `tasks` tasks cost each between `self` and `later`; the client is this process
    /// and the children it reaped (the `ctr` processes).
    fn per_task(&self, later: &CpuClocks, tasks: usize) -> CpuPerTask {
        let n = tasks.max(1) as f64;
        let client = (later.children - self.children).max(0.0) + (later.own - self.own).max(0.0);
        let containerd = (later.containerd - self.containerd).max(0.0);
        let runtime = (later.machine - self.machine - client - containerd).max(0.0);
        CpuPerTask {
            client: client / n,
            containerd: containerd / n,
            runtime: runtime / n,
        }
    }
}

/// User and system CPU time of this process (`RUSAGE_SELF`) or of its reaped children
/// (`RUSAGE_CHILDREN`), in seconds.
fn rusage_seconds(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the struct it is given; all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Runs `tasks` hello tasks of `r` through `client`, `parallel` at a time, and counts the
/// failures and what they left behind.
fn run_tasks(
    c: &Containerd,
    r: &Runtime,
    client: Client,
    tasks: usize,
    parallel: usize,
    tag: &str,
) -> Result<Throughput> {
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let containerd = c.pid().context("containerd's pid")? as i32;
    let clocks = CpuClocks::read(containerd);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= tasks {
                    break;
                }
                if let Err(err) = client.run_hello(c, r, &format!("{tag}-{n}")) {
                    if let Ok(mut failed) = failed.lock() {
                        failed.push(format!("task {n}: {err:#}"));
                    }
                }
            });
        }
    });
    let per_second = tasks as f64 / t.elapsed().as_secs_f64();
    let cpu = clocks.per_task(&CpuClocks::read(containerd), tasks);
    let ids: Vec<String> = (0..tasks).map(|n| format!("{tag}-{n}")).collect();
    let leftovers = c.wait_no_leftovers_of(&ids);
    let failed = failed.into_inner().unwrap_or_default();
    Ok(Throughput {
        per_second,
        cpu,
        failed,
        leftovers,
    })
}

/// What `count` idle containers of one runtime cost.
struct Idle {
    count: usize,
    processes_per: f64,
    threads_per: f64,
    /// Bytes of PSS per container: its shim's processes and its own.
    pss_per: f64,
    /// Where the PSS goes, per container: each kind of process, anonymous and file pages.
    breakdown: String,
    /// Bytes containerd's own PSS grew by, per container.
    containerd_per: f64,
    start: Duration,
    /// Cores the idle containers' processes kept busy together, over 3 s.
    cpu: f64,
    running: usize,
    hello: Result<Duration, String>,
    leftovers: Vec<String>,
}

/// Starts `count` idle containers of `r` one after another, measures them, and removes them.
fn idle_containers(c: &Containerd, r: &Runtime, count: usize, tag: &str) -> Result<Idle> {
    let containerd_pid = c.pid().context("containerd's pid")? as i32;
    let containerd_before = pss_bytes(containerd_pid);
    let ids: Vec<String> = (0..count).map(|n| format!("{tag}-{n}")).collect();
    let t = Instant::now();
    for id in &ids {
        let mut args = vec!["run", "-d", "--runtime", r.runtime, &r.idle_image, id];
        args.extend_from_slice(&r.idle_args);
        let out = c.ctr(&args);
        if out.status != 0 {
            remove(c, &ids);
            bail!("{}: ctr run -d {id}: {out:?}", r.name);
        }
    }
    let start = t.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let listed = c.ctr(&["tasks", "ls"]).stdout;
    let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
    let running = listed
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words.next().is_some_and(|id| wanted.contains(id)) && l.ends_with("RUNNING")
        })
        .count();
    let pids = pids_of(c, &ids);
    let cpu_before: u64 = pids.iter().map(|&pid| cpu_ticks(pid)).sum();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let cpu = (pids.iter().map(|&pid| cpu_ticks(pid)).sum::<u64>() - cpu_before) as f64
        / ticks_per_second()
        / window.elapsed().as_secs_f64();
    let pss: f64 = pids.iter().map(|&pid| pss_bytes(pid)).sum();
    let mut roles: BTreeMap<&'static str, [f64; 2]> = BTreeMap::new();
    for &pid in &pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let role = if comm.starts_with("containerd-shim") {
            "shim"
        } else if comm.trim() == "kwasi-zygote" {
            "zygote"
        } else {
            "container"
        };
        let [anon, file] = roles.entry(role).or_default();
        *anon += rollup_bytes(pid, "Pss_Anon:");
        *file += rollup_bytes(pid, "Pss_File:");
    }
    let n = count as f64;
    let breakdown = roles
        .iter()
        .map(|(role, [anon, file])| {
            format!(
                "{role} {:.2} anon + {:.2} file",
                anon / n / MIB,
                file / n / MIB
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let threads: usize = pids.iter().map(|&pid| threads_of(pid)).sum();
    let containerd_after = pss_bytes(containerd_pid);
    let hello = run_hello(c, r, &format!("{tag}-hello")).map_err(|e| format!("{e:#}"));
    remove(c, &ids);
    let mut all = ids.clone();
    all.push(format!("{tag}-hello"));
    let leftovers = c.wait_no_leftovers_of(&all);
    Ok(Idle {
        count,
        processes_per: pids.len() as f64 / n,
        threads_per: threads as f64 / n,
        pss_per: pss / n,
        breakdown,
        containerd_per: (containerd_after - containerd_before) / n,
        start,
        cpu,
        running,
        hello,
        leftovers,
    })
}

/// Kills and deletes the tasks and containers `ids`, four at a time.
fn remove(c: &Containerd, ids: &[String]) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                let Some(id) = ids.get(n) else { break };
                c.ctr(&["tasks", "delete", "--force", id]);
                c.ctr(&["containers", "delete", id]);
            });
        }
    });
}

/// The CPU time a process and its threads have used, in clock ticks (0 once it has gone).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// A process's threads.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Draws memory per container against the number of containers, one line per runtime.
fn plot(png: &Path, series: &[(String, Vec<(usize, f64)>)]) -> Result<()> {
    use plotters::prelude::*;
    let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
    let bytes = std::fs::read(font).with_context(|| {
        format!(
            "reading {} for the plot's text: apt-get install fonts-dejavu-core",
            font.display()
        )
    })?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into()))
        .map_err(|_| anyhow::anyhow!("{} is not a font", font.display()))?;
    let max_n = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(n, _)| *n))
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let mibs = || series.iter().flat_map(|(_, p)| p.iter().map(|(_, m)| *m));
    let max_mib = mibs().fold(1.0f64, f64::max) * 1.3;
    let min_mib = mibs().fold(max_mib, f64::min).min(1.0) * 0.7;
    let root = BitMapBackend::new(png, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Idle containers: PSS per container (shim + container processes)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..max_n).log_scale(), (min_mib..max_mib).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("containers running")
        .y_desc("MiB per container")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors: HashMap<usize, RGBColor> = [
        (0, RGBColor(90, 90, 90)),
        (1, RGBColor(200, 60, 40)),
        (2, RGBColor(40, 110, 200)),
        (3, RGBColor(40, 160, 80)),
        (4, RGBColor(150, 80, 180)),
    ]
    .into_iter()
    .collect();
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors.get(&i).copied().unwrap_or(BLACK);
        let points: Vec<(f64, f64)> = points.iter().map(|(n, m)| (*n as f64, *m)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
