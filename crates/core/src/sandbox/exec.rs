//! Exec processes: a new process in a running container's namespaces and cgroup, with the
//! user, environment, working directory and capabilities containerd's process spec gives, as
//! `runc exec --process` starts one (libcontainer's tenant containers).
//!
//! What runs is decided in the new process, as for the init process: a native program (an
//! ELF executable or a script) is executed; a wasm module (`args[0]`, a file of the rootfs)
//! runs with the shim's engine and the container's preopens.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use super::executor::WasmExecutor;
use super::ProcessIo;
use crate::engine::Engine;
use crate::task::container::ExecConfig;

/// Starts exec process `config` in container `id` (its state under `state_root`) and returns
/// its pid and the shim's hold on its stdio.
pub(super) fn exec<E: Engine>(
    id: &str,
    state_root: &Path,
    executor: WasmExecutor<E>,
    config: &ExecConfig,
) -> Result<(i32, ProcessIo)> {
    // libcontainer reads the process from a file, as `runc exec --process` does.
    let process_file = state_root
        .join(id)
        .join(crate::unique_name("exec"))
        .with_extension("json");
    let json = serde_json::to_vec(&config.process).context("encoding the exec process")?;
    std::fs::write(&process_file, json)
        .with_context(|| format!("writing {}", process_file.display()))?;
    let started = start(id, state_root, executor, config, &process_file);
    let _ = std::fs::remove_file(&process_file);
    started
}

fn start<E: Engine>(
    id: &str,
    state_root: &Path,
    executor: WasmExecutor<E>,
    config: &ExecConfig,
    process_file: &Path,
) -> Result<(i32, ProcessIo)> {
    let (builder, io, console) =
        ProcessIo::builder(id, state_root, executor, &config.stdio, config.terminal)?;
    let pid = builder
        .as_tenant()
        .with_process(Some(process_file))
        .with_detach(true)
        .build()
        .map_err(|e| anyhow!("{}", super::creation_error(&e)))?;
    let io = io.with_console(console, &config.stdio)?;
    Ok((pid.as_raw(), io))
}
