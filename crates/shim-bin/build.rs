//! Links the binaries as position-dependent executables (`-no-pie`), as runc and
//! containerd's own shims are.
//!
//! A position-independent executable is relocated by the dynamic loader at every exec: its
//! 1.6 MiB of relocated read-only data (`.data.rel.ro`, the GOT: vtables and other tables of
//! pointers) become private dirty pages of each shim, which its zygote and container
//! processes inherit. Linked at a fixed address, those pages need no relocation and stay
//! clean pages of the binary's file, shared by every shim and container on the node.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
