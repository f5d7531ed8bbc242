//! The compile cache's benchmark modules: a large module (many functions of integer
//! arithmetic, `_start` calls each in turn, then prints a line) and a small one of the same
//! kind, shipped as `application/wasm` layers, and their cold and warm starts through
//! containerd's API (as a CRI client runs them: `ctr` 1.6.20 cannot run an image with a wasm
//! layer). Shared by `compilecache` and `density`.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kwasi_e2e::{Containerd, Shim};

use crate::measure::{check, median};

/// What `_start` prints.
const DONE: &str = "large module done";

/// The two modules, imported into one containerd.
pub struct Modules {
    functions: usize,
    bytes: usize,
    code: usize,
    large: String,
    small: String,
}

/// Medians of one shim's starts of the two modules.
pub struct Sizes {
    /// The large module with the engine's cache emptied (compile and store).
    pub cold: Duration,
    /// The large module, compiled before.
    pub warm: Duration,
    /// The small module, compiled before.
    pub small_warm: Duration,
}

impl Sizes {
    /// A warm start of the large module against one of the small module.
    pub fn large_over_small(&self) -> f64 {
        self.warm.as_secs_f64() / self.small_warm.as_secs_f64()
    }
}

impl Modules {
    /// Generates the large module (`functions` functions) and the small one (one function)
    /// and imports both into `c` as images with a wasm layer.
    pub fn import(c: &Containerd, functions: usize) -> Result<Modules> {
        let wasm = wat::parse_str(large_module(functions)).context("the generated module")?;
        let code = code_section_size(&wasm).context("the generated module has no code section")?;
        let path = c.dir().join("large.wasm");
        std::fs::write(&path, &wasm)?;
        let large = c.import_wasm_layered("kwasi.bench/large", &path, &["--layer-type", "wasm"])?;
        let small_path = c.dir().join("small.wasm");
        std::fs::write(&small_path, wat::parse_str(large_module(1))?)?;
        let small =
            c.import_wasm_layered("kwasi.bench/small", &small_path, &["--layer-type", "wasm"])?;
        Ok(Modules {
            functions,
            bytes: wasm.len(),
            code,
            large,
            small,
        })
    }

    /// The large module's size, in a line.
    pub fn describe(&self) -> String {
        format!(
            "module: {} functions, {:.2} MiB, of which code {:.2} MiB",
            self.functions,
            self.bytes as f64 / 1048576.0,
            self.code as f64 / 1048576.0
        )
    }

    /// `rounds` alternated rounds through `shim`: the large module cold, then warm, then the
    /// small module cold (untimed) and warm.
    pub fn measure(&self, c: &Containerd, shim: &Shim, rounds: usize) -> Result<Sizes> {
        let cache = c.cache_dir().join(shim.engine);
        let (mut cold, mut warm, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        // One run of a module: how long it took, as the client saw it.
        let timed = |image: &str, id: String| -> Result<Duration> {
            let t = Instant::now();
            check(&c.run_layered(shim.runtime, image, &id, &["#_start"]), DONE)?;
            Ok(t.elapsed())
        };
        for i in 0..rounds {
            std::fs::remove_dir_all(&cache).ok();
            cold.push(timed(&self.large, format!("cold{i}-{}", shim.engine))?);
            warm.push(timed(&self.large, format!("warm{i}-{}", shim.engine))?);
            timed(&self.small, format!("small-cold{i}-{}", shim.engine))?;
            floor.push(timed(
                &self.small,
                format!("small-warm{i}-{}", shim.engine),
            )?);
        }
        Ok(Sizes {
            cold: median(&mut cold),
            warm: median(&mut warm),
            small_warm: median(&mut floor),
        })
    }
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
