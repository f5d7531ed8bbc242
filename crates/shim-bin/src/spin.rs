//! `containerd-shim-spin-v2`: containerd runs it for `runtime_type = "io.containerd.spin.v2"`,
//! the runtime SpinKube's RuntimeClass names. It runs Spin applications, and plain modules and
//! components as the wasmtime shim does.

fn main() {
    kwasi_core::shim::run::<kwasi_spin::SpinEngine>("io.containerd.spin.v2");
}
