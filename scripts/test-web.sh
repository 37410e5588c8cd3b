#!/usr/bin/env bash
# Web tests: unit tests of web/fanfare.js (Node's test runner, fake WebSocket), a check that
# web/dist/ is the minified build of the current source (scripts/build-web.mjs), and browser
# tests (Debian's Chromium through playwright-core, against the real broker binary).
# Installs Chromium, openssl (the TLS test's certificates) and certutil (libnss3-tools: Chromium
# trusts the test CA through an NSS database) with apt, and the npm dev dependencies pinned in
# tests/web, when missing. Exits non-zero on any failure. The demo screenshots are written to
# test-artifacts/demo.png and test-artifacts/demo-https.png.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v openssl >/dev/null || missing+=(openssl)
command -v certutil >/dev/null || missing+=(libnss3-tools)
if ((${#missing[@]})); then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

cargo build --quiet
(
    cd tests/web
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --silent; else npm install --no-audit --no-fund --silent; fi
)
cd tests/web
node --test unit/ browser.test.mjs
