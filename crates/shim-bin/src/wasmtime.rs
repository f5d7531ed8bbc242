//! `containerd-shim-wasmtime-v1`: containerd runs it for `runtime_type = "io.containerd.wasmtime.v1"`.

fn main() {
    kwasi_core::shim::run::<kwasi_engine_wasmtime::WasmtimeEngine>("io.containerd.wasmtime.v1");
}
