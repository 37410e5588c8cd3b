#!/usr/bin/env bash
# Run the end-to-end tests against Mosquitto instead of fanfare, to check the
# tests themselves against an established broker. Tests that check behaviour
# only fanfare promises are skipped (FANFARE_TEST_RUN_ALL=1 runs them anyway).
# Needs the venv that scripts/test.sh sets up.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
if ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ]; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto
fi
export PATH="$PATH:/usr/sbin"

FANFARE_TEST_BROKER=mosquitto target/test-venv/bin/python -m pytest tests/python -q \
    -c tests/pytest.ini --rootdir tests "$@"

# The rumqttc tests, against one Mosquitto on free loopback ports.
workdir=$(mktemp -d)
ports=$(target/test-venv/bin/python -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
read -r tcp_port ws_port <<<"$ports"
cat >"$workdir/mosquitto.conf" <<CONF
allow_anonymous true
listener $tcp_port 127.0.0.1
protocol mqtt
listener $ws_port 127.0.0.1
protocol websockets
CONF
mosquitto -c "$workdir/mosquitto.conf" >"$workdir/log" 2>&1 &
mosquitto_pid=$!
trap 'kill "$mosquitto_pid" 2>/dev/null || true; rm -rf "$workdir"' EXIT
sleep 0.5
FANFARE_TEST_TCP_ADDR="127.0.0.1:$tcp_port" FANFARE_TEST_WS_URL="ws://127.0.0.1:$ws_port/mqtt" \
    cargo test --test rumqttc
