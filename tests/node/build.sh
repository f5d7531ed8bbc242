#!/usr/bin/env bash
# Builds the components of a real node from the Go module proxy: containerd 2.x (containerd,
# ctr, containerd-shim-runc-v2), runc with seccomp, crictl and critest (cri-tools), kine (an
# etcd API over sqlite) and Kubernetes (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kubectl) and SpinKube's spin-operator with its CRDs, at the
# versions pinned in tests/node/versions; and takes Debian's nginx and (dynamic) busybox binaries out of their packages, for the images
# critest asks for (not installed: no service is started).
#
# Each component is built once into a cache directory keyed by its version
# ($KWASI_NODE_CACHE, default ~/.cache/kwasi-node); a run that finds them all there builds
# nothing. The last line printed is a directory holding every binary. Go's own module and
# build caches stay where the machine keeps them. Needs Go (1.26), gcc, pkg-config and
# libseccomp-dev (.ci/apt-packages).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions
. "$here/versions"
cache=${KWASI_NODE_CACHE:-$HOME/.cache/kwasi-node}
export GOWORK=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local

log() { echo "node: $*" >&2; }

command -v go >/dev/null || { log "go is not on PATH (Go 1.26 is needed)"; exit 1; }
pkg-config --exists libseccomp || {
    log "libseccomp-dev is missing (apt-get install libseccomp-dev pkg-config)"
    exit 1
}

# component NAME VERSION BUILDER: runs `BUILDER OUT VERSION` to fill OUT with NAME's binaries,
# unless $cache/NAME-VERSION is complete already. A failed build leaves nothing in the cache.
component() {
    local name=$1 version=$2 builder=$3
    local dir="$cache/$name-$version"
    [ -f "$dir/.complete" ] && return 0
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"
    log "building $name $version"
    local started=$SECONDS
    "$builder" "$dir.partial" "$version" >&2
    touch "$dir.partial/.complete"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    log "$name $version built in $((SECONDS - started)) s"
}

build_containerd() {
    local out=$1 v=$2 m=github.com/containerd/containerd/v2
    local ld="-s -w -X $m/version.Version=$v -X $m/version.Package=$m"
    GOBIN=$out go install -tags no_btrfs -ldflags "$ld" "$m/cmd/containerd@$v" "$m/cmd/ctr@$v"
    CGO_ENABLED=0 GOBIN=$out go install -tags no_grpc -ldflags "$ld" \
        "$m/cmd/containerd-shim-runc-v2@$v"
}

build_runc() {
    local out=$1 v=$2
    CGO_ENABLED=1 GOBIN=$out go install -tags seccomp -ldflags "-s -w -X main.version=${v#v}" \
        "github.com/opencontainers/runc@$v"
}

build_cri_tools() {
    local out=$1 v=$2 m=sigs.k8s.io/cri-tools
    local ld="-s -w -X $m/pkg/version.Version=$v"
    GOBIN=$out go install -ldflags "$ld" "$m/cmd/crictl@$v"
    # critest is the test binary of its package: build it in a scratch module.
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        go mod init kwasi.local/critest >/dev/null 2>&1
        go get -t "$m/cmd/critest@$v"
        go test -c -ldflags "$ld" -o "$out/critest" "$m/cmd/critest"
    )
    rm -rf "$work"
}

build_kine() {
    local out=$1 v=$2
    CGO_ENABLED=1 GOBIN=$out go install -ldflags "-s -w -X github.com/k3s-io/kine/pkg/version.Version=$v" \
        "github.com/k3s-io/kine@$v"
}

