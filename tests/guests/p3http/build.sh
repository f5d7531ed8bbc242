#!/bin/sh
# Rebuilds app.wasm, the plain WASI 0.3 HTTP test guest, from app.py with componentize-py from
# PyPI. Its world (wit/world.wit) is wasi:http's own `service` world; the WASI 0.3 WIT files it
# depends on are the ones the spin-sdk 5 wheel ships, taken from the wheel without installing
# it (installed, spin-sdk would bring its own world into the build). Needs python3 (3.10 or
# newer) with venv.
set -eu
export PYTHONDONTWRITEBYTECODE=1
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet componentize-py==0.25.1
"$tmp/venv/bin/pip" download --quiet --no-deps spin-sdk==5.0.0 -d "$tmp"
mkdir -p "$tmp/wit/deps"
cp wit/world.wit "$tmp/wit/"
"$tmp/venv/bin/python" - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{tmp}/spin_sdk-*.whl")[0])
for package in ["cli", "clocks", "filesystem", "http", "random", "sockets"]:
    with open(f"{tmp}/wit/deps/{package}.wit", "wb") as out:
        out.write(wheel.read(f"spin_sdk/wit/deps/{package}.wit"))
PY
"$tmp/venv/bin/componentize-py" -d "$tmp/wit" -w kwasi:p3-http/service componentize app -o app.wasm
