//! Writes one of the WASI preview 1 adapters that wasmtime publishes (crate
//! `wasi-preview1-component-adapter-provider`) to stdout, for `wasm-tools component new
//! --adapt`: `preview1-adapter command|reactor|proxy > adapter.wasm`.

use std::io::Write;

use wasi_preview1_component_adapter_provider as adapters;

fn main() -> std::process::ExitCode {
    let kind = std::env::args().nth(1).unwrap_or_default();
    let bytes = match kind.as_str() {
        "command" => adapters::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
        "reactor" => adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        "proxy" => adapters::WASI_SNAPSHOT_PREVIEW1_PROXY_ADAPTER,
        _ => {
            eprintln!("usage: preview1-adapter command|reactor|proxy > adapter.wasm");
            return std::process::ExitCode::from(2);
        }
    };
    match std::io::stdout().write_all(bytes) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("writing the adapter: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