# k8s.io/kubernetes requires its staging modules (k8s.io/api, k8s.io/client-go, ...) at
# v0.0.0, replaced by directories its module zip does not hold. A scratch module requires it
# and replaces each module that its own go.mod requires at v0.0.0 by its published version
# (v1.X.Y -> v0.X.Y).
build_kubernetes() {
    local out=$1 v=$2 m=k8s.io/kubernetes
    local minor=${v#v1.}
    minor=${minor%%.*}
    local staging="v0.${v#v1.}"
    local work gomod
    work=$(mktemp -d)
    (
        cd "$work"
        go mod init kwasi.local/kubernetes >/dev/null 2>&1
        gomod=$(go mod download -json "$m@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
        [ -f "$gomod" ] || { echo "no go.mod downloaded for $m@$v" >&2; exit 1; }
        go mod edit -require="$m@$v"
        local mods
        mods=$(grep -E '^[[:space:]]+k8s\.io/[^[:space:]]+ v0\.0\.0([[:space:]]|$)' "$gomod" |
            awk '{print $1}')
        [ -n "$mods" ] || { echo "no staging modules found in $gomod" >&2; exit 1; }
        for mod in $mods; do
            go mod edit -replace="$mod=$mod@$staging"
        done
        local vpkg=k8s.io/component-base/version cpkg=k8s.io/client-go/pkg/version
        local ld="-s -w"
        for p in $vpkg $cpkg; do
            ld="$ld -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
            ld="$ld -X $p.gitTreeState=clean"
        done
        go build -mod=mod -ldflags "$ld" -o "$out/" \
            "$m/cmd/kube-apiserver" "$m/cmd/kube-controller-manager" \
            "$m/cmd/kube-scheduler" "$m/cmd/kubelet" "$m/cmd/kubectl"
    )
    rm -rf "$work"
}

# The operator's module replaces nothing, but `go install pkg@version` asks the proxy for its
# version list (to look for a deprecation), which it does not serve: build it inside a copy
# of the module instead. Its CRDs, and the RuntimeClass and SpinAppExecutor of SpinKube's
# samples, come from the same module.
build_spin_operator() {
    local out=$1 v=$2 m=github.com/spinkube/spin-operator
    local work dir
    work=$(mktemp -d)
    (
        dir=$(go mod download -json "$m@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
        [ -d "$dir" ] || { echo "no source downloaded for $m@$v" >&2; exit 1; }
        cp -r "$dir/." "$work"
        chmod -R u+w "$work"
        cd "$work"
        go build -trimpath -ldflags "-s -w" -o "$out/spin-operator" ./cmd
        cat config/crd/bases/*.yaml >"$out/spin-operator-crds.yaml"
        cp config/samples/spin-runtime-class.yaml "$out/spin-operator-runtime-class.yaml"
        cp config/samples/spin-shim-executor.yaml "$out/spin-operator-shim-executor.yaml"
    )
    rm -rf "$work"
}

# unpack_binary PACKAGE FILE OUT VERSION: FILE of Debian's PACKAGE at VERSION, taken out of
# the package into OUT (downloaded, not installed: nothing runs).
unpack_binary() {
    local package=$1 file=$2 out=$3 v=$4 work
    work=$(mktemp -d)
    chmod a+rwx "$work" # apt downloads as its own user
    (cd "$work" && apt-get download -qq "$package=$v" && dpkg-deb -x "${package}"_*.deb unpacked)
    cp "$work/unpacked/$file" "$out/"
    rm -rf "$work"
}
unpack_nginx() { unpack_binary nginx usr/sbin/nginx "$@"; }
unpack_busybox() { unpack_binary busybox bin/busybox "$@"; }

# The version of Debian package $1 that apt offers (after apt-get update).
debian_version() {
    local v
    v=$(apt-cache policy "$1" | sed -n 's/^ *Candidate: //p')
    [ -n "$v" ] && [ "$v" != "(none)" ] || { log "apt offers no $1 (run apt-get update)"; exit 1; }
    echo "$v"
}

component containerd "$CONTAINERD_VERSION" build_containerd
component runc "$RUNC_VERSION" build_runc
component cri-tools "$CRI_TOOLS_VERSION" build_cri_tools
component kine "$KINE_VERSION" build_kine
component kubernetes "$KUBERNETES_VERSION" build_kubernetes
component spin-operator "$SPIN_OPERATOR_VERSION" build_spin_operator
# For critest's images: a web server, and a busybox built like upstream's (Debian's static
# busybox runs applets inside its shell, so masking /bin/ls would not stop `sh -c ls`).
NGINX_VERSION=$(debian_version nginx)
BUSYBOX_VERSION=$(debian_version busybox)
component nginx "$NGINX_VERSION" unpack_nginx
component busybox "$BUSYBOX_VERSION" unpack_busybox

# One directory with every binary, named after the versions it holds.
key=$( (grep -v '^#' "$here/versions"; echo "$NGINX_VERSION $BUSYBOX_VERSION") | sha256sum | cut -c1-12)
bin="$cache/bin-$key"
for old in "$cache"/bin-*; do
    [ "$old" = "$bin" ] || rm -rf "$old"
done
mkdir -p "$bin"
for dir in "containerd-$CONTAINERD_VERSION" "runc-$RUNC_VERSION" "cri-tools-$CRI_TOOLS_VERSION" \
    "kine-$KINE_VERSION" "kubernetes-$KUBERNETES_VERSION" "spin-operator-$SPIN_OPERATOR_VERSION" \
    "nginx-$NGINX_VERSION" "busybox-$BUSYBOX_VERSION"; do
    for file in "$cache/$dir"/*; do
        ln -sfn "$file" "$bin/$(basename "$file")"
    done
done
echo "$bin"
