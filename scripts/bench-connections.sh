#!/usr/bin/env bash
# The most WebSocket connections one fanfare process holds on this machine, and a two-node
# cluster (two fanfare processes on one nats-server), with the broker's memory per connection
# at that size; then one publisher on node A fanning out to every subscriber of both nodes;
# then one load generator command holding 100 000 connections over six broker processes.
#
#   scripts/bench-connections.sh            # ~4 minutes; needs nats-server (Debian package)
#   ONE=19990 TWO=39950 MANY=100000 scripts/bench-connections.sh
#
# The per-process open-file limit (`ulimit -n`, 20 000 on the development machine) bounds one
# broker process, so the load generator offers a little more than a process may hold and the
# figure is what the broker accepted. The load generator spreads its connections over worker
# processes (`--procs`) and source addresses 127.0.0.2, .3, ... so that neither its own file
# limit nor the ephemeral ports of one source address are what is measured; each run has
# addresses of its own, since the ports a run leaves in TIME_WAIT (60 s) make binding the
# same address slow for the next.
# Results (JSON summaries and logs) in target/bench-connections/. Not part of the test suite.
set -euo pipefail

OUT=$(cd "$(dirname "$0")/.." && pwd)/target/bench-connections
ONE=${ONE:-20000}
TWO=${TWO:-40000}
MANY=${MANY:-100000}
source "$(dirname "$0")/bench-common.sh"

rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# hold NAME PIDS-OF-BROKERS CONNECTIONS LOADTEST-ARGS...: a conn run; the brokers' RSS is
# read while the connections are held (set-up at 5 000/s, then half-way through --duration).
hold() {
    local name=$1 brokers=$2 conns=$3
    shift 3
    local before=0 during=0
    for p in $brokers; do before=$((before + $(rss_kib "$p"))); done
    "$LT" conn "$@" --subscribers "$conns" --conn-rate 5000 --duration 20 \
        >"$OUT/$name.json" 2>"$OUT/$name.log" &
    local lt=$!
    sleep $((conns / 5000 + 12))
    for p in $brokers; do during=$((during + $(rss_kib "$p"))); done
    wait "$lt" || true
    python3 - "$OUT/$name.json" "$before" "$during" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
before, during = int(sys.argv[2]), int(sys.argv[3])
ok = d["connections"]["ok"]
failed = sum(d["connections"]["failed"].values())
per = (during - before) * 1024 / ok if ok else 0
print(f"held {ok:,} (offered {ok + failed:,}, {failed:,} refused or failed); "
      f"broker RSS {before / 1024:.1f} -> {during / 1024:.1f} MiB, {per:,.0f} B per connection")
EOF
}

log "one process, 2 shards, $ONE WebSocket connections offered"
start_node one --shards 2
hold one "$PID" "$ONE" --url "ws://127.0.0.1:$PORT_WS/mqtt" --procs 2 \
    --source 127.0.0.2,127.0.0.3
kill -INT "$PID"
wait "$PID" 2>/dev/null || true

log "two nodes on one nats-server, 1 shard each, $TWO offered, spread over both"
NATS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf "$OUT/js"
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
sleep 1
# Each node needs its own name: a node ignores messages that come back with its own.
printf '[cluster]\nnode = "a"\n' >"$OUT/a.toml"
printf '[cluster]\nnode = "b"\n' >"$OUT/b.toml"
start_node node-a --shards 1 --config "$OUT/a.toml" --nats "nats://127.0.0.1:$NATS_PORT"
A_PID=$PID A_WS=$PORT_WS A_TCP=$PORT_TCP
start_node node-b --shards 1 --config "$OUT/b.toml" --nats "nats://127.0.0.1:$NATS_PORT"
B_PID=$PID B_WS=$PORT_WS
hold two "$A_PID $B_PID" "$TWO" --url "ws://127.0.0.1:$A_WS/mqtt" --url "ws://127.0.0.1:$B_WS/mqtt" \
    --procs 3 --source 127.0.0.4,127.0.0.5,127.0.0.6

log "two fresh nodes: one publisher on node A, 10 msg/s to $((TWO - 200)) subscribers of one topic on both"
kill -INT "$A_PID" "$B_PID"
wait "$A_PID" "$B_PID" 2>/dev/null || true
start_node node-a2 --shards 1 --config "$OUT/a.toml" --nats "nats://127.0.0.1:$NATS_PORT"
A_PID=$PID A_WS=$PORT_WS
start_node node-b2 --shards 1 --config "$OUT/b.toml" --nats "nats://127.0.0.1:$NATS_PORT"
B_PID=$PID B_WS=$PORT_WS
before=$(($(rss_kib "$A_PID") + $(rss_kib "$B_PID")))
"$LT" fanout --url "ws://127.0.0.1:$A_WS/mqtt" --url "ws://127.0.0.1:$B_WS/mqtt" \
    --pub-url "ws://127.0.0.1:$A_WS/mqtt" --subscribers "$((TWO - 200))" --rate 10 \
    --duration 20 --conn-rate 5000 --procs 3 --source 127.0.0.7,127.0.0.8,127.0.0.9 \
    >"$OUT/two-fanout.json" 2>"$OUT/two-fanout.log" &
lt=$!
sleep 22
during=$(($(rss_kib "$A_PID") + $(rss_kib "$B_PID")))
wait "$lt" || true
python3 - "$OUT/two-fanout.json" "$before" "$during" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
before, during = int(sys.argv[2]), int(sys.argv[3])
l = d["latency_us"]
ok = d["connections"]["ok"]
print(f"fan-out over two nodes: {ok:,} connections, delivered "
      f"{d['delivered']:,} of {d['expected']:,} ({d['lost']:,} lost), "
      f"p50 {l['p50'] / 1000:.1f} ms, p99 {l['p99'] / 1000:.1f} ms; brokers' RSS "
      f"{before / 1024:.1f} -> {during / 1024:.1f} MiB, {(during - before) * 1024 / max(ok, 1):,.0f} B "
      f"per connection; load generator {d['loadgen']['cpu_s']:.1f} CPU-s")
EOF

log "the load generator: $MANY connections from one command, over six single-shard brokers"
for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()
urls=()
brokers=""
for i in 1 2 3 4 5 6; do
    start_node many-$i --shards 1
    urls+=(--url "ws://127.0.0.1:$PORT_WS/mqtt")
    brokers="$brokers $PID"
done
hold many "$brokers" "$MANY" "${urls[@]}" --procs 6 \
    --source 127.0.0.10,127.0.0.11,127.0.0.12,127.0.0.13,127.0.0.14,127.0.0.15
