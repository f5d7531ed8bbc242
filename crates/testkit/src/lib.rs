//! # kwasi-testkit
//!
//! The behaviour every [`Engine`] must have, as tests an engine crate runs with
//! [`engine_tests!`](crate::engine_tests), from its dev-dependencies:
//!
//! ```ignore
//! #[cfg(test)]
//! kwasi_testkit::engine_tests!(MyEngine::default());
//! ```
//!
//! The end-to-end conformance suite (`tests/`) checks the same through containerd; these run
//! in a second and pin down the trait's contract.

#![deny(missing_docs)]

use kwasi_core::engine::{Engine, EngineError, Scratch, WasmBytes, Workload, DEFAULT_ENTRY};

/// A module whose `_start` calls `proc_exit(7)`, which also exports an empty `other`, a
/// function with a parameter and its memory.
pub const EXIT_7: &str = r#"(module
    (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
    (memory (export "memory") 1)
    (func (export "_start") (call $exit (i32.const 7)))
    (func (export "other"))
    (func (export "takes_i32") (param i32)))"#;

/// A module whose `_start` executes `unreachable`.
pub const TRAP: &str = r#"(module (func (export "_start") unreachable))"#;

/// `wat` compiled, as if read from `/test.wasm`.
pub fn wasm(wat: &str) -> WasmBytes {
    WasmBytes {
        origin: "/test.wasm".into(),
        sha256: None,
        bytes: wat::parse_str(wat).expect("the test module is valid WAT"),
    }
}

/// A workload running `/test.wasm`'s `entry` with no arguments, environment or preopens.
pub fn workload(entry: &str) -> Workload {
    Workload {
        module_path: "/test.wasm".into(),
        entry: entry.into(),
        args: vec!["/test.wasm".into()],
        env: vec![],
        cwd: "/".into(),
        preopens: vec![],
    }
}

/// `proc_exit(7)` makes `run` return 7.
pub fn proc_exit_becomes_the_exit_code<E: Engine>(engine: E) {
    let module = engine.compile(&wasm(EXIT_7)).unwrap();
    assert_eq!(engine.run(module, &workload(DEFAULT_ENTRY)).unwrap(), 7);
}

/// `run` calls the workload's entry; one that returns makes `run` return 0.
pub fn returning_from_the_entry_function_is_exit_code_zero<E: Engine>(engine: E) {
    let module = engine.compile(&wasm(EXIT_7)).unwrap();
    assert_eq!(engine.run(module, &workload("other")).unwrap(), 0);
}

/// `exports_entry` accepts exported `() -> ()` functions only.
pub fn only_exported_functions_without_params_or_results_are_entries<E: Engine>(engine: E) {
    let module = engine.compile(&wasm(EXIT_7)).unwrap();
    let entries = ["_start", "other", "takes_i32", "memory", "nope"]
        .map(|name| (name, engine.exports_entry(&module, name)));
    assert_eq!(
        entries,
        [
            ("_start", true),
            ("other", true),
            ("takes_i32", false),
            ("memory", false),
            ("nope", false)
        ]
    );
}

/// `compile` refuses truncated bytes as an invalid module, in one line.
pub fn corrupted_bytes_fail_compile_with_an_invalid_module_error<E: Engine>(engine: E) {
    let mut bad = wasm(EXIT_7);
    bad.bytes.truncate(bad.bytes.len() / 2);
    let err = engine.compile(&bad).err().unwrap();
    assert!(matches!(err, EngineError::InvalidModule(_)), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
}

/// An engine with a fingerprint round-trips a module through `precompile` and
/// `load_precompiled`; one without refuses to precompile.
pub fn a_precompiled_module_loads_and_runs_if_the_engine_precompiles<E: Engine>(engine: E) {
    match engine.fingerprint() {
        Some(fingerprint) => {
            assert!(fingerprint.starts_with(engine.name()), "{fingerprint}");
            let scratch = tempfile::tempdir().unwrap();
            let compiled = engine
                .precompile(&wasm(EXIT_7), &Scratch::under(scratch.path()))
                .unwrap();
            let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
            assert!(left.is_empty(), "precompiling left {left:?}");
            let module = engine.load_precompiled(&compiled).unwrap();
            assert!(engine.exports_entry(&module, DEFAULT_ENTRY));
            assert!(!engine.exports_entry(&module, "nope"));
            assert_eq!(engine.run(module, &workload(DEFAULT_ENTRY)).unwrap(), 7);
        }
        None => assert!(engine
            .precompile(&wasm(EXIT_7), &Scratch::under("/nonexistent"))
            .is_err()),
    }
}

/// A precompiled module loads from a file that holds it followed by other bytes (the compile
/// cache's trailer), as the cache hands it over.
pub fn a_precompiled_module_loads_from_the_start_of_a_file<E: Engine>(engine: E) {
    if engine.fingerprint().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let compiled = engine
        .precompile(&wasm(EXIT_7), &Scratch::under(dir.path()))
        .unwrap();
    let path = dir.path().join("entry");
    let mut file = compiled.clone();
    file.extend_from_slice(b"a trailer of twenty bytes");
    std::fs::write(&path, file).unwrap();
    let module = engine.load_precompiled_file(&path, &compiled).unwrap();
    assert_eq!(engine.run(module, &workload(DEFAULT_ENTRY)).unwrap(), 7);
}

/// A trap is reported as [`EngineError::Trap`], which ends the task with 134.
pub fn a_trap_is_reported_as_a_trap<E: Engine>(engine: E) {
    let module = engine.compile(&wasm(TRAP)).unwrap();
    let err = engine.run(module, &workload(DEFAULT_ENTRY)).unwrap_err();
    assert!(matches!(err, EngineError::Trap(_)), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert_eq!(err.exit_code(), 134);
}

/// Defines one `#[test]` per behaviour of this module, run against the engine `$engine`
/// builds (an expression, evaluated once per test).
#[macro_export]
macro_rules! engine_tests {
    ($engine:expr) => {
        mod engine_contract {
            use super::*;
            $crate::engine_tests!(@each $engine;
                proc_exit_becomes_the_exit_code,
                returning_from_the_entry_function_is_exit_code_zero,
                only_exported_functions_without_params_or_results_are_entries,
                corrupted_bytes_fail_compile_with_an_invalid_module_error,
                a_precompiled_module_loads_and_runs_if_the_engine_precompiles,
                a_precompiled_module_loads_from_the_start_of_a_file,
                a_trap_is_reported_as_a_trap);
        }
    };
    (@each $engine:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                $crate::$case($engine);
            }
        )*
    };
}
