//! `containerd-shim-wasmtime-v1`: containerd runs it for `runtime_type = "io.containerd.wasmtime.v1"`.
//! It runs modules and components with wasmtime, and Spin applications as the spin shim does.

fn main() {
    kwasi_core::shim::run::<kwasi_spin::SpinEngine<kwasi_spin::WasmtimeShim>>(
        "io.containerd.wasmtime.v1",
    );
}
