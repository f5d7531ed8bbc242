#!/bin/sh
# Rebuilds the Spin test components with the SDK tooling Spin's JavaScript users have, from
# npm (Node.js and npm from Debian's nodejs/npm packages, or any recent Node).
#   echo.wasm   echo.js: answers with the spin-* headers it got
#   vars.wasm   vars.js: reads a variable through fermyon:spin/variables@2.0.0
#   kv.wasm     kv.js: counts requests in the default store of fermyon:spin/key-value@2.0.0
#   outbound.wasm  outbound.js: fetches the URL it is given (outbound HTTP)
# The WIT of the Spin imports is the local package wit-spin/, which build-tools merges into
# every component's world; its fermyon:spin@2.0.0 dependency is a link to
# crates/spin/spin-wit/deps/spin-2.0.0, the WIT kwasi's host bindings are generated from.
# Both through @spinframework/build-tools' j2w: components exporting
# wasi:http/incoming-handler@0.2.3, as `spin build` makes them for a JS app.
set -eu
cd "$(dirname "$0")"
# build-tools 1.0.7 imports @bytecodealliance/preview2-shim without declaring it: package.json does.
npm ci --no-audit --no-fund
npx j2w -i echo.js -o echo.wasm
npx j2w -i vars.js -o vars.wasm
npx j2w -i kv.js -o kv.wasm
npx j2w -i outbound.js -o outbound.wasm
