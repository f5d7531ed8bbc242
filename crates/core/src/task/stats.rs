//! `ctr task metrics`: the cgroup's figures, in the protobuf containerd expects for the
//! host's cgroup version.

use anyhow::{anyhow, Result};
use containerd_shim::cgroup::{collect_metrics, collect_metrics_v2, get_cgroup};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::util::convert_to_any;

/// The metrics of the cgroup that process `pid` is in.
pub(crate) fn cgroup_metrics(pid: i32) -> Result<Any> {
    let cgroup = get_cgroup(pid as u32).map_err(|e| anyhow!("finding the cgroup of {pid}: {e}"))?;
    let any = if cgroup.v2() {
        let metrics = collect_metrics_v2(&cgroup).map_err(|e| anyhow!("reading metrics: {e}"))?;
        convert_to_any(Box::new(metrics))
    } else {
        let metrics = collect_metrics(&cgroup).map_err(|e| anyhow!("reading metrics: {e}"))?;
        convert_to_any(Box::new(metrics))
    };
    any.map_err(|e| anyhow!("encoding metrics: {e}"))
}
