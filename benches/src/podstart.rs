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
use kwasi_e2e::cri::{ContainerSpec, ContainerState, Node, BUSYBOX_IMAGE};
use kwasi_e2e::{Release, Shim};
use measure::{median, ms};

#[allow(dead_code)] // the medians only: no ctr runs to check here
mod measure;

fn main() -> Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(Ok(20), |n| n.parse())
        .context("ROUNDS")?;
    let shims = Shim::built_ones();
    if shims.is_empty() {
        bail!("no shim is built: cargo build --release");
    }
    let mut node = Node::start(Release::V2)?;
    let probe = node.wasm_image("probe.wasm")?;
    let mut handlers: Vec<(&str, String, Vec<&str>)> =
        vec![("runc", BUSYBOX_IMAGE.to_string(), vec!["-c", "echo hello"])];
    for shim in &shims {
        handlers.push((shim.engine, probe.clone(), vec!["hello"]));
    }
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
