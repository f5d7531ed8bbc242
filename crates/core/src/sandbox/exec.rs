//! Exec processes: a new process in a running container's namespaces and cgroup, with the
//! user, environment, working directory and capabilities containerd's process spec gives, as
//! `runc exec --process` starts one (libcontainer's tenant containers).
//!
//! What runs is decided in the new process, as for the init process: a native program (an
//! ELF executable or a script) is executed; a wasm module (`args[0]`, a file of the rootfs)
//! runs with the shim's engine and the container's preopens.

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use oci_spec::runtime::LinuxSeccomp;

use super::executor::WasmExecutor;
use super::zygote::{Process, Zygote};
use super::{ProcessIo, ProcessStdio};
use crate::engine::Engine;
use crate::task::container::ExecConfig;

/// Starts exec process `config` in container `id` (its state under `state_root`) through
/// `zygote`, with the container's `seccomp` profile, and returns its pid and the shim's hold on
/// its stdio.
pub(super) fn exec(
    zygote: &Zygote,
    id: &str,
    state_root: &Path,
    seccomp: Option<LinuxSeccomp>,
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
    let started = start(zygote, id, state_root, seccomp, config, &process_file);
    let _ = std::fs::remove_file(&process_file);
    started
}

fn start(
    zygote: &Zygote,
    id: &str,
    state_root: &Path,
    seccomp: Option<LinuxSeccomp>,
    config: &ExecConfig,
    process_file: &Path,
) -> Result<(i32, ProcessIo)> {
    let process = Process::Exec {
        process_file: process_file.to_path_buf(),
        seccomp,
    };
    super::launch(
        zygote,
        id,
        state_root,
        process,
        &config.stdio,
        config.terminal,
        None,
    )
}

/// In a zygote's worker: creates the exec process of `process_file` in container `id`, run by
/// `executor` with `stdio`, and returns its pid.
pub(super) fn build<E: Engine>(
    id: &str,
    state_root: &Path,
    executor: WasmExecutor<E>,
    stdio: ProcessStdio,
    process_file: &Path,
) -> Result<i32> {
    let pid = super::container_builder(id, state_root, executor, stdio)?
        .as_tenant()
        .with_process(Some(process_file))
        .with_detach(true)
        .build()
        .map_err(|e| anyhow!("{}", super::creation_error(&e)))?;
    Ok(pid.as_raw())
}
