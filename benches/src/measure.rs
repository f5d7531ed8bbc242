//! What the benchmarks share: medians, checked runs, the CRI node. Each benchmark includes
//! this module and uses its part of it.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{bail, Result};
use kwasi_e2e::cri::Node;
use kwasi_e2e::{CtrOutput, Release, Shim};

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
