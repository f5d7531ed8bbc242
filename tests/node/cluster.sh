#!/usr/bin/env bash
# Starts a single-node Kubernetes cluster with kwasi's shims on this machine (as root; Debian 12
# with the packages of .ci/apt-packages): builds the node's components (tests/node/build.sh,
# cached) and kwasi, then runs it until Ctrl-C. See tests/src/bin/kwasi-cluster.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
KWASI_NODE_BIN=$(bash tests/node/build.sh | tail -n 1)
export KWASI_NODE_BIN
cargo build --profile quick -p kwasi-shim-bin -p kwasi-e2e --bin kwasi-cluster \
    --bin containerd-shim-wasmtime-v1 --bin containerd-shim-wasmer-v1 --bin kwasi
exec target/quick/kwasi-cluster
