//! Where the milliseconds of a start go: `ctr run --rm` of the hello image through each built
//! shim and of busybox `echo` through runc, traced by the kernel (tracefs events: process
//! exec and exit, cgroup mkdir/rmdir, `pivot_root`), limited to containerd, `ctr` and
//! their descendants. Tracing costs a few microseconds per event, not the ptrace round trips
//! of `strace`, so the run keeps its speed.
//!
//! Each run is cut at these points, all read from the trace:
//!
//! 1. `ctr` execs: the start;
//! 2. containerd execs the runtime's shim (its `start` command);
//! 3. the first cgroup of the container is made (the runtime begins to build it);
//! 4. the container's first process calls `pivot_root` (cgroups, namespaces, mounts done);
//! 5. that process exits (the workload: for runc, exec of busybox and `echo`; for kwasi, the
//!    module loaded from the compile cache and run);
//! 6. the container's last cgroup is removed (exit reported, task deleted);
//! 7. the shim's last process exits;
//! 8. `ctr` exits: the end.
//!
//! Prints, per runtime, the median of each phase over the rounds (alternated, after one
//! untimed run each), and the phases of the wasm runtimes as ratios to runc's.
//!
//! Usage: `startbreakdown [ROUNDS]` (default 20), after `cargo build --release`, as root, on
//! a kernel with tracefs (mounted at `/sys/kernel/tracing` if it is not).
//! `KWASI_BENCH_MOUNTS=4000` adds the mount table of a node with about 1,000 pods.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kwasi_e2e::*;
use measure::{check, HelloBench, HELLO};

mod measure;

/// The phases, between consecutive points of the module's docs.
const PHASES: [&str; 7] = [
    "containerd, to the shim's exec",
    "shim start and create, to the first cgroup",
    "cgroups, namespaces, mounts, to pivot_root",
    "the workload, to its exit",
    "exit and delete, to the last cgroup's removal",
    "shim shutdown",
    "containerd's cleanup, to ctr's exit",
];

/// Where tracefs is mounted.
const TRACEFS: &str = "/sys/kernel/tracing";

/// The events traced.
const EVENTS: &[&str] = &[
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "cgroup/cgroup_mkdir",
    "cgroup/cgroup_rmdir",
    "syscalls/sys_enter_pivot_root",
];

fn main() -> Result<()> {
    let bench = HelloBench::start()?;
    let (c, rounds) = (&bench.containerd, bench.rounds);
    let echo = ["/bin/busybox", "echo", "hello"];
    let containerd = c.pid().context("containerd is not running")?;
    let tracer = Tracer::start(&[containerd, std::process::id()])?;

    // (name, runtime, image, args, expected output)
    let mut runtimes = vec![("runc", RUNC, bench.busybox.as_str(), &echo[..], "hello")];
    for shim in &bench.shims {
        runtimes.push((
            shim.engine,
            shim.runtime,
            bench.hello.as_str(),
            &[][..],
            HELLO,
        ));
    }
    let mut phases: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); PHASES.len()]; runtimes.len()];
    for round in 0..=rounds {
        for (r, (name, runtime, image, args, expected)) in runtimes.iter().enumerate() {
            let id = format!("b{round}-{name}");
            tracer.clear()?;
            check(&c.run(runtime, &[], image, &id, args), expected)?;
            let trace = tracer.read()?;
            if std::env::var_os("KWASI_TRACE_DUMP").is_some() {
                eprintln!("{trace}");
            }
            let points = points(&trace, &id)
                .with_context(|| format!("reading the trace of {name}'s run {id}"))?;
            if round > 0 {
                for (p, pair) in points.windows(2).enumerate() {
                    phases[r][p].push(Duration::from_secs_f64(pair[1] - pair[0]));
                }
            }
        }
    }
    drop(tracer);

    println!("`ctr run --rm`, medians of {rounds} alternated rounds, ms");
    let header: Vec<String> = runtimes.iter().map(|(n, ..)| format!("{n:>9}")).collect();
    println!("{:<48}{}", "", header.join(""));
    let medians: Vec<Vec<f64>> = phases
        .iter_mut()
        .map(|per| {
            per.iter_mut()
                .map(|d| measure::ms(measure::median(d)))
                .collect()
        })
        .collect();
    for (p, phase) in PHASES.iter().enumerate() {
        let cells: Vec<String> = medians.iter().map(|m| format!("{:>9.1}", m[p])).collect();
        let ratios: Vec<String> = medians[1..]
            .iter()
            .map(|m| format!("{:.2}", m[p] / medians[0][p]))
            .collect();
        println!(
            "{phase:<48}{}   x runc: {}",
            cells.join(""),
            ratios.join(" / ")
        );
    }
    let totals: Vec<String> = medians
        .iter()
        .map(|m| format!("{:>9.1}", m.iter().sum::<f64>()))
        .collect();
    println!("{:<48}{}", "sum of the medians", totals.join(""));
    Ok(())
}

