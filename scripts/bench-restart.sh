#!/usr/bin/env bash
# Restart time with a full data directory (issue 13's goal: 1 million retained topics and
# 100 000 offline persistent sessions with queued messages loaded and serving within 5 s).
#
#   cargo build --release --bin fanfare --example store_fill
#   scripts/bench-restart.sh                        # 1 M retained, 100 000 sessions x 10 queued
#   RETAINED=100000 SESSIONS=10000 RUNS=1 scripts/bench-restart.sh
#   DROP_CACHES=1 scripts/bench-restart.sh          # cold page cache before each start (root)
#   NICE=-10 scripts/bench-restart.sh               # the broker ahead of other work (root)
#
# Writes the directory once with `store_fill` (the store's own encoders, one snapshot per
# shard, as a start-up compaction leaves it), then RUNS times: start `fanfare --data-dir`,
# and measure from exec to its `ready` line (and the broker's CPU time then), to the first
# retained message that `mosquitto_sub -t 'bench/r/7/+' -C 1` (1 000 topics match) started at
# `ready` receives, and then to the first one of `mosquitto_sub -t 'bench/r/#' -C 1` (all of
# them match: the broker walks the million before it sends the first); the broker's RSS after
# that; the data directory's size; the broker's own "loaded in N ms" line. Each start
# rewrites the snapshots (the start-up compaction), so run 2 loads what run 1 wrote. Prints
# one JSON line per run. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RETAINED=${RETAINED:-1000000}
SESSIONS=${SESSIONS:-100000}
QUEUED=${QUEUED:-10}
SHARDS=${SHARDS:-2}
RUNS=${RUNS:-3}
DROP_CACHES=${DROP_CACHES:-0}
NICE=${NICE:-0}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

"$BIN/examples/store_fill" "$TMP/data" --retained "$RETAINED" --sessions "$SESSIONS" \
    --queued "$QUEUED" --shards "$SHARDS" >&2
# The default bounds are for a small broker: room for every topic and session loaded.
cat >"$TMP/fanfare.toml" <<EOF
[limits]
retained_messages_max = $((RETAINED * 2))
retained_bytes_max = $((RETAINED * 512))
offline_sessions_per_shard_max = $((SESSIONS + 1))
EOF

for run in $(seq "$RUNS"); do
    if [ "$DROP_CACHES" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    python3 - "$BIN/fanfare" "$TMP" "$SHARDS" "$run" "$NICE" <<'EOF'
import json, os, re, subprocess, sys, time

fanfare, tmp, shards, run, nice = sys.argv[1:]
data = os.path.join(tmp, "data")

def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

size_before = dir_bytes(data)
err = open(os.path.join(tmp, "err"), "w+")
start = time.monotonic()
broker = subprocess.Popen(
    ["nice", "-n", nice, fanfare, "--config", os.path.join(tmp, "fanfare.toml"), "--data-dir", data,
     "--shards", shards, "--tcp", "127.0.0.1:0", "--ws", "off", "--admin", "off"],
    stdout=subprocess.PIPE, stderr=err, text=True)
port = None
try:
    for line in broker.stdout:
        match = re.match(r"listening tcp 127\.0\.0\.1:(\d+)", line)
        if match:
            port = match.group(1)
        if line.startswith("ready"):
            break
    ready_s = time.monotonic() - start
    if port is None:
        sys.exit("no tcp listener printed")
    ready_cpu_s = cpu_s(broker.pid)
    first_s = {}
    for name, topic in (("one_match", "bench/r/7/+"), ("all", "bench/r/#")):
        sub = subprocess.run(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-t", topic, "-C", "1",
             "-W", "60"], capture_output=True, text=True)
        first_s[name] = round(time.monotonic() - start, 3)
        if sub.returncode != 0 or not sub.stdout:
            sys.exit(f"no retained message on {topic}: {sub.stderr}")
    with open(f"/proc/{broker.pid}/status") as status:
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))
finally:
    broker.terminate()
    broker.wait(timeout=60)
err.seek(0)
loaded = re.search(r"(\d+) retained messages and (\d+) sessions loaded in (\d+) ms", err.read())
print(json.dumps({
    "run": int(run),
    "shards": int(shards),
    "retained": int(loaded.group(1)) if loaded else None,
    "sessions": int(loaded.group(2)) if loaded else None,
    "store_load_ms": int(loaded.group(3)) if loaded else None,
    "exec_to_ready_s": round(ready_s, 3),
    "broker_cpu_s_at_ready": round(ready_cpu_s, 2),
    "exec_to_first_of_1000_s": first_s["one_match"],
    "then_to_first_of_1m_s": first_s["all"],
    "loadavg_1m": round(os.getloadavg()[0], 1),
    "nice": int(nice),
    "rss_mib": round(rss_kb / 1024),
    "data_dir_mib_before": round(size_before / 2**20, 1),
    "data_dir_mib_after": round(dir_bytes(data) / 2**20, 1),
}))
EOF
done
