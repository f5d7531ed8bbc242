//! A single-node Kubernetes cluster with kwasi's shims, for trying kwasi by hand: the same
//! cluster the Kubernetes suite starts (kine, kube-apiserver, kube-controller-manager,
//! kube-scheduler, a kubelet on containerd 2.x, a CNI bridge, the RuntimeClasses of
//! `deploy/`). It prints how to reach it with kubectl, runs until Ctrl-C (or SIGTERM), then
//! deletes the workloads and removes everything it started.
//!
//! Usage (as root, from the repository): `bash tests/node/cluster.sh`, which builds what is
//! needed and runs this.

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, Signal};

fn main() -> Result<()> {
    // Blocked before any thread starts, so that only the wait below takes them.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGTERM);
    stop.thread_block().context("blocking SIGINT and SIGTERM")?;

    eprintln!("starting the cluster (kine, API server, controllers, scheduler, kubelet)...");
    let mut cluster = kwasi_e2e::kube::Cluster::start()?;
    for guest in ["probe.wasm", "http.wasm"] {
        let image = cluster.node.wasm_image(guest)?;
        println!("image {image} (imagePullPolicy: Never)");
    }
    let kubectl = kwasi_e2e::node::binary("kubectl")?;
    println!(
        "cluster ready: node {}, RuntimeClasses wasmtime and wasmer\n\
         \n    export KUBECONFIG={}\n    {} get nodes\n\
         \nCtrl-C stops it and removes everything it started.",
        kwasi_e2e::kube::NODE_NAME,
        cluster.kubeconfig().display(),
        kubectl.display(),
    );
    let signal = stop.wait().context("waiting for Ctrl-C")?;
    eprintln!("{signal}: deleting the workloads and stopping the cluster...");
    drop(cluster);
    Ok(())
}
