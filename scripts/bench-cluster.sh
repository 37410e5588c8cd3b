#!/usr/bin/env bash
# The second hop of a fanfare cluster: one publisher on node A, WebSocket subscribers on nodes
# B and C (every delivery crosses NATS), against the same load on one node; and the NATS
# messages each publish costs, read from nats-server's monitoring port (/varz).
#
#   scripts/bench-cluster.sh             # ~1.5 minutes; needs nats-server (Debian package)
#   SUBS=600 RATE=100 scripts/bench-cluster.sh
#   NATS_SERVERS=3 scripts/bench-cluster.sh
#   QOS=1 scripts/bench-cluster.sh       # QoS 1 both ways: across nodes on JetStream, and the
#                                        # PUBACK's wait for it (p50/p99)
#
# NATS_SERVERS=3: three nats-servers clustered on loopback (routes between all, JetStream),
# node A on the first, B on the second, C on the third, and the subscribers spread over all
# three nodes (a third of them on the publisher's node); the NATS figures are summed over the
# servers, with the messages sent over routes counted apart (/routez).
#
# Every process shares the machine's cores (three brokers, the nats-servers and the load
# generator), so the latencies include their scheduling; the load average before and after
# the cluster run is printed. Results (JSON summaries, logs) in target/bench-cluster/. Not
# part of the suite.
set -euo pipefail

OUT=$(cd "$(dirname "$0")/.." && pwd)/target/bench-cluster
SUBS=${SUBS:-300}
RATE=${RATE:-50}
DURATION=${DURATION:-20}
NATS_SERVERS=${NATS_SERVERS:-1}
QOS=${QOS:-0}
source "$(dirname "$0")/bench-common.sh"
[[ $NATS_SERVERS == 1 || $NATS_SERVERS == 3 ]] || { log "NATS_SERVERS is 1 or 3"; exit 1; }

# The servers' client and monitoring ports.
NATS_PORTS=()
MONS=()

# nats_figures: {"in", "out", "route_out"} summed over the servers (/varz, /routez).
nats_figures() {
    python3 - "${MONS[@]}" <<'PY'
import json, sys, urllib.request

def get(port, path):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5))

total = {"in": 0, "out": 0, "route_out": 0}
for port in sys.argv[1:]:
    varz = get(port, "/varz")
    total["in"] += varz["in_msgs"]
    total["out"] += varz["out_msgs"]
    total["route_out"] += sum(r["out_msgs"] for r in get(port, "/routez").get("routes") or [])
print(json.dumps(total))
PY
}

# nats_formed: whether every server has its routes and JetStream a meta leader.
nats_formed() {
    python3 - "$NATS_SERVERS" "${MONS[@]}" <<'PY'
import json, sys, urllib.request

size, ports = int(sys.argv[1]), sys.argv[2:]
try:
    for port in ports:
        get = lambda path: json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1))
        get("/varz")
        if size > 1 and (get("/routez")["num_routes"] < size - 1
                         or not get("/jsz").get("meta_cluster", {}).get("leader")):
            sys.exit(1)
except OSError:
    sys.exit(1)
PY
}

# start_nats: NATS_SERVERS nats-servers with JetStream, clustered when more than one.
start_nats() {
    rm -rf "$OUT/js"
    local cluster_ports=() routes i
    for i in $(seq "$NATS_SERVERS"); do
        NATS_PORTS+=("$(free_port)")
        MONS+=("$(free_port)")
        cluster_ports+=("$(free_port)")
    done
    routes=$(printf 'nats://127.0.0.1:%s,' "${cluster_ports[@]}")
    for i in $(seq 0 $((NATS_SERVERS - 1))); do
        local args=(-a 127.0.0.1 -p "${NATS_PORTS[$i]}" -m "${MONS[$i]}" -js -sd "$OUT/js/n$i")
        if [[ $NATS_SERVERS -gt 1 ]]; then
            args+=(-n "n$i" --cluster_name bench --cluster "nats://127.0.0.1:${cluster_ports[$i]}"
                --routes "${routes%,}")
        fi
        nats-server "${args[@]}" >"$OUT/nats$i.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 150); do
        nats_formed && return 0
        sleep 0.2
    done
    log "the NATS servers did not start or form a cluster (see $OUT/nats*.log)"
    exit 1
}

summary() {
    python3 - "$@" <<'PY'
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
PY
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

if [[ $NATS_SERVERS == 1 ]]; then
    log "three nodes on one nats-server: publisher on A, subscribers on B and C"
else
    log "three nodes on three clustered nats-servers: publisher on A, subscribers on A, B and C"
fi
start_nats
for node in a b c; do
    printf '[cluster]\nnode = "%s"\n' "$node" >"$OUT/$node.toml"
done
# Node i on server i (all on the one server when there is one).
nats_url() { echo "nats://127.0.0.1:${NATS_PORTS[$(($1 % NATS_SERVERS))]}"; }
start_node a --shards 1 --config "$OUT/a.toml" --nats "$(nats_url 0)"
A_WS=$PORT_WS
start_node b --shards 1 --config "$OUT/b.toml" --nats "$(nats_url 1)"
B_WS=$PORT_WS
start_node c --shards 1 --config "$OUT/c.toml" --nats "$(nats_url 2)"
C_WS=$PORT_WS
SUB_URLS=(--url "ws://127.0.0.1:$B_WS/mqtt" --url "ws://127.0.0.1:$C_WS/mqtt")
[[ $NATS_SERVERS == 1 ]] || SUB_URLS+=(--url "ws://127.0.0.1:$A_WS/mqtt")
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
before=$(nats_figures)
run_fanout cluster "${SUB_URLS[@]}" --pub-url "ws://127.0.0.1:$A_WS/mqtt"
after=$(nats_figures)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
summary "$OUT/cluster.json" "three nodes on $NATS_SERVERS nats-server(s)"
python3 - "$OUT/cluster.json" "$before" "$after" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
before, after = json.loads(sys.argv[2]), json.loads(sys.argv[3])
published = max(1, d["published"])
into = after["in"] - before["in"]
out = after["out"] - before["out"]
route = after["route_out"] - before["route_out"]
from_clients = max(into - route, 1)
print(f"NATS: {into:,} messages in and {out:,} out, {route:,} of them over routes "
      f"({published:,} publishes in the measured window, warm-up and drain besides): "
      f"{out / from_clients:.2f} out and {route / from_clients:.2f} over routes per message "
      f"from a node, for {d['connections']['ok']:,} subscribers")
PY
log "load average (1, 5, 15 min) before the cluster run: $load_before; after: $load_after"
