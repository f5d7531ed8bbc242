#!/usr/bin/env bash
# The whole test suite: build (or reuse) the real node's components, build the shims and every
# test binary once, run the unit tests, the conformance suite as a matrix of (containerd 1.6 and
# 2.x, every built shim), the official WASI test suite through each shim, the CRI suite on
# both, critest with runc and every kwasi handler, the Kubernetes suite on a single-node
# cluster, then check that nothing was left behind.
# It first removes what an interrupted earlier run left. Needs root and the packages the
# README lists.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "=== $* ($((SECONDS / 60)) min $((SECONDS % 60)) s)"; }

# containerd 2.x, runc, crictl, critest, kine and Kubernetes, from the Go module proxy, cached
# by version outside the clone.
step "the real node's components"
KWASI_NODE_BIN=$(bash tests/node/build.sh | tail -n 1)
export KWASI_NODE_BIN

# One build, in the `quick` profile (release optimisations, no LTO): the wasmtime and wasmer
# shims, the kwasi tool and every test binary.
step "build"
cargo build --profile quick --all-targets

# The unit tests of every default member (the e2e crate's integration tests come later). The
# same packages as the build above, so that cargo resolves the same features and reuses its
# artifacts: naming packages (`-p`, `--exclude`) would rebuild much of the dependency tree.
# An interrupted earlier run (Ctrl-C, a killed job) may have left containers, mounts or
# cgroups behind: remove them, saying what they were, so that the leftovers check at the end
# sees only this run's.
step "what an earlier run left"
target/quick/kwasi-sweep

step "unit tests"
cargo test --profile quick --lib --bins

# WasmEdge links libwasmedge 0.17, which the package registries do not carry. Always
# type-check its engine (wasmedge-sys then uses its pregenerated bindings; the library is only
# needed to link): `cargo check`, as its dependencies differ in features from the build above
# and would otherwise be built again. Build its shim and run its part of the suite only where
# the library is installed.
step "wasmedge"
DOCS_RS=1 cargo check --profile quick -p kwasi-engine-wasmedge --lib
wasmedge_lib=""
for dir in "${WASMEDGE_LIB_DIR:-}" "${WASMEDGE_DIR:+$WASMEDGE_DIR/lib64}" \
    "${WASMEDGE_DIR:+$WASMEDGE_DIR/lib}" "$HOME/.wasmedge/lib64" "$HOME/.wasmedge/lib" \
    /usr/local/lib64 /usr/local/lib "$HOME/.local/lib64" "$HOME/.local/lib"; do
    if [ -n "$dir" ] && compgen -G "$dir/libwasmedge.so*" >/dev/null; then
        wasmedge_lib=$dir
        break
    fi
done
if [ -n "$wasmedge_lib" ]; then
    echo "wasmedge: found libwasmedge in $wasmedge_lib; building and testing its shim"
    export LD_LIBRARY_PATH="$wasmedge_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    cargo build --profile quick -p kwasi-shim-bin --features wasmedge --bin containerd-shim-wasmedge-v1
    cargo test --profile quick -p kwasi-engine-wasmedge
    cargo test --profile quick -p kwasi-e2e --features wasmedge --test conformance -- wasmedge::
    cargo test --profile quick -p kwasi-e2e --features wasmedge --test wasi_testsuite \
        -- --nocapture wasmedge
else
    echo "wasmedge: SKIPPED its conformance suite: libwasmedge 0.17 not found" \
        "(\$WASMEDGE_DIR, ~/.wasmedge, /usr/local); its engine was type-checked only"
fi

# The end-to-end suites, each named by its test target alone: with the default members
# selected, as in the build above, cargo reuses that build (`-p kwasi-e2e` would resolve the
# dependencies' features for that crate alone and build much of them again).
step "conformance suite"
cargo test --profile quick --test conformance
step "WASI test suite"
cargo test --profile quick --test wasi_testsuite -- --nocapture
step "Spin applications"
cargo test --profile quick --test spin
step "CRI suite"
cargo test --profile quick --test cri
step "critest"
cargo test --profile quick --test critest -- --nocapture
step "Kubernetes suite"
cargo test --profile quick --test kubernetes

step "leftovers"
cargo test --profile quick --test leftovers -- --ignored
step "done"
