//! WASI preview 1 calls whose wasmer-wasix answers differ from the specification's, mended
//! around wasmer-wasix's own functions (which keep doing the work) when a module is
//! instantiated ([`PreviewOneFixes`], an instantiation hook of wasmer-wasix's runtime):
//!
//! - `fd_renumber` is WASIX's `dup2` there: the source descriptor stays open. WASI moves it,
//!   so the source is closed once the renumbering succeeded.
//! - `fd_read` and `fd_write` on a descriptor without the right answer `ACCES`; WASI's answer
//!   is `NOTCAPABLE` (an open descriptor's read or write answers `ACCES` for nothing else).

use wasmer::{
    Extern, Function, FunctionEnv, FunctionEnvMut, Imports, Module, RuntimeError, StoreMut,
};
use wasmer_wasix::runtime::{InstantiationHook, InstantiationState};
use wasmer_wasix::wasmer_wasix_types::wasi::Errno;

const PREVIEW_1: &str = "wasi_snapshot_preview1";

/// Replaces the calls above in a module's imports with their mended versions.
#[derive(Debug)]
pub struct PreviewOneFixes;

impl InstantiationHook for PreviewOneFixes {
    fn prepare_imports(
        &self,
        _: &Module,
        store: &mut StoreMut,
        imports: &mut Imports,
    ) -> anyhow::Result<InstantiationState> {
        let env = FunctionEnv::new(store, ());
        if let Some(renumber) = original(imports, "fd_renumber") {
            let renumber = renumber.typed::<(i32, i32), i32>(store)?;
            let close = original(imports, "fd_close")
                .map(|close| close.typed::<i32, i32>(store))
                .transpose()?;
            let mended = Function::new_typed_with_env(
                store,
                &env,
                move |mut env: FunctionEnvMut<()>, from: i32, to: i32| {
                    let errno = renumber.call(&mut env, from, to)?;
                    if errno == Errno::Success as i32 && from != to {
                        if let Some(close) = &close {
                            close.call(&mut env, from)?;
                        }
                    }
                    Ok::<_, RuntimeError>(errno)
                },
            );
            imports.define(PREVIEW_1, "fd_renumber", mended);
        }
        for name in ["fd_read", "fd_write"] {
            let Some(call) = original(imports, name) else {
                continue;
            };
            let call = call.typed::<(i32, i32, i32, i32), i32>(store)?;
            let mended = Function::new_typed_with_env(
                store,
                &env,
                move |mut env: FunctionEnvMut<()>, fd: i32, iovs: i32, len: i32, done: i32| {
                    call.call(&mut env, fd, iovs, len, done).map(not_capable)
                },
            );
            imports.define(PREVIEW_1, name, mended);
        }
        Ok(InstantiationState::empty())
    }
}

/// wasmer-wasix's function for the call `name`, if the module imports it.
fn original(imports: &Imports, name: &str) -> Option<Function> {
    match imports.get_export(PREVIEW_1, name) {
        Some(Extern::Function(function)) => Some(function),
        _ => None,
    }
}

/// `NOTCAPABLE` where wasmer-wasix answers `ACCES` for a missing right.
fn not_capable(errno: i32) -> i32 {
    if errno == Errno::Access as i32 {
        Errno::Notcapable as i32
    } else {
        errno
    }
}

#[cfg(test)]
mod tests {
    use kwasi_core::engine::Engine;
    use kwasi_testkit::{wasm, workload};

    use crate::WasmerEngine;

    /// Runs a module whose `_start` is `body`, with the preview 1 calls it needs imported.
    fn exit_code(body: &str) -> i32 {
        let wat = format!(
            r#"(module
              (import "wasi_snapshot_preview1" "fd_renumber" (func $renumber (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
              (import "wasi_snapshot_preview1" "fd_fdstat_set_rights" (func $set_rights (param i32 i64 i64) (result i32)))
              (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
              (memory (export "memory") 1)
              (func (export "_start") (local $errno i32) {body}))"#
        );
        let engine = WasmerEngine::default();
        let module = engine.compile(&wasm(&wat)).unwrap();
        engine.run(module, &workload("_start")).unwrap()
    }

    #[test]
    fn fd_renumber_moves_the_descriptor_so_closing_its_source_is_badf() {
        let code = exit_code(
            "(local.set $errno (call $renumber (i32.const 1) (i32.const 2)))
             (if (local.get $errno) (then (call $exit (i32.add (i32.const 100) (local.get $errno)))))
             (call $exit (call $close (i32.const 1)))",
        );
        assert_eq!(code, 8, "fd_close of the source: BADF (8)");
    }

    #[test]
    fn fd_write_without_the_right_is_notcapable() {
        let code = exit_code(
            // fd 3: the first descriptor after stdio (whose rights wasmer-wasix does not check).
            "(local.set $errno (call $set_rights (i32.const 3) (i64.const 0) (i64.const 0)))
             (if (local.get $errno) (then (call $exit (i32.add (i32.const 100) (local.get $errno)))))
             (call $exit (call $write (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 8)))",
        );
        assert_eq!(code, 76, "fd_write without fd_write: NOTCAPABLE (76)");
    }
}
