//! The settings of the HTTP server, read from the task's environment, with defaults sized from
//! the task's cgroup.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The address to listen on. The name is the one runwasi and `wasmtime serve` users already
/// set, so a pod spec moves between them unchanged.
pub const ADDR_VAR: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// How many requests run in guest instances at once.
pub const MAX_CONCURRENCY_VAR: &str = "KWASI_HTTP_MAX_CONCURRENCY";
/// How many more requests may wait for an instance before the server answers 503.
pub const MAX_QUEUE_VAR: &str = "KWASI_HTTP_MAX_QUEUE";
/// The largest request body accepted, in bytes.
pub const MAX_BODY_VAR: &str = "KWASI_HTTP_MAX_BODY_BYTES";
/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEADER_VAR: &str = "KWASI_HTTP_MAX_HEADER_BYTES";
/// How long in-flight requests may run after SIGTERM, in seconds.
pub const DRAIN_VAR: &str = "KWASI_HTTP_DRAIN_SECONDS";

/// The listen address when [`ADDR_VAR`] is not set: every interface of the task's network
/// namespace (the pod's), port 8080.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080));
/// The upper bound of [`HttpConfig::max_concurrency`]: the instance pool holds this many.
pub const CONCURRENCY_LIMIT: usize = 1000;
/// The memory one in-flight request is assumed to need when the default concurrency is sized
/// from the cgroup's memory limit.
pub const MEMORY_PER_REQUEST: u64 = 16 << 20;
/// In-flight requests per CPU when the default concurrency is sized from the cgroup's CPUs.
pub const REQUESTS_PER_CPU: usize = 64;
/// Default [`HttpConfig::max_body_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BODY: u64 = 16 << 20;
/// Default [`HttpConfig::max_header_bytes`]: 64 KiB.
pub const DEFAULT_MAX_HEADER: usize = 64 << 10;
/// The smallest head limit hyper can enforce.
const MIN_HEADER: usize = 8192;
/// Default [`HttpConfig::drain`]: below Kubernetes' default grace period of 30 s, so that the
/// drain ends before the kubelet's SIGKILL.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(25);

/// How a task serves HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Requests handled at once, each in its own instance.
    pub max_concurrency: usize,
    /// Requests that may wait for a free instance; beyond them the server answers 503.
    pub max_queue: usize,
    /// Larger request bodies get 413 (when announced by `Content-Length`) or end the body
    /// stream the guest reads with an error.
    pub max_body_bytes: u64,
    /// Larger request heads get 431.
    pub max_header_bytes: usize,
    /// How long in-flight requests may finish after SIGTERM.
    pub drain: Duration,
}

/// A setting in the task's environment that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value}: {reason}")]
pub struct ConfigError {
    var: &'static str,
    value: String,
    reason: String,
}

/// What the task's cgroup allows: the inputs of the default concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// CPUs the task may use (its CPU quota, rounded up, or the CPUs it may run on).
    pub cpus: usize,
    /// The cgroup's memory limit in bytes, `None` when unlimited.
    pub memory: Option<u64>,
}

impl Resources {
    /// Reads the limits of the calling process's cgroup (v2; v1 and no cgroup mean no memory
    /// limit).
    pub fn of_this_process() -> Resources {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Resources {
            cpus,
            memory: cgroup_memory_limit(),
        }
    }

    /// The concurrency these resources allow by default: [`REQUESTS_PER_CPU`] per CPU, at
    /// most one per [`MEMORY_PER_REQUEST`] of memory, between 1 and [`CONCURRENCY_LIMIT`].
    pub fn default_concurrency(&self) -> usize {
        let by_cpu = self.cpus.saturating_mul(REQUESTS_PER_CPU);
        let by_memory = self
            .memory
            .map_or(usize::MAX, |m| (m / MEMORY_PER_REQUEST) as usize);
        by_cpu.min(by_memory).clamp(1, CONCURRENCY_LIMIT)
    }
}

