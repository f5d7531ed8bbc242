//! The task API through containerd 2.x's CRI plugin, as kubelet drives it, for runc (the
//! baseline) and every built kwasi shim, alternated round by round:
//!
//! - `exec`: the round trip of an ExecSync (an exec probe, `kubectl exec`) into a running
//!   container: busybox `echo hello` in a busybox container (on every handler: kwasi's shims
//!   run native containers too), and the probe guest's `hello` module exec'd into a wasm
//!   container (kwasi's shims only).
//! - `teardown`: the latency of ContainerStats calls (which reach the shim) on one container of
//!   a pod, made one after the other for 300 ms while two other containers of the same pod are
//!   killed, so that their exits and deletes in the pod's one shim overlap the calls; the
//!   median over rounds of each round's slowest call, against the median call with nothing
//!   else going on. Run it against an older build (`KWASI_BIN_DIR=<its target/release>`) to
//!   compare two versions of the shim.
//!
//! Usage: `taskapi exec|teardown [ROUNDS]` (default 20), after `cargo build --release`, as
//! root.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kwasi_e2e::cri::{ContainerSpec, ContainerState, Node, Pod, BUSYBOX_IMAGE};
use measure::{median, ms};

mod measure;

/// How long the calls go on while the other containers are killed.
const WINDOW: Duration = Duration::from_millis(300);

/// A busybox container that sleeps.
const SLEEPING_BUSYBOX: &[&str] = &["-c", "exec sleep 3600"];

fn main() -> Result<()> {
    let what = std::env::args().nth(1).unwrap_or_default();
    let rounds: usize = std::env::args()
        .nth(2)
        .map_or(Ok(20), |n| n.parse())
        .context("ROUNDS")?;
    let (mut node, probe, handlers) = measure::cri_bench_node()?;
    match what.as_str() {
        "exec" => exec(&mut node, &handlers, &probe, rounds),
        "teardown" => teardown(&mut node, &handlers, &probe, rounds),
        _ => bail!("usage: taskapi exec|teardown [ROUNDS]"),
    }
}

/// Starts `containers` (name, image, args) in a new pod on `handler`; their ids once they run.
fn pod_with(
    node: &mut Node,
    handler: &str,
    containers: &[(&str, &str, &[&str])],
) -> Result<(Pod, Vec<String>)> {
    let pod = node.run_pod("bench", handler)?;
    let mut ids = Vec::new();
    for &(name, image, args) in containers {
        let spec = ContainerSpec {
            name,
            image,
            args,
            ..Default::default()
        };
        let id = node.run_container(&pod, &spec)?;
        node.wait_for_state(
            &id,
            ContainerState::ContainerRunning,
            Duration::from_secs(60),
        )?;
        ids.push(id);
    }
    Ok((pod, ids))
}

fn remove(node: &mut Node, pod: &Pod) -> Result<()> {
    node.stop_pod(pod)?;
    node.remove_pod(pod)
}

/// One ExecSync of `cmd` into `id`, checked, and how long it took.
fn timed_exec(node: &mut Node, id: &str, cmd: &[&str], expected: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = node.exec_sync(id, cmd, 10)?;
    let took = t.elapsed();
    ensure!(
        out.exit_code == 0 && out.stdout.contains(expected),
        "{cmd:?} in {id}: {out:?}"
    );
    Ok(took)
}

fn exec(node: &mut Node, handlers: &[&str], probe: &str, rounds: usize) -> Result<()> {
    // Per handler: a pod with a busybox container, and (kwasi) a wasm container.
    let mut pods = Vec::new();
    for &handler in handlers {
        let mut containers = vec![("busybox", BUSYBOX_IMAGE, SLEEPING_BUSYBOX)];
        if handler != "runc" {
            containers.push(("wasm", probe, &["sleep"]));
        }
        pods.push(pod_with(node, handler, &containers)?);
    }
    let mut native = vec![Vec::new(); handlers.len()];
    let mut wasm = vec![Vec::new(); handlers.len()];
    // One round first, not counted: the hello module gets compiled on the node.
    for round in 0..=rounds {
        for (i, (_, ids)) in pods.iter().enumerate() {
            let n = timed_exec(node, &ids[0], &["echo", "hello"], "hello")?;
            let w = match ids.get(1) {
                Some(id) => Some(timed_exec(
                    node,
                    id,
                    &["/app.wasm", "hello"],
                    "hello from wasm",
                )?),
                None => None,
            };
            if round > 0 {
                native[i].push(n);
                wasm[i].extend(w);
            }
        }
    }
    let base = ms(median(&mut native[0]));
    println!("ExecSync round trip: medians of {rounds} alternated rounds");
    for (i, handler) in handlers.iter().enumerate() {
        let n = ms(median(&mut native[i]));
        print!(
            "{handler:>9}: busybox echo {n:6.1} ms ({:.2} x runc)",
            n / base
        );
        if !wasm[i].is_empty() {
            let w = ms(median(&mut wasm[i]));
            print!("   wasm hello {w:6.1} ms ({:.2} x runc's echo)", w / base);
        }
        println!();
    }
    for (pod, _) in &pods {
        remove(node, pod)?;
    }
    Ok(())
}

fn teardown(node: &mut Node, handlers: &[&str], probe: &str, rounds: usize) -> Result<()> {
    let mut quiet = vec![Vec::new(); handlers.len()];
    let mut slowest = vec![Vec::new(); handlers.len()];
    for _ in 0..rounds {
        for (i, &handler) in handlers.iter().enumerate() {
            let (image, args): (&str, &[&str]) = if handler == "runc" {
                (BUSYBOX_IMAGE, SLEEPING_BUSYBOX)
            } else {
                (probe, &["sleep"])
            };
            let containers = [("a", image, args), ("b", image, args), ("c", image, args)];
            let (pod, ids) = pod_with(node, handler, &containers)?;
            let calm = node.stats_latencies_while_stopping(&ids[0], &[], WINDOW)?;
            let busy = node.stats_latencies_while_stopping(&ids[0], &ids[1..], WINDOW)?;
            quiet[i].extend(calm);
            slowest[i].push(busy.into_iter().max().context("no call was made")?);
            remove(node, &pod)?;
        }
    }
    println!(
        "ContainerStats on one container while two others of its pod are killed: medians of \
         {rounds} alternated rounds"
    );
    for (i, handler) in handlers.iter().enumerate() {
        let q = ms(median(&mut quiet[i]));
        let s = ms(median(&mut slowest[i]));
        println!(
            "{handler:>9}: a call alone {q:6.2} ms   the slowest call during the kills {s:6.2} ms ({:.1} x)",
            s / q
        );
    }
    Ok(())
}