/// The points of the module's docs, in seconds of trace time, for the run of container `id`
/// in `trace` (tracefs's text form).
fn points(trace: &str, id: &str) -> Result<Vec<f64>> {
    let events: Vec<Event> = trace.lines().filter_map(Event::parse).collect();
    let find = |what: &str, pred: &dyn Fn(&Event) -> bool| {
        events
            .iter()
            .find(|e| pred(e))
            .with_context(|| format!("no {what} in the trace"))
    };
    let ctr = find("exec of ctr", &|e| {
        e.name == "sched_process_exec" && e.field("filename").is_some_and(|f| f.ends_with("/ctr"))
    })?;
    let shim = find("exec of a shim", &|e| {
        e.name == "sched_process_exec"
            && e.field("filename")
                .is_some_and(|f| f.contains("containerd-shim-"))
    })?;
    let in_container_cgroup = |e: &Event| {
        e.field("path")
            .is_some_and(|p| p.split('/').any(|part| part == id))
    };
    let cgroup = find("cgroup of the container", &|e| {
        e.name == "cgroup_mkdir" && in_container_cgroup(e)
    })?;
    let pivot = find("pivot_root", &|e| {
        // Shown as `sys_pivot_root(new_root: …, put_old: …)`.
        e.name.starts_with("sys_pivot_root") && e.time >= cgroup.time
    })?;
    let exit = find("exit of the container's process", &|e| {
        e.name == "sched_process_exit" && e.pid == pivot.pid
    })?;
    let rmdir = events
        .iter()
        .rfind(|e| e.name == "cgroup_rmdir" && in_container_cgroup(e))
        .context("no removal of the container's cgroup in the trace")?;
    // The shim's processes: those whose exec was of the shim's binary.
    let shim_binary = shim.field("filename").unwrap_or_default();
    let shim_pids: Vec<u32> = events
        .iter()
        .filter(|e| e.name == "sched_process_exec" && e.field("filename") == Some(shim_binary))
        .map(|e| e.pid)
        .collect();
    let shim_exit = events
        .iter()
        .rfind(|e| e.name == "sched_process_exit" && shim_pids.contains(&e.pid))
        .context("no exit of the shim in the trace")?;
    let ctr_exit = find("exit of ctr", &|e| {
        e.name == "sched_process_exit" && e.pid == ctr.pid
    })?;
    let points = vec![
        ctr.time,
        shim.time,
        cgroup.time,
        pivot.time,
        exit.time,
        rmdir.time,
        shim_exit.time,
        ctr_exit.time,
    ];
    if points.windows(2).any(|w| w[1] < w[0]) {
        bail!("the points are out of order: {points:?}");
    }
    Ok(points)
}

/// One line of the trace.
struct Event<'a> {
    pid: u32,
    time: f64,
    name: &'a str,
    details: &'a str,
}

impl<'a> Event<'a> {
    /// `  comm-PID  [CPU] FLAGS  SECONDS: NAME: DETAILS`; comments and other lines are None.
    fn parse(line: &'a str) -> Option<Event<'a>> {
        if line.starts_with('#') {
            return None;
        }
        let (head, rest) = line.split_once(": ")?;
        let time = head.rsplit(' ').next()?.parse().ok()?;
        let task = head.split(" [").next()?.trim();
        let pid = task.rsplit_once('-')?.1.parse().ok()?;
        let (name, details) = rest.split_once(": ").unwrap_or((rest, ""));
        Some(Event {
            pid,
            time,
            name,
            details,
        })
    }

    /// The value of `key=value` in the details (up to the next space).
    fn field(&self, key: &str) -> Option<&'a str> {
        self.details
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }
}

/// Kernel tracing of [`EVENTS`] for some processes and their descendants; off when dropped.
struct Tracer;

impl Tracer {
    /// Mounts tracefs if needed, and traces `pids` and every process they fork from now on.
    fn start(pids: &[u32]) -> Result<Tracer> {
        if !Path::new(TRACEFS).join("events").exists() {
            let out = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", TRACEFS])
                .output()
                .context("mounting tracefs")?;
            if !out.status.success() {
                bail!(
                    "mounting tracefs at {TRACEFS}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let tracer = Tracer;
        tracer.write("tracing_on", "0")?;
        tracer.write("set_event", "")?;
        for event in EVENTS {
            tracer
                .write(&format!("events/{event}/enable"), "1")
                .with_context(|| format!("this kernel cannot trace {event}"))?;
        }
        // The filter matches threads: every thread of each process, and (event-fork) every
        // thread or process they make from now on.
        let mut threads = Vec::new();
        for pid in pids {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                .with_context(|| format!("listing the threads of process {pid}"))?;
            threads.extend(
                tasks
                    .flatten()
                    .map(|t| t.file_name().to_string_lossy().into_owned()),
            );
        }
        tracer.write("set_event_pid", &threads.join(" "))?;
        tracer.write("options/event-fork", "1")?;
        tracer.write("buffer_size_kb", "8192")?;
        tracer.clear()?;
        tracer.write("tracing_on", "1")?;
        Ok(tracer)
    }

    fn write(&self, file: &str, value: &str) -> Result<()> {
        std::fs::write(Path::new(TRACEFS).join(file), value)
            .with_context(|| format!("writing {value:?} to {TRACEFS}/{file}"))
    }

    /// Empties the trace buffer.
    fn clear(&self) -> Result<()> {
        self.write("trace", "")
    }

    /// The trace so far.
    fn read(&self) -> Result<String> {
        std::fs::read_to_string(Path::new(TRACEFS).join("trace")).context("reading the trace")
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.write("tracing_on", "0");
        let _ = self.write("set_event", "");
        let _ = self.write("set_event_pid", "");
        let _ = self.write("options/event-fork", "0");
        let _ = self.clear();
    }
}
