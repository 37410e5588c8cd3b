#!/usr/bin/env bash
# Runs every fanfare-loadtest scenario over TLS against Mosquitto: mqtts:// with the CA file,
# wss:// with the CA file and with --insecure. A round trip through a real broker's TLS, for
# the load generator's TLS client, until fanfare itself speaks TLS.
#
#   scripts/loadtest-tls-mosquitto.sh                 # release build, ~1 minute of runs
#   LT=target/debug/fanfare-loadtest scripts/loadtest-tls-mosquitto.sh
#
# Makes a CA and a server certificate for localhost / 127.0.0.1 with openssl in a temporary
# folder (deleted at the end: no key is ever kept), starts Mosquitto on two free loopback
# ports with them, and fails if any run loses a message or a connection. Installs Debian's
# `mosquitto` if missing. Not part of the test suite (`cargo test -p fanfare-loadtest` has
# its own in-process TLS broker).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TMP=$(mktemp -d)
BROKER_PID=
trap '[[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
export PATH="$PATH:/usr/sbin"

log() { printf '==> %s\n' "$*" >&2; }

if ! command -v mosquitto >/dev/null; then
    log "installing mosquitto (Debian package)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto openssl >/dev/null
fi

if [[ -z ${LT:-} ]]; then
    log "building fanfare-loadtest (release)"
    cargo build -q --release -p fanfare-loadtest
    LT=$ROOT/target/release/fanfare-loadtest
fi

free_port() {
    python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

log "certificates in $TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=fanfare-loadtest test CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
    "extendedKeyUsage=serverAuth" >"$TMP/server.ext"
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" \
    -CAcreateserial -days 1 -extfile "$TMP/server.ext" -out "$TMP/server.pem" 2>/dev/null
# Mosquitto started as root reads its files as the `mosquitto` user.
chmod 755 "$TMP"
chmod 644 "$TMP"/*

MQTTS_PORT=$(free_port)
WSS_PORT=$(free_port)
# set_tcp_nodelay: with Nagle on (Mosquitto's default) its TLS 1.3 session tickets hold the
# CONNACK back until this side's delayed ACK, ~40 ms per connection on loopback.
cat >"$TMP/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
set_tcp_nodelay true
listener $MQTTS_PORT 127.0.0.1
protocol mqtt
certfile $TMP/server.pem
keyfile $TMP/server.key
listener $WSS_PORT 127.0.0.1
protocol websockets
certfile $TMP/server.pem
keyfile $TMP/server.key
EOF
mosquitto -c "$TMP/mosquitto.conf" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
for port in "$MQTTS_PORT" "$WSS_PORT"; do
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$BROKER_PID" 2>/dev/null || { cat "$TMP/broker.log" >&2; exit 1; }
        sleep 0.1
    done
done
log "mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'): mqtts $MQTTS_PORT, wss $WSS_PORT"

MQTTS="--url mqtts://localhost:$MQTTS_PORT --ca $TMP/ca.pem"
WSS="--url wss://localhost:$WSS_PORT/mqtt --ca $TMP/ca.pem"
WSS_INSECURE="--url wss://127.0.0.1:$WSS_PORT/mqtt --insecure"
SHORT="--warmup 0.5 --duration 2 --drain 2 --workers 1"
runs=(
    "conn $MQTTS --subscribers 200 --duration 1"
    "fanout $MQTTS $SHORT --subscribers 50 --rate 200"
    "fanout $MQTTS $SHORT --mqtt 5 --subscribers 50 --closed-loop 2"
    "fanout $MQTTS $SHORT --subscribers 5 --rate 20 --payload 100000"
    "qos1 $MQTTS $SHORT --subscribers 20 --rate 200"
    "topics $MQTTS $SHORT --topics 10 --subscribers 40 --publishers 2 --rate 500"
    "retained $MQTTS $SHORT --topics 200 --subscribers 10 --qos 1"
    "p2p $MQTTS $SHORT --pairs 10 --rate 400"
    "fanout $WSS $SHORT --subscribers 50 --rate 200"
    "qos1 $WSS $SHORT --subscribers 20 --rate 200 --no-socket-stamps"
    "p2p $WSS_INSECURE $SHORT --pairs 10 --rate 400"
)
failed=0
for args in "${runs[@]}"; do
    # shellcheck disable=SC2086 # the run's flags are words
    if ! "$LT" $args >"$TMP/out.json" 2>"$TMP/err.log"; then
        log "FAILED to run: $args"
        tail -5 "$TMP/err.log" >&2
        failed=1
        continue
    fi
    python3 - "$TMP/out.json" "$args" <<'PY' || failed=1
import json, sys
s = json.load(open(sys.argv[1]))
c = s["connections"]
tls = c.get("tls") or {}
bad = []
if c["ok"] < c["planned"]:
    bad.append(f"{c['planned'] - c['ok']} connections failed: {s['errors']}")
if c["dropped"]:
    bad.append(f"{c['dropped']} dropped: {s['errors']}")
if s["scenario"] != "conn" and (s["lost"] or not s["delivered"]):
    bad.append(f"lost {s['lost']} of {s['expected']}")
sock = (s.get("socket_latency_us") or {}).get("p99", "-")
print(f"{'ok ' if not bad else 'BAD'} {s['scenario']:8} {s['params']['transport']:5} "
      f"{s['params']['tls']['verify'].split(' ')[0]:8} {tls.get('protocol')} "
      f"{tls.get('cipher_suite')} alpn={tls.get('alpn')} "
      f"handshake p50 {tls['handshake_us']['p50']} us | delivered {s['delivered']} "
      f"p99 {s['latency_us']['p99']} us socket p99 {sock} us")
for b in bad:
    print("    " + b)
sys.exit(1 if bad else 0)
PY
done
if ((failed)); then
    log "broker log:"
    tail -20 "$TMP/broker.log" >&2
    exit 1
fi
log "all runs complete, nothing lost"
