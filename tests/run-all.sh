#!/usr/bin/env bash
# The whole test suite: build the shims, run unit and end-to-end tests, then check that the
# suite left nothing behind. Needs root and the packages the README lists.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --all-targets
cargo test --release --workspace
cargo test --release -p kwasi-e2e --test leftovers -- --ignored
