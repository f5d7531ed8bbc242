//! # kwasi-engine-wasmedge
//!
//! The [`Engine`] of kwasi backed by [WasmEdge](https://wasmedge.org) through `wasmedge-sdk`:
//! WASI preview 1 core modules, run by WasmEdge's interpreter or, where the installed
//! `libwasmedge` has its (LLVM-based, optional) AOT compiler, as native code.
//!
//! It links `libwasmedge` 0.17, which must be installed: `wasmedge-sys` looks in
//! `$WASMEDGE_DIR`, `~/.wasmedge` and `/usr/local`.
//!
//! With the AOT compiler, [`Engine::precompile`] produces a *universal* wasm module (the
//! module plus its native code in a custom section), which kwasi's compile cache stores and
//! [`Engine::load_precompiled`] loads in WasmEdge's AOT run mode. Without it, the engine has
//! no fingerprint and every start goes to the interpreter.

use std::collections::HashMap;
use std::sync::OnceLock;

use kwasi_core::engine::{Engine, EngineError, Scratch, WasmBytes, Workload};
use wasmedge_sdk::config::{CommonConfigOptions, CompilerConfigOptions, Config, ConfigBuilder};
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::utils::CoreVersion;
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{
    Compiler, CompilerOptimizationLevel, CompilerOutputFormat, ExternalInstanceType, Module,
    RunMode, Store, Vm,
};

/// A module ready to run, and whether it carries AOT code (which needs the AOT run mode).
pub struct Loaded {
    module: Module,
    aot: bool,
}

/// Runs WASI preview 1 modules with WasmEdge.
#[derive(Clone, Copy, Default)]
pub struct WasmEdgeEngine;

impl Engine for WasmEdgeEngine {
    type Module = Loaded;

    fn name(&self) -> &'static str {
        "wasmedge"
    }

    fn compile(&self, wasm: &WasmBytes) -> Result<Loaded, EngineError> {
        let module = Module::from_bytes(None, &wasm.bytes)
            .map_err(|e| EngineError::InvalidModule(e.to_string()))?;
        Ok(Loaded { module, aot: false })
    }

    fn exports_entry(&self, loaded: &Loaded, name: &str) -> bool {
        matches!(
            loaded.module.get_export(name),
            Some(ExternalInstanceType::Func(ty)) if ty.args().is_empty() && ty.returns().is_empty()
        )
    }

    fn fingerprint(&self) -> Option<String> {
        // The compiler exists only in builds of libwasmedge with LLVM: probe it once.
        static HAS_COMPILER: OnceLock<bool> = OnceLock::new();
        let has_compiler = *HAS_COMPILER.get_or_init(|| {
            aot_config(RunMode::Interpreter)
                .and_then(|c| compiler(&c))
                .is_ok()
        });
        has_compiler.then(|| {
            format!(
                "wasmedge-{}-aot-universal-o2",
                CoreVersion::version_string()
            )
        })
    }

    fn precompile(&self, wasm: &WasmBytes, scratch: &Scratch) -> Result<Vec<u8>, EngineError> {
        let compiler = compiler(&aot_config(RunMode::Interpreter)?)?;
        let dir = scratch.dir()?;
        // The code generator also writes its intermediate object and library to the temporary
        // directory, which a container's rootfs may not have: keep them in the scratch space.
        std::env::set_var("TMPDIR", dir);
        let output = compiler.compile_from_bytes(&wasm.bytes, "module", dir);
        std::env::remove_var("TMPDIR");
        let output =
            output.map_err(|e| EngineError::InvalidModule(format!("AOT compiler: {e}")))?;
        std::fs::read(&output)
            .map_err(|e| EngineError::Other(format!("reading {}: {e}", output.display())))
    }

    fn load_precompiled(&self, compiled: &[u8]) -> Result<Loaded, EngineError> {
        let module = Module::from_bytes(Some(&aot_config(RunMode::Aot)?), compiled)
            .map_err(|e| EngineError::Other(format!("loading precompiled module: {e}")))?;
        Ok(Loaded { module, aot: true })
    }

    fn run(&self, loaded: Loaded, workload: &Workload) -> Result<i32, EngineError> {
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

        let config = if loaded.aot {
            Some(aot_config(RunMode::Aot)?)
        } else {
            None
        };
        let outcome = {
            let mut instances: HashMap<String, &mut dyn SyncInst> = HashMap::new();
            instances.insert(wasi.name().to_string(), wasi.as_mut());
            let store = Store::new(config.as_ref(), instances)
                .map_err(|e| EngineError::Other(format!("linking WASI: {e}")))?;
            let mut vm = Vm::new(store);
            vm.register_module(None, loaded.module)
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

/// The configuration of the AOT compiler (universal wasm output, optimised for speed), or of
/// loading and running its output (`RunMode::Aot`).
fn aot_config(mode: RunMode) -> Result<Config, EngineError> {
    ConfigBuilder::new(CommonConfigOptions::default().run_mode(mode))
        .with_compiler_config(
            CompilerConfigOptions::new()
                .out_format(CompilerOutputFormat::Wasm)
                .optimization_level(CompilerOptimizationLevel::O2),
        )
        .build()
        .map_err(|e| EngineError::Other(format!("configuring WasmEdge: {e}")))
}

fn compiler(config: &Config) -> Result<Compiler, EngineError> {
    Compiler::new(Some(config))
        .map_err(|e| EngineError::Other(format!("this libwasmedge has no AOT compiler: {e}")))
}

fn is_termination(err: &WasmEdgeError) -> bool {
    matches!(
        err,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}

#[cfg(test)]
kwasi_testkit::engine_tests!(WasmEdgeEngine);
