//! The code that runs inside the container process: libcontainer calls it once the sandbox is
//! in place.

use std::io::Write;
use std::sync::{Arc, Mutex};

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use crate::engine::{Engine, Workload};

/// Runs a wasm workload with engine `E` in the container process.
///
/// `validate` (at `create`) reads and compiles the module, so that bad input fails `create`
/// with its reason; `exec` (at `start`) runs what `validate` prepared and ends the process with
/// the guest's exit code.
pub(crate) struct WasmExecutor<E: Engine> {
    engine: E,
    prepared: Arc<Mutex<Option<Prepared<E>>>>,
}

/// What `validate` leaves for `exec`: the workload and its compiled module.
type Prepared<E> = (Workload, <E as Engine>::Module);

impl<E: Engine> Clone for WasmExecutor<E> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            prepared: Arc::clone(&self.prepared),
        }
    }
}

impl<E: Engine> WasmExecutor<E> {
    pub(crate) fn new(engine: E) -> Self {
        Self {
            engine,
            prepared: Arc::new(Mutex::new(None)),
        }
    }

    fn prepare(&self, spec: &Spec) -> Result<Prepared<E>, String> {
        let workload = Workload::from_spec(spec).map_err(|e| e.to_string())?;
        let wasm = workload.read_module().map_err(|e| e.to_string())?;
        let module = self
            .engine
            .prepare(&wasm, &workload.entry)
            .map_err(|e| format!("{}: {e}", wasm.origin))?;
        Ok((workload, module))
    }
}

impl<E: Engine> Executor for WasmExecutor<E> {
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
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
