//! `ctr task metrics`: the sandbox's cgroup figures in the protobuf containerd expects for the
//! host's cgroup version (`io.containerd.cgroups.v1.Metrics` on a legacy or hybrid host,
//! `io.containerd.cgroups.v2.Metrics` on a unified one).

use anyhow::{anyhow, Result};
use containerd_shim::protos::cgroups::metrics as v1;
use containerd_shim::protos::cgroups_v2::metrics as v2;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::util::convert_to_any;
use libcgroups::common::{get_cgroup_setup, CgroupSetup};

use crate::sandbox::Stats;

/// Encodes `stats` and the cgroup's OOM kills for containerd (CRI reports the kills as
/// `container_oom_events_total`).
pub(crate) fn to_metrics(stats: &Stats, oom_kills: u64) -> Result<Any> {
    let setup = get_cgroup_setup().map_err(|e| anyhow!("detecting the cgroup version: {e}"))?;
    let any = match setup {
        CgroupSetup::Unified => convert_to_any(Box::new(to_v2(stats, oom_kills))),
        CgroupSetup::Legacy | CgroupSetup::Hybrid => {
            convert_to_any(Box::new(to_v1(stats, oom_kills)))
        }
    };
    any.map_err(|e| anyhow!("encoding metrics: {e}"))
}

/// cgroup v1 figures: CPU time in nanoseconds, memory in bytes.
fn to_v1(stats: &Stats, oom_kills: u64) -> v1::Metrics {
    let entry = |d: &libcgroups::stats::MemoryData| v1::MemoryEntry {
        limit: d.limit,
        usage: d.usage,
        max: d.max_usage,
        failcnt: d.fail_count,
        ..Default::default()
    };
    let mem = &stats.memory;
    let stat = |key: &str| mem.stats.get(key).copied().unwrap_or_default();
    v1::Metrics {
        pids: Some(v1::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: stats.cpu.usage.usage_total,
                kernel: stats.cpu.usage.usage_kernel,
                user: stats.cpu.usage.usage_user,
                per_cpu: stats.cpu.usage.per_core_usage_total.clone(),
                ..Default::default()
            })
            .into(),
            throttling: Some(v1::Throttle {
                periods: stats.cpu.throttling.periods,
                throttled_periods: stats.cpu.throttling.throttled_periods,
                throttled_time: stats.cpu.throttling.throttled_time,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into(),
        memory: Some(v1::MemoryStat {
            cache: mem.cache,
            rss: stat("rss"),
            mapped_file: stat("mapped_file"),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            total_cache: stat("total_cache"),
            total_rss: stat("total_rss"),
            total_inactive_file: stat("total_inactive_file"),
            hierarchical_memory_limit: stat("hierarchical_memory_limit"),
            usage: Some(entry(&mem.memory)).into(),
            swap: Some(entry(&mem.memswap)).into(),
            kernel: Some(entry(&mem.kernel)).into(),
            kernel_tcp: Some(entry(&mem.kernel_tcp)).into(),
            ..Default::default()
        })
        .into(),
        memory_oom_control: Some(v1::MemoryOomControl {
            oom_kill: oom_kills,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// cgroup v2 figures: CPU time in microseconds, memory in bytes.
fn to_v2(stats: &Stats, oom_kills: u64) -> v2::Metrics {
    let mem = &stats.memory;
    let stat = |key: &str| mem.stats.get(key).copied().unwrap_or_default();
    v2::Metrics {
        pids: Some(v2::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
            ..Default::default()
        })
        .into(),
        cpu: Some(v2::CPUStat {
            usage_usec: stats.cpu.usage.usage_total,
            user_usec: stats.cpu.usage.usage_user,
            system_usec: stats.cpu.usage.usage_kernel,
            nr_periods: stats.cpu.throttling.periods,
            nr_throttled: stats.cpu.throttling.throttled_periods,
            throttled_usec: stats.cpu.throttling.throttled_time,
            ..Default::default()
        })
        .into(),
        memory: Some(v2::MemoryStat {
            anon: stat("anon"),
            file: stat("file"),
            kernel_stack: stat("kernel_stack"),
            slab: stat("slab"),
            sock: stat("sock"),
            shmem: stat("shmem"),
            file_mapped: stat("file_mapped"),
            pgfault: stat("pgfault"),
            pgmajfault: stat("pgmajfault"),
            usage: mem.memory.usage,
            usage_limit: mem.memory.limit,
            max_usage: mem.memory.max_usage,
            swap_usage: mem.memswap.usage,
            swap_limit: mem.memswap.limit,
            ..Default::default()
        })
        .into(),
        memory_events: Some(v2::MemoryEvents {
            oom_kill: oom_kills,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let mut stats = Stats::default();
        stats.memory.memory.usage = 6 << 20;
        stats.memory.memory.limit = 64 << 20;
        stats.cpu.usage.usage_total = 1234;
        stats.pids.current = 3;
        stats
    }

    #[test]
    fn v1_metrics_carry_usage_limit_cpu_pids_and_oom_kills() {
        let m = to_v1(&sample(), 2);
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert_eq!(m.memory.usage.usage, 6 << 20);
        assert_eq!(m.memory.usage.limit, 64 << 20);
        assert_eq!(m.cpu.usage.total, 1234);
        assert_eq!(m.pids.current, 3);
    }

    #[test]
    fn v2_metrics_carry_usage_limit_cpu_pids_and_oom_kills() {
        let m = to_v2(&sample(), 2);
        assert_eq!(m.memory_events.oom_kill, 2);
        assert_eq!((m.memory.usage, m.memory.usage_limit), (6 << 20, 64 << 20));
        assert_eq!(m.cpu.usage_usec, 1234);
        assert_eq!(m.pids.current, 3);
    }
}
