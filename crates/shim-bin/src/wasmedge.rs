//! `containerd-shim-wasmedge-v1`: containerd runs it for
//! `runtime_type = "io.containerd.wasmedge.v1"`.

fn main() {
    kwasi_core::shim::run::<kwasi_engine_wasmedge::WasmEdgeEngine>("io.containerd.wasmedge.v1");
}
