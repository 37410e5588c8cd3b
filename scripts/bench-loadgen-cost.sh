#!/usr/bin/env bash
# What the load generator's own CPU costs per delivered message, against a standard client
# receiving the same stream: 100 subscribers of one topic at 1 000 msg/s (100 000 deliveries/s)
# for 20 s over TCP, received once by fanfare-loadtest and once by 100 `mosquitto_sub`
# processes (libmosquitto, printing each message's topic, one line each, to a file) while
# fanfare-loadtest only publishes.
#
#   scripts/bench-loadgen-cost.sh        # ~1 minute; needs mosquitto-clients
#
# The broker runs on core 1, the receivers on core 0. Results in target/bench-loadgen-cost/.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/target/bench-loadgen-cost
SUBS=${SUBS:-100}
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
mkdir -p "$OUT"
cargo build --release -q --bin fanfare -p fanfare -p fanfare-loadtest
LT=$ROOT/target/release/fanfare-loadtest
TICKS=$(getconf CLK_TCK)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

taskset -c 1 "$ROOT/target/release/fanfare" --shards 1 --tcp 127.0.0.1:0 --ws off --admin off \
    >"$OUT/broker.out" 2>"$OUT/broker.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^ready' "$OUT/broker.out" 2>/dev/null && break; sleep 0.1; done
PORT=$(awk '$1 == "listening" && $2 == "tcp" { split($3, a, ":"); print a[2]; exit }' "$OUT/broker.out")

# cpu_ticks PID...: user + system ticks of the processes.
cpu_ticks() { for p in "$@"; do awk '{ print $14 + $15 }' "/proc/$p/stat"; done | paste -sd+ | bc; }

echo "fanfare-loadtest receiving (and publishing):"
taskset -c 0 "$LT" fanout --url "tcp://127.0.0.1:$PORT" --subscribers "$SUBS" --rate "$RATE" \
    --duration "$DURATION" --topic cost/lt >"$OUT/loadtest.json" 2>"$OUT/loadtest.log"
python3 - "$OUT/loadtest.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
cpu = d["loadgen"]["cpu_s"]
print(f"  {d['delivered']:,} delivered in the window; {cpu:.2f} CPU-s over the whole run "
      f"(set-up and drain included): {cpu / d['delivered'] * 1e6:.2f} CPU-µs per delivery")
EOF

echo "$SUBS mosquitto_sub receiving, fanfare-loadtest publishing only:"
SUB_PIDS=()
for i in $(seq "$SUBS"); do
    taskset -c 0 mosquitto_sub -h 127.0.0.1 -p "$PORT" -t cost/sub -i "cost-$i" -F %t \
        >"$OUT/sub-$i.txt" &
    SUB_PIDS+=($!)
done
PIDS+=("${SUB_PIDS[@]}")
sleep 2
start=$(cpu_ticks "${SUB_PIDS[@]}")
taskset -c 0 "$LT" fanout --url "tcp://127.0.0.1:$PORT" --subscribers 0 --rate "$RATE" \
    --duration "$DURATION" --topic cost/sub >"$OUT/publisher.json" 2>"$OUT/publisher.log"
sleep 1
end=$(cpu_ticks "${SUB_PIDS[@]}")
received=$(cat "$OUT"/sub-*.txt | wc -l)
python3 - "$start" "$end" "$TICKS" "$received" <<'EOF'
import sys
start, end, hz, received = (int(x) for x in sys.argv[1:5])
cpu = (end - start) / hz
print(f"  {received:,} deliveries; {cpu:.2f} CPU-s in mosquitto_sub: "
      f"{cpu / received * 1e6:.2f} CPU-µs per delivery")
EOF
