#!/bin/sh
# Rebuilds the Spin test components with the SDK tooling Spin's JavaScript users have, from
# npm (Node.js and npm from Debian's nodejs/npm packages, or any recent Node).
#   echo.wasm   echo.js through @spinframework/build-tools' j2w: a component exporting
#               wasi:http/incoming-handler@0.2.3, as `spin build` makes for a JS app
set -eu
cd "$(dirname "$0")"
# build-tools 1.0.7 imports @bytecodealliance/preview2-shim without declaring it: package.json does.
npm ci --no-audit --no-fund
npx j2w -i echo.js -o echo.wasm
