#!/usr/bin/env bash
# What a broker costs in memory: RSS of a fresh broker, and per idle WebSocket subscriber the
# broker's RSS and the kernel's slab memory, at 1 and at 2 shards.
#
#   scripts/bench-memory.sh                      # target/release binaries, 19 000 connections
#   BIN=/tmp/old CONNS=10000 scripts/bench-memory.sh
#   SCHEME=wss scripts/bench-memory.sh           # over TLS (a throwaway CA made with openssl)
#
# Per shard count: start a fresh broker, read its RSS once the listeners are up; read
# /proc/meminfo's Slab; open CONNS idle WebSocket subscribers with `fanfare-loadtest conn`
# (it reports the broker's RSS growth per connection); read Slab again while they are held.
# Both ends of every connection are on this machine, so the Slab delta is two sockets per
# connection, the generator's included, plus the broker's armed multishot receive. Prints one
# JSON line per shard count. Not part of the test suite; about a minute per shard count.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
CONNS=${CONNS:-19000}
SHARD_COUNTS=${SHARD_COUNTS:-"1 2"}
HOLD_S=${HOLD_S:-30}
SCHEME=${SCHEME:-ws}
TMP=$(mktemp -d)
BROKER_PID=
trap '[[ -n "$BROKER_PID" ]] && kill -KILL "$BROKER_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

listener=(--ws 127.0.0.1:0)
trust=()
if [ "$SCHEME" = wss ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=bench CA" -keyout "$TMP/ca.key" -out "$TMP/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TMP/ext.cnf"
    openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" \
        -CAcreateserial -days 1 -extfile "$TMP/ext.cnf" -out "$TMP/server.pem" 2>/dev/null
    listener=(--ws off --wss 127.0.0.1:0 --tls-cert "$TMP/server.pem" --tls-key "$TMP/server.key")
    trust=(--ca "$TMP/ca.pem")
fi

for shards in $SHARD_COUNTS; do
    # Earlier runs leave sockets in TIME_WAIT that slow new connects; let them go first.
    while [ "$(ss -tan state time-wait | wc -l)" -gt 1000 ]; do sleep 2; done
    "$BIN/fanfare" --shards "$shards" --tcp off --admin off "${listener[@]}" >"$TMP/out" 2>"$TMP/err" &
    BROKER_PID=$!
    for _ in $(seq 100); do grep -q '^ready' "$TMP/out" && break; sleep 0.1; done
    ws_port=$(sed -n "s/^listening $SCHEME 127.0.0.1:\([0-9]*\).*/\1/p" "$TMP/out")
    sleep 1
    fresh_kb=$(rss_kb "$BROKER_PID")
    slab_before=$(slab_kb)
    "$BIN/fanfare-loadtest" conn --url "$SCHEME://127.0.0.1:$ws_port/mqtt" "${trust[@]}" --workers 1 \
        --source 127.0.0.2,127.0.0.3 --broker-pid "$BROKER_PID" --subscribers "$CONNS" \
        --conn-rate 5000 --duration "$HOLD_S" >"$TMP/report.json" 2>"$TMP/lt.err" &
    lt_pid=$!
    # Set-up takes CONNS / 5000 s and a little more; sample well inside the hold.
    sleep $((CONNS / 5000 + HOLD_S / 3))
    slab_held=$(slab_kb)
    wait "$lt_pid" || true
    kill -INT "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    python3 - "$TMP/report.json" "$shards" "$fresh_kb" "$slab_before" "$slab_held" "$CONNS" <<'EOF'
import json, sys
path, shards, fresh, before, held, conns = sys.argv[1:]
report = json.load(open(path))
broker = report.get("broker") or {}
ok = report["connections"]["ok"]
per_conn = broker.get("rss_bytes_per_conn")
print(json.dumps({
    "shards": int(shards),
    "fresh_rss_kb": int(fresh),
    "connections": ok,
    "broker_rss_bytes_per_conn": round(per_conn) if per_conn else None,
    "rss_start_kb": broker.get("rss_bytes_start", 0) // 1024,
    "rss_max_kb": broker.get("rss_bytes_max", 0) // 1024,
    "slab_bytes_per_conn_both_ends": round((int(held) - int(before)) * 1024 / max(ok, 1)),
}))
EOF
done
