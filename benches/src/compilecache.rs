//! Cold against warm start of a large module through the compile cache.
//!
//! Generates a module with at least 5 MiB of code (many functions of integer arithmetic,
//! `_start` calls each in turn, then prints a line), ships it as an `application/wasm` layer
//! (`kwasi image build --layer-type wasm`), and for every built shim alternates, N rounds: a
//! run with that engine's cache emptied (cold: the shim compiles and stores the module) and a
//! run again (warm: it loads the stored form), and a warm run of a small module of the same
//! kind (one function, a few hundred bytes) as the floor a warm start cannot go below. Each
//! run goes through containerd's API as a CRI client would (create container and task,
//! start, wait, delete), since `ctr` 1.6.20 cannot run an image with a wasm layer. Prints the
//! medians and their ratios (cold/warm, and warm large/warm small).
//!
//! Usage: `compilecache [ROUNDS] [FUNCTIONS]` (defaults 10 and 16000), after
//! `cargo build --release`, as root.

use anyhow::{bail, Context, Result};
use kwasi_e2e::*;
use measure::ms;

mod compiled;
mod measure;

fn main() -> Result<()> {
    let mut argv = std::env::args().skip(1);
    let rounds: usize = argv
        .next()
        .map_or(Ok(10), |n| n.parse())
        .context("ROUNDS")?;
    let functions: usize = argv
        .next()
        .map_or(Ok(16_000), |n| n.parse())
        .context("FUNCTIONS")?;
    let shims = Shim::built_ones();
    if shims.is_empty() {
        bail!("no shim is built: cargo build --release");
    }
    let c = Containerd::start(Release::V2)?;
    let modules = compiled::Modules::import(&c, functions)?;
    println!("{}", modules.describe());
    for shim in &shims {
        let sizes = modules.measure(&c, shim, rounds)?;
        println!(
            "{:<9} cold (compile + store) {:>9.1} ms   warm (load) {:>7.1} ms   cold/warm {:>6.1} x   \
             small module warm {:>6.1} ms   warm large/small {:>5.2} x   (medians of {rounds} alternated runs)",
            shim.engine,
            ms(sizes.cold),
            ms(sizes.warm),
            sizes.cold.as_secs_f64() / sizes.warm.as_secs_f64(),
            ms(sizes.small_warm),
            sizes.large_over_small()
        );
    }
    Ok(())
}
