//! The code that runs inside the container process: libcontainer calls it once the sandbox is
//! in place.

use std::io::Write;
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::cache::CompileCache;
use crate::engine::{Engine, EngineError, Workload, DEFAULT_ENTRY};
use crate::http::{HttpConfig, Resources};
use crate::image::layers::WasmLayer;

/// Runs a wasm workload with engine `E` in the container process.
///
/// `validate` (at `create`) reads and compiles the module, so that bad input fails `create`
/// with its reason; `exec` (at `start`) runs what `validate` prepared and ends the process with
/// the guest's exit code.
pub(crate) struct WasmExecutor<E: Engine> {
    engine: E,
    cache: Option<Arc<CompileCache>>,
    wasm_layer: Option<Arc<WasmLayer>>,
    prepared: Arc<Mutex<Option<Prepared<E>>>>,
}

/// What `validate` leaves for `exec`: the workload and its compiled module.
type Prepared<E> = (Workload, <E as Engine>::Module);

impl<E: Engine> Clone for WasmExecutor<E> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            cache: self.cache.clone(),
            wasm_layer: self.wasm_layer.clone(),
            prepared: Arc::clone(&self.prepared),
        }
    }
}

impl<E: Engine> WasmExecutor<E> {
    pub(crate) fn new(
        engine: E,
        cache: Option<Arc<CompileCache>>,
        wasm_layer: Option<Arc<WasmLayer>>,
    ) -> Self {
        Self {
            engine,
            cache,
            wasm_layer,
            prepared: Arc::new(Mutex::new(None)),
        }
    }

    fn prepare(&self, spec: &Spec) -> Result<Prepared<E>, String> {
        let mut workload = Workload::from_spec(spec).map_err(|e| e.to_string())?;
        let wasm = match &self.wasm_layer {
            Some(layer) => workload.use_layer(layer),
            None => workload.read_module().map_err(|e| e.to_string())?,
        };
        if wasm.is_component() {
            self.check_component(&workload)
                .map_err(|e| format!("{}: {e}", wasm.origin))?;
        }
        let module = match &self.cache {
            Some(cache) => cache
                .load_or_compile(&self.engine, &wasm)
                .map(|(module, outcome)| {
                    log::debug!("{}: compile cache {outcome:?}", wasm.origin);
                    module
                }),
            None => self.engine.compile(&wasm),
        }
        .and_then(|module| {
            if self.engine.exports_entry(&module, &workload.entry) {
                Ok(module)
            } else if wasm.is_component() {
                Err(EngineError::Other(
                    "the component exports neither wasi:cli/run nor wasi:http/incoming-handler"
                        .to_string(),
                ))
            } else {
                Err(EngineError::MissingExport {
                    name: workload.entry.clone(),
                })
            }
        })
        .map_err(|e| format!("{}: {e}", wasm.origin))?;
        Ok((workload, module))
    }
}

impl<E: Engine> WasmExecutor<E> {
    /// Refuses, at `create`, a component that cannot run: on an engine without components,
    /// with a `#func` entry, or with HTTP settings that are wrong.
    fn check_component(&self, workload: &Workload) -> Result<(), String> {
        if !self.engine.runs_components() {
            return Err(format!(
                "is a WebAssembly component; the {} shim runs core modules only (components \
                 run with the wasmtime shim)",
                self.engine.name()
            ));
        }
        if workload.entry != DEFAULT_ENTRY {
            return Err(format!(
                "a component runs through its wasi:cli/run or wasi:http/incoming-handler \
                 export: drop the #{} suffix",
                workload.entry
            ));
        }
        HttpConfig::from_env(&workload.env, Resources::of_this_process())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl<E: Engine> Executor for WasmExecutor<E> {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        // The container process inherits the shim's logger; keep compiler internals (cranelift
        // logs every pass at debug level) out of the shim log even when containerd debugs.
        log::set_max_level(log::LevelFilter::Info.min(log::max_level()));
        let prepared = self
            .prepare(spec)
            .map_err(ExecutorValidationError::ArgValidationError)?;
        let mut slot = self
            .prepared
            .lock()
            .map_err(|_| ExecutorValidationError::ArgValidationError("poisoned lock".into()))?;
        *slot = Some(prepared);
        Ok(())
    }

    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let taken = self.prepared.lock().ok().and_then(|mut slot| slot.take());
        let (workload, module) = match taken {
            Some(prepared) => prepared,
            None => self.prepare(spec).map_err(ExecutorError::Other)?,
        };
        crate::signals::exit_on_termination_signals();
        let code = match self.engine.run(module, &workload) {
            Ok(code) => code,
            Err(err) => {
                let _ = std::io::stdout().flush();
                let _ = writeln!(std::io::stderr(), "{}: {err}", self.engine.name());
                err.exit_code()
            }
        };
        let _ = std::io::stdout().flush();
        std::process::exit(code)
    }
}
