//! # kwasi-engine-wasmedge
//!
//! The [`Engine`] of kwasi backed by [WasmEdge](https://wasmedge.org) through `wasmedge-sdk`:
//! WASI preview 1 core modules, run by WasmEdge's interpreter.
//!
//! It links `libwasmedge` 0.17, which must be installed: `wasmedge-sys` looks in
//! `$WASMEDGE_DIR`, `~/.wasmedge` and `/usr/local`. WasmEdge's AOT compiler (an optional,
//! LLVM-based part of the library) writes a shared library to load from a file, not bytes the
//! engine could hand to kwasi's compile cache, so this engine does not precompile.

use std::collections::HashMap;

use kwasi_core::engine::{Engine, EngineError, WasmBytes, Workload};
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{ExternalInstanceType, Module, Store, Vm};

/// Runs WASI preview 1 modules with WasmEdge.
#[derive(Clone, Copy, Default)]
pub struct WasmEdgeEngine;

impl Engine for WasmEdgeEngine {
    type Module = Module;

    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<Module, EngineError> {
        Module::from_bytes(None, &wasm.bytes).map_err(|e| EngineError::InvalidModule(e.to_string()))
    }

    fn exports_entry(&self, module: &Module, name: &str) -> bool {
        matches!(
            module.get_export(name),
            Some(ExternalInstanceType::Func(ty)) if ty.args().is_empty() && ty.returns().is_empty()
        )
    }

    fn run(&self, module: Module, workload: &Workload) -> Result<i32, EngineError> {
        let args: Vec<&str> = workload.args.iter().map(String::as_str).collect();
        let env: Vec<String> = workload
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // WasmEdge takes preopens as `GUEST:HOST`, with `:readonly` for read-only ones.
        let preopens: Vec<String> = workload
            .existing_preopens()
            .iter()
            .map(|p| {
                let mode = if p.read_only { ":readonly" } else { "" };
                format!("{}:{}{mode}", p.guest_path, p.host_path.display())
            })
            .collect();
        let mut wasi = WasiModule::create(
            Some(args),
            Some(env.iter().map(String::as_str).collect()),
            Some(preopens.iter().map(String::as_str).collect()),
        )
        .map_err(|e| EngineError::Other(format!("setting up WASI: {e}")))?;

        let outcome = {
            let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
            instances.insert(wasi.name().to_string(), wasi.as_mut());
            let store = Store::new(None, instances)
                .map_err(|e| EngineError::Other(format!("linking WASI: {e}")))?;
            let mut vm = Vm::new(store);
            vm.register_module(None, module)
                .map_err(|e| EngineError::Other(format!("instantiating: {e}")))?;
            vm.run_func(None, &workload.entry, [])
        };
        match outcome {
            Ok(_) => Ok(0),
            // `proc_exit` ends the guest with "terminated"; its code is kept by the WASI module.
            Err(err) if is_termination(&err) => Ok(wasi.exit_code() as i32),
            Err(err) => match *err {
                WasmEdgeError::Core(CoreError::Execution(trap)) => {
                    Err(EngineError::Trap(trap.to_string()))
                }
                other => Err(EngineError::Other(other.to_string())),
            },
        }
    }
}

fn is_termination(err: &WasmEdgeError) -> bool {
    matches!(
        err,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}

#[cfg(test)]
kwasi_core::engine_tests!(WasmEdgeEngine);
