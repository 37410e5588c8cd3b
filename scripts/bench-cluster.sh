#!/usr/bin/env bash
# The second hop of a fanfare cluster: one publisher on node A, WebSocket subscribers on nodes
# B and C (every delivery crosses NATS), against the same load on one node; and the NATS
# messages each publish costs, read from nats-server's monitoring port (/varz).
#
#   scripts/bench-cluster.sh             # ~1.5 minutes; needs nats-server (Debian package)
#   SUBS=600 RATE=100 scripts/bench-cluster.sh
#   QOS=1 scripts/bench-cluster.sh       # QoS 1 both ways: across nodes on JetStream, and the
#                                        # PUBACK's wait for it (p50/p99)
#
# Every process shares the machine's cores (three brokers, nats-server and the load
# generator), so the latencies include their scheduling; the broker CPU outside the run is in
# the logs. Results (JSON summaries, logs) in target/bench-cluster/. Not part of the suite.
set -euo pipefail

OUT=$(cd "$(dirname "$0")/.." && pwd)/target/bench-cluster
SUBS=${SUBS:-300}
RATE=${RATE:-50}
DURATION=${DURATION:-20}
QOS=${QOS:-0}
source "$(dirname "$0")/bench-common.sh"

varz() { curl -s "http://127.0.0.1:$MON/varz"; }

summary() {
    python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency_us"]
print(f"{sys.argv[2]}: {d['connections']['ok']:,} subscribers, delivered {d['delivered']:,} of "
      f"{d['expected']:,} ({d['lost']:,} lost), p50 {l['p50'] / 1000:.2f} ms, "
      f"p99 {l['p99'] / 1000:.2f} ms, max {l['max'] / 1000:.1f} ms, "
      f"{d['msgs_per_s']:,.0f} deliveries/s")
a = d.get("puback_latency_us")
if a:
    print(f"  PUBACK: p50 {a['p50'] / 1000:.2f} ms, p99 {a['p99'] / 1000:.2f} ms, "
          f"max {a['max'] / 1000:.1f} ms; {d['duplicates']:,} duplicates, "
          f"{d['out_of_order']:,} out of order")
EOF
}

run_fanout() {
    local name=$1
    shift
    "$LT" fanout "$@" --subscribers "$SUBS" --rate "$RATE" --duration "$DURATION" --qos "$QOS" \
        >"$OUT/$name.json" 2>"$OUT/$name.log" || log "$name: the load generator failed (see $OUT/$name.log)"
}

log "one node: publisher and $SUBS subscribers on it, $RATE msg/s"
start_node single --shards 1
run_fanout single --url "ws://127.0.0.1:$PORT_WS/mqtt"
summary "$OUT/single.json" "one node"
kill -INT "${PIDS[-1]}"

log "three nodes on one nats-server: publisher on A, subscribers on B and C"
NATS=$(free_port)
MON=$(free_port)
rm -rf "$OUT/js"
nats-server -a 127.0.0.1 -p "$NATS" -m "$MON" -js -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
sleep 1
CLUSTER=(--nats "nats://127.0.0.1:$NATS")
printf '[cluster]\nnode = "a"\n' >"$OUT/a.toml"
printf '[cluster]\nnode = "b"\n' >"$OUT/b.toml"
printf '[cluster]\nnode = "c"\n' >"$OUT/c.toml"
start_node a --shards 1 --config "$OUT/a.toml" "${CLUSTER[@]}"
A_WS=$PORT_WS
start_node b --shards 1 --config "$OUT/b.toml" "${CLUSTER[@]}"
B_WS=$PORT_WS
start_node c --shards 1 --config "$OUT/c.toml" "${CLUSTER[@]}"
C_WS=$PORT_WS
before=$(varz)
run_fanout cluster --url "ws://127.0.0.1:$B_WS/mqtt" --url "ws://127.0.0.1:$C_WS/mqtt" \
    --pub-url "ws://127.0.0.1:$A_WS/mqtt"
after=$(varz)
summary "$OUT/cluster.json" "three nodes, every delivery across NATS"
python3 - "$OUT/cluster.json" "$before" "$after" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
before, after = json.loads(sys.argv[2]), json.loads(sys.argv[3])
published = max(1, d["published"])
into = after["in_msgs"] - before["in_msgs"]
out = after["out_msgs"] - before["out_msgs"]
print(f"NATS: {into:,} messages in and {out:,} out ({published:,} publishes in the measured "
      f"window, warm-up and drain besides): {out / max(into, 1):.2f} out per message in, "
      f"for 2 interested nodes and {d['connections']['ok']:,} subscribers")
EOF
