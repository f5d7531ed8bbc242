//! What the benchmarks share: medians and checked runs.

use std::time::Duration;

use anyhow::{bail, Result};
use kwasi_e2e::CtrOutput;

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
