#!/usr/bin/env bash
# The whole test suite in one command, on a fresh Debian machine (root or sudo):
# installs what the tests need, builds, checks formatting and lints, runs the
# Rust tests, a short run of the fuzz targets (with a nightly toolchain) and the
# Python end-to-end suite. Exits non-zero if anything failed.
# Re-running is cheap: installs are skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/test-venv
REQUIREMENTS=tests/python/requirements.txt
NODE_TESTS=tests/node
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi

step() { printf '\n==> %s\n' "$*"; }

# --- what the tests need -----------------------------------------------------
missing=()
command -v python3 >/dev/null || missing+=(python3)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
# MQTT.js runs on node's built-in test runner (node 18 or later).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# The TLS tests make their CA with the openssl command and drive the mosquitto clients.
command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
# The bridge tests run a real Mosquitto broker; its package also brings mosquitto_passwd.
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v openssl >/dev/null || missing+=(openssl)
# The cluster tests (tests/cluster/) run fanfare nodes on real nats-servers.
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# Browsers: the web tests, and fanfare-loadtest's report test, which opens its page in
# Chromium through the web tests' playwright (loadtest/tests/html_report.rs).
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v certutil >/dev/null || missing+=(libnss3-tools)
if ((${#missing[@]})); then
    step "apt-get install ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (rustup) first" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
if [ ! -x "$VENV/bin/python" ]; then
    step "python venv in $VENV"
    python3 -m venv "$VENV"
fi
stamp="$VENV/.installed"
if [ ! -f "$stamp" ] || [ "$REQUIREMENTS" -nt "$stamp" ]; then
    step "pip install -r $REQUIREMENTS"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS"
    touch "$stamp"
fi
node_stamp="$NODE_TESTS/node_modules/.installed"
if [ ! -f "$node_stamp" ] || [ "$NODE_TESTS/package-lock.json" -nt "$node_stamp" ]; then
    step "npm ci in $NODE_TESTS"
    (cd "$NODE_TESTS" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$node_stamp"
fi
web_stamp=tests/web/node_modules/.installed
if [ ! -f "$web_stamp" ] || [ tests/web/package-lock.json -nt "$web_stamp" ]; then
    step "npm ci in tests/web"
    (cd tests/web && npm ci --no-audit --no-fund --loglevel=error)
    touch "$web_stamp"
fi
# With everything above installed, a test that would open a browser must not skip it.
export FANFARE_REQUIRE_BROWSER=1

# --- build and check -----------------------------------------------------------
failed=()
step "cargo build"
cargo build --workspace --all-targets
step "cargo fmt --check"
cargo fmt --all -- --check || failed+=("cargo fmt")
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings || failed+=("cargo clippy")
step "cargo test"
cargo_log=target/cargo-test.log
mkdir -p target
set +e
cargo test --workspace 2>&1 | tee "$cargo_log"
cargo_status=${PIPESTATUS[0]}
set -e
if [ "$cargo_status" -ne 0 ]; then failed+=("cargo test"); fi
step "fuzz smoke (fuzz/, needs nightly)"
scripts/fuzz-smoke.sh || failed+=("fuzz smoke")

step "pytest tests/python tests/cluster"
mkdir -p target
pytest_log=target/pytest.log
set +e
# One run for both directories (one summary line); tests/pytest.ini and tests/conftest.py
# serve both.
FANFARE_BIN="${FANFARE_BIN:-target/debug/fanfare}" \
    "$VENV/bin/python" -m pytest tests/python tests/cluster -q -c tests/pytest.ini --rootdir tests \
    2>&1 | tee "$pytest_log"
pytest_status=${PIPESTATUS[0]}
set -e
# Any non-zero status fails, 5 (no tests collected) included.
if [ "$pytest_status" -ne 0 ]; then failed+=("pytest"); fi

step "web tests (fanfare.js, demo page, browsers)"
web_log=target/web-tests.log
set +e
scripts/test-web.sh 2>&1 | tee "$web_log"
web_status=${PIPESTATUS[0]}
set -e
if [ "$web_status" -ne 0 ]; then failed+=("web tests"); fi
step "node --test $NODE_TESTS (MQTT.js)"
node_log=target/node-tests.log
set +e
FANFARE_BIN="${FANFARE_BIN:-target/debug/fanfare}" \
    node --test --test-reporter=spec "$NODE_TESTS/" 2>&1 | tee "$node_log"
node_status=${PIPESTATUS[0]}
set -e
if [ "$node_status" -ne 0 ]; then failed+=("node --test"); fi

# How many tests each suite ran: the reporters' own summary lines.
node_counts() { sed -n 's/^\(#\|ℹ\) \(pass\|fail\) \([0-9]*\)$/\2 \3/p' "$1" | tr '\n' ' '; }
echo
echo "cargo test: $(grep -o '[0-9]* passed' "$cargo_log" | awk '{n += $1} END {print n + 0}') passed"
echo "web tests: $(node_counts "$web_log")"
echo "node tests (MQTT.js): $(node_counts "$node_log")"
if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
else
    echo "all checks passed"
fi
# The pytest summary line last, for whoever reads only the end.
echo "pytest: $(tail -n 1 "$pytest_log")"
((${#failed[@]} == 0))
