#!/usr/bin/env bash
# The whole test suite: build the shims, run unit tests and the conformance suite against
# every built shim, then check that the suite left nothing behind. Needs root and the packages
# the README lists.
set -euo pipefail
cd "$(dirname "$0")/.."

# The default build: the wasmtime and wasmer shims and the kwasi tool.
cargo build --release --all-targets
cargo test --release

# WasmEdge links libwasmedge 0.17, which the package registries do not carry. Always
# type-check its engine and shim (wasmedge-sys then uses its pregenerated bindings); build
# them and run their part of the suite only where the library is installed.
DOCS_RS=1 cargo clippy --release --target-dir target/wasmedge-check \
    -p kwasi-engine-wasmedge -p kwasi-shim-bin --no-default-features --features wasmedge \
    --all-targets -- -D warnings
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
    cargo build --release -p kwasi-shim-bin --features wasmedge --bin containerd-shim-wasmedge-v1
    cargo test --release -p kwasi-engine-wasmedge
    cargo test --release -p kwasi-e2e --features wasmedge --test conformance -- wasmedge::
else
    echo "wasmedge: SKIPPED its conformance suite: libwasmedge 0.17 not found" \
        "(\$WASMEDGE_DIR, ~/.wasmedge, /usr/local); its engine and shim were type-checked only"
fi

cargo test --release -p kwasi-e2e --test leftovers -- --ignored
