#!/bin/sh
# Rebuilds the C test guests (needs Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32).
set -eu
cd "$(dirname "$0")"
clang --target=wasm32-wasi --sysroot=/usr -O2 -Wl,--strip-all -o probe.wasm probe.c
