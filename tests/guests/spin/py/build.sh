#!/bin/sh
# Rebuilds app.wasm from app.py and redis.wasm from redis_app.py with the tooling Spin's Python
# users have, from PyPI: componentize-py and Spin's Python SDK, spin-sdk 5, whose world
# spin:up/http-trigger@4.1.0 exports wasi:http/handler@0.3.0 (WASI 0.3) and
# spin:up/redis-trigger@4.1.0 spin:redis/inbound-redis@3.0.0. `spin build` runs the same
# commands for a Python app. Needs python3 (3.10 or newer) with venv.
set -eu
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")"
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet componentize-py==0.25.1 spin-sdk==5.0.0
PATH="$venv/bin:$PATH" componentize-py -w spin:up/http-trigger@4.1.0 componentize app -o app.wasm
PATH="$venv/bin:$PATH" componentize-py -w spin:up/redis-trigger@4.1.0 componentize redis_app \
    -o redis.wasm
