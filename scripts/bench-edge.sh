#!/usr/bin/env bash
# The edge tier (docs/scale-out.md, "fanfare as the edge of another broker"): the publisher
# on an origin Mosquitto, the subscribers on a fanfare edge that holds one bridge `in` on
# scores/# from it; against the same load with the publisher on the edge itself, so the
# difference is the bridge hop. Each way twice: at a fixed rate (latency) and closed-loop
# (the most the edge fans out).
#
#   scripts/bench-edge.sh                    # ~1.5 minutes; needs mosquitto (Debian package)
#   SUBS=2000 RATE=50 DURATION=20 scripts/bench-edge.sh
#
# Every process shares the machine's cores (Mosquitto, fanfare and the load generator), so
# the latencies include their scheduling. Results (JSON summaries, logs) in
# target/bench-edge/. Not part of the suite.
set -euo pipefail

OUT=$(cd "$(dirname "$0")/.." && pwd)/target/bench-edge
SUBS=${SUBS:-1000}
RATE=${RATE:-100}
WINDOW=${WINDOW:-4}
DURATION=${DURATION:-10}
PAYLOAD=${PAYLOAD:-64}
SHARDS=${SHARDS:-1}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
source "$(dirname "$0")/bench-common.sh"

# The origin: Mosquitto on one loopback port.
ORIGIN=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$ORIGIN" >"$OUT/mosquitto.conf"
"$MOSQUITTO" -c "$OUT/mosquitto.conf" >"$OUT/mosquitto.log" 2>&1 &
PIDS+=($!)

# The edge: one bridge in on scores/# from the origin, at QoS 0 as a live feed is.
cat >"$OUT/edge.toml" <<EOF
[[bridge]]
name = "origin"
url = "mqtt://127.0.0.1:$ORIGIN"
reconnect_initial_ms = 50
reconnect_max_ms = 500
topics = [{ filter = "scores/#", direction = "in", qos = 0 }]
EOF
rm -f "$OUT/edge.out" "$OUT/edge.err"
"$FANFARE" --shards "$SHARDS" --tcp 127.0.0.1:0 --ws 127.0.0.1:0 --admin off \
    --config "$OUT/edge.toml" >"$OUT/edge.out" 2>"$OUT/edge.err" &
EDGE_PID=$!
PIDS+=($EDGE_PID)
for _ in $(seq 100); do
    grep -q 'bridge origin: connected' "$OUT/edge.err" 2>/dev/null && break
    sleep 0.1
done
grep -q 'bridge origin: connected' "$OUT/edge.err" || { log "the bridge did not connect:"; cat "$OUT/edge.err" >&2; exit 1; }
EDGE=$(awk '$1 == "listening" && $2 == "tcp" { split($3, a, ":"); print a[2]; exit }' "$OUT/edge.out")

summary() {
    python3 - "$@" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_us"]
print(f"{sys.argv[2]}: {d['connections']['ok']:,} subscribers, {d['msgs_per_s']:,.0f} deliveries/s, "
      f"delivered {d['delivered']:,} of {d['expected']:,} ({d['lost']:,} lost), "
      f"p50 {l['p50'] / 1000:.2f} ms, p99 {l['p99'] / 1000:.2f} ms, max {l['max'] / 1000:.1f} ms")
PY
}

# run NAME PUBLISHER-URL LOAD...: one fanout run, subscribers on the edge.
run() {
    local name=$1 pub=$2
    shift 2
    log "$name"
    "$LT" fanout --url "tcp://127.0.0.1:$EDGE" --pub-url "$pub" --topic scores/live \
        --subscribers "$SUBS" --payload "$PAYLOAD" --duration "$DURATION" \
        --broker-pid "$EDGE_PID" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
}

run bridged-rate "tcp://127.0.0.1:$ORIGIN" --rate "$RATE"
run direct-rate "tcp://127.0.0.1:$EDGE" --rate "$RATE"
run bridged-closed "tcp://127.0.0.1:$ORIGIN" --closed-loop "$WINDOW"
run direct-closed "tcp://127.0.0.1:$EDGE" --closed-loop "$WINDOW"

for name in bridged-rate direct-rate bridged-closed direct-closed; do
    summary "$OUT/$name.json" "$name"
done
