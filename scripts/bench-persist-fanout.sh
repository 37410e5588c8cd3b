#!/usr/bin/env bash
# QoS 0 fan-out with persistence off and on (issue 13: "within noise of persistence off; the
# store must stay off the fan-out path"), over WebSocket, one broker core.
#
#   cargo build --release --bin fanfare -p fanfare-loadtest
#   scripts/bench-persist-fanout.sh                  # 3 modes x 2 loads x REPEAT runs
#   SUBSCRIBERS=2000 REPEAT=1 scripts/bench-persist-fanout.sh
#
# Modes: `off` (no data directory), `on` (`--data-dir`, durability batch, the default) and
# `on-retain` (the same, every publish with RETAIN, so each also replaces the topic's
# retained value and the store writes it once per flush). Loads: SUBSCRIBERS subscribers at
# RATE msg/s (fixed rate) and a closed loop of WINDOW messages. The broker is pinned to core
# 1 (its store thread too), the load generator to core 0; a fresh broker per run. Prints one
# JSON line per run with deliveries/s, latency to the subscribers' sockets and to the
# generator's read (p50/p99, ms), broker CPU-s per million deliveries, and the 1-minute load
# average before the run (other work on the machine makes runs noisy). Not part of the test
# suite; about 25 s per run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
SUBSCRIBERS=${SUBSCRIBERS:-5000}
RATE=${RATE:-10}
WINDOW=${WINDOW:-128}
REPEAT=${REPEAT:-2}
MODES=${MODES:-"off on on-retain"}
TMP=$(mktemp -d)
BROKER_PID=
trap '[[ -n "$BROKER_PID" ]] && kill -KILL "$BROKER_PID" 2>/dev/null; rm -rf "$TMP"' EXIT

for repeat in $(seq "$REPEAT"); do
    for load in rate closed; do
        for mode in $MODES; do
            # Earlier runs leave sockets in TIME_WAIT that slow new connects; let them go.
            while [ "$(ss -tan state time-wait | wc -l)" -gt 2000 ]; do sleep 2; done
            data=()
            retain=()
            if [ "$mode" != off ]; then
                rm -rf "$TMP/data"
                data=(--data-dir "$TMP/data")
            fi
            if [ "$mode" = on-retain ]; then retain=(--retain); fi
            taskset -c 1 "$BIN/fanfare" --shards 1 --tcp off --admin off --ws 127.0.0.1:0 \
                "${data[@]}" >"$TMP/out" 2>"$TMP/err" &
            BROKER_PID=$!
            for _ in $(seq 100); do grep -q '^ready' "$TMP/out" && break; sleep 0.1; done
            ws_port=$(sed -n 's/^listening ws 127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/out")
            if [ "$load" = rate ]; then pace=(--rate "$RATE"); else pace=(--closed-loop "$WINDOW"); fi
            loadavg=$(cut -d' ' -f1 /proc/loadavg)
            taskset -c 0 "$BIN/fanfare-loadtest" fanout --url "ws://127.0.0.1:$ws_port/mqtt" \
                --workers 1 --source 127.0.0.2,127.0.0.3 --broker-pid "$BROKER_PID" \
                --subscribers "$SUBSCRIBERS" "${pace[@]}" "${retain[@]}" --payload 64 \
                --duration 10 --warmup 2 --drain 3 --conn-rate 5000 \
                >"$TMP/report.json" 2>"$TMP/lt.err" || true
            kill -INT "$BROKER_PID"
            wait "$BROKER_PID" 2>/dev/null || true
            BROKER_PID=
            python3 - "$TMP/report.json" "$mode" "$load" "$loadavg" <<'EOF'
import json, sys
path, mode, load, loadavg = sys.argv[1:]
try:
    r = json.load(open(path))
except ValueError:
    print(json.dumps({"mode": mode, "load": load, "error": "no report"}))
    sys.exit()
ms = lambda lat, q: round(lat[q] / 1000, 1) if lat else None
print(json.dumps({
    "mode": mode,
    "load": load,
    "deliveries_per_s": r["msgs_per_s"],
    "lost": r["lost"],
    "socket_p50_ms": ms(r.get("socket_latency_us"), "p50"),
    "socket_p99_ms": ms(r.get("socket_latency_us"), "p99"),
    "read_p50_ms": ms(r["latency_us"], "p50"),
    "read_p99_ms": ms(r["latency_us"], "p99"),
    "broker_cpu_s_per_m": round(r["broker"]["cpu_s_per_million"], 3),
    "loadavg_1m_before": float(loadavg),
}))
EOF
        done
    done
done