impl HttpConfig {
    /// The settings in `env` (the task's environment), with defaults for the rest.
    pub fn from_env(env: &[(String, String)], resources: Resources) -> Result<Self, ConfigError> {
        let get = |var: &str| crate::workload::env_var(env, var);
        let addr = match get(ADDR_VAR) {
            Some(v) => v.parse().map_err(|e| ConfigError {
                var: ADDR_VAR,
                value: v.to_string(),
                reason: format!("{e}: give an IP address and port, such as {DEFAULT_ADDR}"),
            })?,
            None => DEFAULT_ADDR,
        };
        let max_concurrency = number(get(MAX_CONCURRENCY_VAR), MAX_CONCURRENCY_VAR)?
            .unwrap_or_else(|| resources.default_concurrency() as u64);
        if max_concurrency == 0 || max_concurrency > CONCURRENCY_LIMIT as u64 {
            return Err(ConfigError {
                var: MAX_CONCURRENCY_VAR,
                value: max_concurrency.to_string(),
                reason: format!("must be between 1 and {CONCURRENCY_LIMIT}"),
            });
        }
        let max_concurrency = max_concurrency as usize;
        let max_queue =
            number(get(MAX_QUEUE_VAR), MAX_QUEUE_VAR)?.map_or(max_concurrency, |q| q as usize);
        let max_body_bytes = number(get(MAX_BODY_VAR), MAX_BODY_VAR)?.unwrap_or(DEFAULT_MAX_BODY);
        let max_header_bytes =
            number(get(MAX_HEADER_VAR), MAX_HEADER_VAR)?.map_or(DEFAULT_MAX_HEADER, |h| h as usize);
        if max_header_bytes < MIN_HEADER {
            return Err(ConfigError {
                var: MAX_HEADER_VAR,
                value: max_header_bytes.to_string(),
                reason: format!("must be at least {MIN_HEADER}"),
            });
        }
        let drain = number(get(DRAIN_VAR), DRAIN_VAR)?.map_or(DEFAULT_DRAIN, Duration::from_secs);
        Ok(HttpConfig {
            addr,
            max_concurrency,
            max_queue,
            max_body_bytes,
            max_header_bytes,
            drain,
        })
    }
}

fn number(value: Option<&str>, var: &'static str) -> Result<Option<u64>, ConfigError> {
    value
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| ConfigError {
                var,
                value: v.to_string(),
                reason: "not a whole number".to_string(),
            })
        })
        .transpose()
}

/// `memory.max` of this process's cgroup v2, `None` when unlimited or unknown.
fn cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2 has a single line, `0::<path>`; inside a cgroup namespace the path is `/`.
    let path = membership.lines().find_map(|l| l.strip_prefix("0::"))?;
    let file = format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/'));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CPUS: Resources = Resources {
        cpus: 2,
        memory: None,
    };

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_listen_on_8080_with_concurrency_from_the_cpus() {
        let config = HttpConfig::from_env(&[], TWO_CPUS).unwrap();
        assert_eq!(config.addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.max_concurrency, 2 * REQUESTS_PER_CPU);
        assert_eq!(config.max_queue, config.max_concurrency);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY);
        assert_eq!(config.drain, DEFAULT_DRAIN);
    }

    #[test]
    fn a_memory_limit_lowers_the_default_concurrency() {
        let small = Resources {
            cpus: 8,
            memory: Some(64 << 20),
        };
        assert_eq!(small.default_concurrency(), 4);
        let tiny = Resources {
            cpus: 8,
            memory: Some(1 << 20),
        };
        assert_eq!(tiny.default_concurrency(), 1);
    }

    #[test]
    fn the_default_concurrency_never_exceeds_the_pool() {
        let huge = Resources {
            cpus: 512,
            memory: None,
        };
        assert_eq!(huge.default_concurrency(), CONCURRENCY_LIMIT);
    }

    #[test]
    fn environment_overrides_every_default() {
        let config = HttpConfig::from_env(
            &env(&[
                (ADDR_VAR, "127.0.0.1:9000"),
                (MAX_CONCURRENCY_VAR, "3"),
                (MAX_QUEUE_VAR, "0"),
                (MAX_BODY_VAR, "10"),
                (MAX_HEADER_VAR, "16384"),
                (DRAIN_VAR, "2"),
            ]),
            TWO_CPUS,
        )
        .unwrap();
        assert_eq!(config.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(config.max_concurrency, 3);
        assert_eq!(config.max_queue, 0);
        assert_eq!(config.max_body_bytes, 10);
        assert_eq!(config.max_header_bytes, 16384);
        assert_eq!(config.drain, Duration::from_secs(2));
    }

    #[test]
    fn a_bad_address_names_the_variable() {
        let err = HttpConfig::from_env(&env(&[(ADDR_VAR, "localhost")]), TWO_CPUS).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("WASMTIME_HTTP_PROXY_SOCKET_ADDR=localhost: "),
            "{err}"
        );
    }

    #[test]
    fn concurrency_outside_the_pool_is_refused() {
        for bad in ["0", "1001", "many"] {
            let result = HttpConfig::from_env(&env(&[(MAX_CONCURRENCY_VAR, bad)]), TWO_CPUS);
            assert!(result.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_header_limit_below_hypers_minimum_is_refused() {
        let err = HttpConfig::from_env(&env(&[(MAX_HEADER_VAR, "100")]), TWO_CPUS).unwrap_err();
        assert!(err.to_string().contains("at least 8192"), "{err}");
    }
}
