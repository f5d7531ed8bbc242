//! Pod start through containerd's CRI plugin, as kubelet asks for it: RunPodSandbox (the pause
//! container, on the pod's handler), CreateContainer, StartContainer, then ContainerStatus
//! until the container has exited; and the teardown (StopPodSandbox, RemovePodSandbox).
//!
//! The pods alternate between the handlers, N rounds: `runc` (busybox `echo`, the baseline)
//! and every built kwasi shim (the probe guest's `hello`, its module compiled on the node
//! after the first round). Each pod has its own network namespace on the node's CNI bridge.
//! Prints the medians and their ratio to runc's.
//!
//! Usage: `podstart [ROUNDS]` (default 20), after `cargo build --release`, as root.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kwasi_e2e::cri::{ContainerSpec, ContainerState, BUSYBOX_IMAGE};
use measure::{median, ms};

mod measure;

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(Ok(20), |n| n.parse())
        .context("ROUNDS")?;
    let (mut node, probe, names) = measure::cri_bench_node()?;
    let handlers: Vec<(&str, String, Vec<&str>)> = names
        .into_iter()
        .map(|handler| match handler {
            "runc" => (handler, BUSYBOX_IMAGE.to_string(), vec!["-c", "echo hello"]),
            _ => (handler, probe.clone(), vec!["hello"]),
        })
        .collect();
    let mut starts: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    let mut teardowns: Vec<Vec<Duration>> = vec![Vec::new(); handlers.len()];
    // One round first, not counted: the modules get compiled and the images' snapshots warm.
    for round in 0..=rounds {
        for (i, (handler, image, args)) in handlers.iter().enumerate() {
            let t0 = Instant::now();
            let pod = node.run_pod("bench", handler)?;
            let spec = ContainerSpec {
                name: "bench",
                image,
                args,
                ..Default::default()
            };
            let id = node.run_container(&pod, &spec)?;
            loop {
                let (status, _) = node.container_status(&id)?;
                if status.state == ContainerState::ContainerExited as i32 {
                    if status.exit_code != 0 {
                        bail!("{handler}: the container exited {}", status.exit_code);
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let started = t0.elapsed();
            let t1 = Instant::now();
            node.stop_pod(&pod)?;
            node.remove_pod(&pod)?;
            let removed = t1.elapsed();
            if round > 0 {
                starts[i].push(started);
                teardowns[i].push(removed);
            }
        }
    }
    let base_start = ms(median(&mut starts[0]));
    let base_teardown = ms(median(&mut teardowns[0]));
    println!("pod start to container exit, and teardown: medians of {rounds} alternated rounds");
    for (i, (handler, _, _)) in handlers.iter().enumerate() {
        let start = ms(median(&mut starts[i]));
        let teardown = ms(median(&mut teardowns[i]));
        println!(
            "{handler:>9}: start {start:7.1} ms ({:.2} x runc)   teardown {teardown:7.1} ms ({:.2} x runc)",
            start / base_start,
            teardown / base_teardown
        );
    }
    Ok(())
}
