#!/bin/sh
# Rebuilds the test guests from their C sources.
# Needs Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32; the components also need
# wasm-tools and wit-bindgen (`cargo install wasm-tools wit-bindgen-cli`).
#   probe.wasm            WASI preview 1 command (probe.c)
#   probe.component.wasm  the same program as a wasi:cli/run component (preview 1 adapter)
#   http.wasm             wasi:http/proxy component (http.c, bindings from wit-bindgen)
#   files.wasm            the same with its /files/ routes (-DKWASI_FILES), and wasi:filesystem
#                         from the reactor adapter
#   redis.wasm            Redis-triggered Spin component (redis.c; WIT: crates/spin/spin-wit)
#   sqlite.wasm           Redis-triggered Spin component that uses SQLite (sqlite.c; same WIT)
#   legacy-http.wasm      Spin HTTP component of the legacy fermyon:spin/inbound-http
#                         (legacy-http.c; same WIT)
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o probe.wasm probe.c

# The preview 1 adapters of the wasmtime release the shims are built with.
cargo run -q -p kwasi-e2e --bin preview1-adapter -- command > "$tmp/command.wasm"
cargo run -q -p kwasi-e2e --bin preview1-adapter -- proxy > "$tmp/proxy.wasm"
cargo run -q -p kwasi-e2e --bin preview1-adapter -- reactor > "$tmp/reactor.wasm"
wasm-tools component new probe.wasm --adapt "wasi_snapshot_preview1=$tmp/command.wasm" \
    -o probe.component.wasm

# The wasi:http WIT that wasmtime-wasi-http ships.
manifest=$(cargo metadata --format-version 1 |
    grep -o '"manifest_path":"[^"]*/wasmtime-wasi-http-[0-9.]*/Cargo.toml"' | head -n1 | cut -d'"' -f4)
wit-bindgen c --world wasi:http/proxy "$(dirname "$manifest")/wit" --out-dir "$tmp"
# Keep custom sections (-Wl,--strip-debug, not --strip-all): they carry the component type.
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I"$tmp" -Wl,--strip-debug \
    -o "$tmp/http.core.wasm" http.c "$tmp/proxy.c" "$tmp/proxy_component_type.o"
wasm-tools component new "$tmp/http.core.wasm" --adapt "wasi_snapshot_preview1=$tmp/proxy.wasm" \
    -o http.wasm
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I"$tmp" -Wl,--strip-debug \
    -DKWASI_FILES -o "$tmp/files.core.wasm" http.c "$tmp/proxy.c" "$tmp/proxy_component_type.o"
wasm-tools component new "$tmp/files.core.wasm" --adapt "wasi_snapshot_preview1=$tmp/reactor.wasm" \
    -o files.wasm

# The Redis guest, from the WIT kwasi-spin's host bindings are made of.
wit-bindgen c --world kwasi:spin-wit/redis-guest ../../crates/spin/spin-wit --out-dir "$tmp"
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I"$tmp" -Wl,--strip-debug \
    -o "$tmp/redis.core.wasm" redis.c "$tmp/redis_guest.c" "$tmp/redis_guest_component_type.o"
wasm-tools component new "$tmp/redis.core.wasm" --adapt "wasi_snapshot_preview1=$tmp/reactor.wasm" \
    -o redis.wasm
wit-bindgen c --world kwasi:spin-wit/sqlite-guest ../../crates/spin/spin-wit --out-dir "$tmp"
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I"$tmp" -Wl,--strip-debug \
    -o "$tmp/sqlite.core.wasm" sqlite.c "$tmp/sqlite_guest.c" "$tmp/sqlite_guest_component_type.o"
wasm-tools component new "$tmp/sqlite.core.wasm" --adapt "wasi_snapshot_preview1=$tmp/reactor.wasm" \
    -o sqlite.wasm
wit-bindgen c --world kwasi:spin-wit/legacy-http-guest ../../crates/spin/spin-wit --out-dir "$tmp"
clang --target=wasm32-wasi --sysroot=/usr -O2 -mexec-model=reactor -I"$tmp" -Wl,--strip-debug \
    -o "$tmp/legacy-http.core.wasm" legacy-http.c "$tmp/legacy_http_guest.c" \
    "$tmp/legacy_http_guest_component_type.o"
wasm-tools component new "$tmp/legacy-http.core.wasm" \
    --adapt "wasi_snapshot_preview1=$tmp/proxy.wasm" -o legacy-http.wasm
