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

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use kwasi_e2e::*;
use measure::{check, median, ms};

mod measure;

/// What `_start` prints.
const DONE: &str = "large module done";

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
    let wasm = wat::parse_str(large_module(functions)).context("the generated module")?;
    let code = code_section_size(&wasm).context("the generated module has no code section")?;
    println!(
        "module: {functions} functions, {:.2} MiB, of which code {:.2} MiB",
        wasm.len() as f64 / 1048576.0,
        code as f64 / 1048576.0
    );
    let c = Containerd::start(Release::V2)?;
    let path = c.dir().join("large.wasm");
    std::fs::write(&path, &wasm)?;
    // containerd 1.6.20 cannot unpack an image with a wasm layer: run it as a CRI client
    // would, through the API (see kwasi_e2e::api).
    let image = c.import_wasm_layered("kwasi.bench/large", &path, &["--layer-type", "wasm"])?;
    let small_path = c.dir().join("small.wasm");
    std::fs::write(&small_path, wat::parse_str(large_module(1))?)?;
    let small =
        c.import_wasm_layered("kwasi.bench/small", &small_path, &["--layer-type", "wasm"])?;

    for shim in &shims {
        let cache = c.cache_dir().join(shim.engine);
        let (mut cold, mut warm, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        // One run of a module: how long it took, as the client saw it.
        let timed = |image: &str, id: String| -> Result<std::time::Duration> {
            let t = Instant::now();
            check(&c.run_layered(shim.runtime, image, &id, &["#_start"]), DONE)?;
            Ok(t.elapsed())
        };
        for i in 0..rounds {
            std::fs::remove_dir_all(&cache).ok();
            cold.push(timed(&image, format!("cold{i}-{}", shim.engine))?);
            warm.push(timed(&image, format!("warm{i}-{}", shim.engine))?);
            timed(&small, format!("small-cold{i}-{}", shim.engine))?;
            floor.push(timed(&small, format!("small-warm{i}-{}", shim.engine))?);
        }
        let (cold, warm, floor) = (median(&mut cold), median(&mut warm), median(&mut floor));
        println!(
            "{:<9} cold (compile + store) {:>9.1} ms   warm (load) {:>7.1} ms   cold/warm {:>6.1} x   \
             small module warm {:>6.1} ms   warm large/small {:>5.2} x   (medians of {rounds} alternated runs)",
            shim.engine,
            ms(cold),
            ms(warm),
            cold.as_secs_f64() / warm.as_secs_f64(),
            ms(floor),
            warm.as_secs_f64() / floor.as_secs_f64()
        );
    }
    Ok(())
}

/// A WASI command of `n` functions of integer arithmetic, each called once from `_start`,
/// which then prints [`DONE`].
fn large_module(n: usize) -> String {
    let mut wat = String::from(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $sink (mut i32) (i32.const 0))
"#,
    );
    let _ = writeln!(
        wat,
        "  (data (i32.const 16) \"{DONE}\\n\")\n  (data (i32.const 0) \"\\10\\00\\00\\00\\{:02x}\\00\\00\\00\")",
        DONE.len() + 1
    );
    for f in 0..n {
        let _ = write!(
            wat,
            "  (func $f{f} (param $x i32) (result i32) local.get $x"
        );
        for k in 0..40 {
            let _ = write!(
                wat,
                " i32.const {} i32.add i32.const {} i32.mul i32.const {} i32.xor",
                f * 7 + k,
                (k | 1) * 3,
                f ^ k
            );
        }
        let _ = writeln!(wat, ")");
    }
    // `_start` passes a value through every function in turn (no deep call stack).
    wat.push_str("  (func (export \"_start\")\n    i32.const 1");
    for f in 0..n {
        let _ = write!(wat, " call $f{f}");
    }
    wat.push_str(
        r#"
    global.set $sink
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
)
"#,
    );
    wat
}

/// The size of the module's code section (id 10).
fn code_section_size(wasm: &[u8]) -> Option<usize> {
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, len) = leb128(&wasm[at + 1..])?;
        if id == 10 {
            return Some(size);
        }
        at += 1 + len + size;
    }
    None
}

/// An unsigned LEB128 and how many bytes it took.
fn leb128(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(5) {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}
