#!/usr/bin/env bash
# Installs what kwasi needs (Debian 12, as root), builds it, and runs a hello module through
# containerd-shim-wasmtime-v1 under a local containerd started just for this demo (its own
# root, state and socket in a temp dir; the system's containerd is not touched).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $(cat .ci/apt-packages) >/dev/null
# The shims and the kwasi tool, in the profile the tests use (release optimisations without
# LTO: the quickest build that runs at full speed). `cargo build --release` makes the shipped
# binaries in target/release.
cargo build --profile quick

bin="$PWD/target/quick"
d=$(mktemp -d /tmp/kwasi-demo-XXXXXX)
containerd_pid=""
cleanup() {
    if [ -n "$containerd_pid" ]; then
        ctr --address "$d/containerd.sock" -n demo containers delete demo >/dev/null 2>&1 || true
        kill "$containerd_pid" 2>/dev/null || true
        wait "$containerd_pid" 2>/dev/null || true
    fi
    grep -o "$d[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$d"
}
trap cleanup EXIT

cat > "$d/config.toml" <<EOT
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
EOT
PATH="$bin:$PATH" containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do
    ctr --address "$d/containerd.sock" version >/dev/null 2>&1 && break
    sleep 0.1
done

ctr="ctr --address $d/containerd.sock -n demo"
"$bin/kwasi" image build --tag kwasi.demo/hello:latest --output "$d/hello.tar" examples/hello/hello.wasm
$ctr images import "$d/hello.tar" >/dev/null
echo "--- ctr run --rm --runtime io.containerd.wasmtime.v1 kwasi.demo/hello:latest demo /app.wasm from containerd"
$ctr run --rm --runtime io.containerd.wasmtime.v1 kwasi.demo/hello:latest demo /app.wasm from containerd
echo "--- exit status: $?"
