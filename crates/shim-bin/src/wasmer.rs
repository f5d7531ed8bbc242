//! `containerd-shim-wasmer-v1`: containerd runs it for `runtime_type = "io.containerd.wasmer.v1"`.

fn main() {
    kwasi_core::shim::run::<kwasi_engine_wasmer::WasmerEngine>("io.containerd.wasmer.v1");
}
