#!/usr/bin/env bash
# Runs the same fanfare-loadtest scenarios against fanfare, Mosquitto and rumqttd on this
# machine, over loopback, and writes the side-by-side table into docs/benchmarks.md (between
# the `bench-compare` markers), with the machine, date and commit.
#
#   scripts/bench-compare.sh            # everything, ~6 minutes on 2 vCPUs
#   BROKERS="fanfare mosquitto" scripts/bench-compare.sh
#
# Brokers get core 1 (`taskset -c 1`), the load generator core 0; fanfare is also run with
# `--shards 2` on both cores, which the load generator then shares. Every run is bounded by
# the load generator's own duration and by `timeout`; the whole script by ~15 minutes.
# Not part of the test suite: it installs packages and takes minutes.
#
# Installs, if missing: Debian's `mosquitto` (run here with a temporary configuration that
# adds a WebSocket listener on loopback) and rumqttd from crates.io into
# target/bench-compare/rumqttd (`cargo install rumqttd --locked`, or without `--locked` when
# the locked dependency set no longer builds with this compiler).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=$ROOT/target/bench-compare
RESULTS=$CACHE/results
TMP=$(mktemp -d)
BROKERS=${BROKERS:-"fanfare mosquitto rumqttd fanfare-2shards"}
DOC=$ROOT/docs/benchmarks.md
LT=$ROOT/target/release/fanfare-loadtest
BROKER_PID=
trap 'stop_broker; rm -rf "$TMP"' EXIT
mkdir -p "$RESULTS"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

stop_broker() {
    if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
        kill -INT "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    BROKER_PID=
}

# wait_port PORT: true once something accepts on PORT, false after 10 s or if the broker died.
wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "nothing listens on port $1; the broker said:"
    tail -5 "$TMP/broker.err" >&2 || true
    stop_broker
    return 1
}

# free_port: a port below the ephemeral range that nothing holds on any address. Below it,
# because the load generator leaves tens of thousands of ephemeral ports in TIME_WAIT, and
# Mosquitto's WebSocket listener (libwebsockets) then fails to bind most of them.
free_port() {
    python3 -c '
import random, socket
for _ in range(100):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
'
}

# ---- installs and builds ----------------------------------------------------------------
install_mosquitto() {
    command -v mosquitto >/dev/null && return 0
    log "installing mosquitto (Debian package)"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    # The package may start a system instance on port 1883; ours uses its own ports.
}

RUMQTTD=$CACHE/rumqttd/bin/rumqttd
RUMQTTD_INSTALL="cargo install rumqttd --locked"
# How the cached rumqttd was installed, written next to it.
RUMQTTD_HOW=$CACHE/rumqttd/installed-with
install_rumqttd() {
    if [[ -x $RUMQTTD ]]; then
        RUMQTTD_INSTALL=$(cat "$RUMQTTD_HOW" 2>/dev/null || echo "an earlier cargo install")
        return 0
    fi
    log "installing rumqttd from crates.io into $CACHE/rumqttd"
    if ! cargo install rumqttd --locked --root "$CACHE/rumqttd" >"$CACHE/rumqttd-install.log" 2>&1; then
        log "the locked build failed (see $CACHE/rumqttd-install.log); retrying without --locked"
        RUMQTTD_INSTALL="cargo install rumqttd (the --locked build fails with this rustc)"
        cargo install rumqttd --root "$CACHE/rumqttd" >>"$CACHE/rumqttd-install.log" 2>&1
    fi
    echo "$RUMQTTD_INSTALL" >"$RUMQTTD_HOW"
}

for broker in $BROKERS; do
    case $broker in
        mosquitto) install_mosquitto ;;
        rumqttd) install_rumqttd ;;
    esac
done
log "building fanfare and fanfare-loadtest (release)"
cargo build --release --workspace --quiet

# ---- brokers ------------------------------------------------------------------------------
# start_broker NAME: starts a fresh broker, sets BROKER_PID and WS_URL.
start_broker() {
    local name=$1 port
    case $name in
        fanfare | fanfare-2shards)
            local cores=1 shards=1
            [[ $name == fanfare-2shards ]] && cores=0,1 shards=2
            taskset -c "$cores" "$ROOT/target/release/fanfare" --shards "$shards" \
                --tcp 127.0.0.1:0 --ws 127.0.0.1:0 --admin off --log-level warn >"$TMP/broker.out" 2>"$TMP/broker.err" &
            BROKER_PID=$!
            for _ in $(seq 100); do grep -q '^ready' "$TMP/broker.out" 2>/dev/null && break; sleep 0.1; done
            port=$(sed -n 's/^listening ws 127.0.0.1:\([0-9]*\).*/\1/p' "$TMP/broker.out")
            WS_URL=ws://127.0.0.1:$port/mqtt
            ;;
        mosquitto)
            port=$(free_port)
            local tcp_port
            tcp_port=$(free_port)
            # Mosquitto 2.0.11 refuses to start with a WebSocket listener alone ("Unable to
            # start any listening sockets"), hence the TCP one.
            cat >"$TMP/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
listener $tcp_port 127.0.0.1
listener $port 127.0.0.1
protocol websockets
EOF
            taskset -c 1 mosquitto -c "$TMP/mosquitto.conf" >"$TMP/broker.out" 2>"$TMP/broker.err" &
            BROKER_PID=$!
            wait_port "$port" || return 1
            WS_URL=ws://127.0.0.1:$port/mqtt
            ;;
        rumqttd)
            port=$(free_port)
            local tcp_port
            tcp_port=$(free_port)
            # rumqttd's sample configuration, on loopback, with its connection cap raised to
            # what the load generator opens and no pause between accepts.
            cat >"$TMP/rumqttd.toml" <<EOF
id = 0

[router]
id = 0
max_connections = 20000
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$tcp_port"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true

[ws.1]
name = "ws-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [ws.1.connections]
    connection_timeout_ms = 60000
    max_client_id_len = 256
    throttle_delay_ms = 0
    max_payload_size = 20480
    max_inflight_count = 500
    max_inflight_size = 1024
EOF
            taskset -c 1 "$RUMQTTD" -q -c "$TMP/rumqttd.toml" >"$TMP/broker.out" 2>"$TMP/broker.err" &
            BROKER_PID=$!
            wait_port "$port" || return 1
            WS_URL=ws://127.0.0.1:$port/mqtt
            ;;
    esac
}

# busy_ticks: user + nice + system clock ticks of the whole machine (/proc/stat). Softirq is
# left out: the loopback receive work the broker's sends cause is accounted there.
busy_ticks() {
    awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat
}

# start_broker_retrying NAME: a port picked free may be taken again before the broker binds
# it; try three times.
start_broker_retrying() {
    for attempt in 1 2 3; do
        if start_broker "$1"; then return 0; fi
        log "$1: start attempt $attempt failed"
    done
    return 1
}

# Source addresses per scenario: a closed connection leaves its port in TIME_WAIT for 60 s,
# and binding a source address whose ports are mostly in TIME_WAIT makes every connect slow
# (the load generator then measures itself). Each scenario gets its own pair.
declare -A SOURCES=(
    [fixed]=127.0.0.2,127.0.0.3
    [closed]=127.0.0.4,127.0.0.5
    [idle]=127.0.0.6,127.0.0.7
    [connects]=127.0.0.8,127.0.0.9
)

# run NAME SCENARIO-NAME LOADTEST-ARGS...: one scenario against a fresh broker.
run() {
    local name=$1 scenario=$2
    shift 2
    local lt_cores=0 lt_flags=(--workers 1)
    if [[ $name == fanfare-2shards ]]; then
        lt_cores=0,1
        lt_flags=(--workers 2)
    fi
    if ! start_broker_retrying "$name"; then
        log "$name: $scenario: skipped, the broker did not start"
        return 0
    fi
    log "$name: $scenario"
    busy_ticks >"$RESULTS/$name-$scenario.busy"
    timeout 90 taskset -c "$lt_cores" "$LT" "$@" "${lt_flags[@]}" --url "$WS_URL" \
        --source "${SOURCES[$scenario]}" --broker-pid "$BROKER_PID" \
        >"$RESULTS/$name-$scenario.json" 2>"$RESULTS/$name-$scenario.log" || \
        log "$name: $scenario: the load generator failed (see $RESULTS/$name-$scenario.log)"
    busy_ticks >>"$RESULTS/$name-$scenario.busy"
    stop_broker
}

FIXED=(fanout --subscribers 10000 --rate 10 --payload 64 --duration 10 --warmup 2 --drain 3 --conn-rate 5000)
CLOSED=(fanout --subscribers 10000 --closed-loop 128 --payload 64 --duration 10 --warmup 2 --drain 3 --conn-rate 5000)
IDLE=(conn --subscribers 19000 --conn-rate 5000 --duration 5)
RATE=(conn --subscribers 19000 --conn-rate 30000 --connect-concurrency 2048 --duration 2)

started=$(date +%s)
for broker in $BROKERS; do
    rm -f "$RESULTS/$broker"-*.json
    run "$broker" fixed "${FIXED[@]}"
    run "$broker" closed "${CLOSED[@]}"
    if [[ $broker != fanfare-2shards ]]; then
        run "$broker" idle "${IDLE[@]}"
        run "$broker" connects "${RATE[@]}"
    fi
done
log "measured in $(($(date +%s) - started)) s"

# ---- side-by-side pages: each scenario's table and overlaid latency distributions ------------
# The plots also go into docs/img/, where docs/benchmarks.md shows them under the table.
mkdir -p "$ROOT/docs/img"
for scenario in fixed closed; do
    summaries=()
    for broker in $BROKERS; do
        f=$RESULTS/$broker-$scenario.json
        if [[ -s $f ]] && "$LT" compare "$f" 2>/dev/null; then summaries+=("$f"); fi
    done
    if ((${#summaries[@]} > 0)); then
        "$LT" compare "${summaries[@]}" --out "$CACHE/compare-$scenario.html" \
            --svg "$ROOT/docs/img/bench-compare-$scenario.svg" 2>/dev/null &&
            log "side by side: $CACHE/compare-$scenario.html, docs/img/bench-compare-$scenario.svg"
    fi
done

# ---- the table ----------------------------------------------------------------------------
versions() {
    echo "fanfare $(git -C "$ROOT" rev-parse --short HEAD)"
    if command -v mosquitto >/dev/null; then
        echo "Mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}')"
    fi
    if [[ -x $RUMQTTD ]]; then "$RUMQTTD" --version 2>/dev/null; fi
}

python3 - "$RESULTS" "$DOC" "$BROKERS" "$(versions | paste -sd ';')" "$RUMQTTD_INSTALL" <<'EOF'
import json, os, platform, re, subprocess, sys, datetime

results, doc, brokers, versions, rumqttd_install = sys.argv[1:6]

NOT_RUN = "not run"

def load(broker, scenario):
    path = os.path.join(results, f"{broker}-{scenario}.json")
    if not os.path.exists(path):
        return NOT_RUN
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def ms(us):
    return f"{us / 1000:.0f}" if us >= 10_000 else f"{us / 1000:.1f}"

def other_cpu(broker, scenario, d):
    """CPU seconds the machine spent in user and system time during the run outside the
    broker and the load generator: another workload that shared the cores."""
    try:
        with open(os.path.join(results, f"{broker}-{scenario}.busy")) as f:
            start, end = [int(line) for line in f.read().split()][:2]
        hz = os.sysconf("SC_CLK_TCK")
        own = (d["broker"].get("cpu_s") or 0) + d["loadgen"]["cpu_s"]
        return max(0.0, (end - start) / hz - own)
    except (OSError, ValueError, KeyError, TypeError):
        return None

def saturated(d):
    return " (load generator saturated)" if d.get("loadgen", {}).get("saturated") else ""

def fanout_cells(d):
    if d is NOT_RUN:
        return ["–"] * 4
    if d is None:
        return ["failed"] * 4
    lat = d["latency_us"]
    cpu = d["broker"].get("cpu_s_per_million")
    return [
        f"{d['msgs_per_s']:,.0f}" + saturated(d),
        f"{d['lost']:,} of {d['expected']:,}",
        f"{ms(lat['p50'])} / {ms(lat['p99'])}",
        "–" if cpu is None else f"{cpu:.2f}",
    ]

def idle_cell(d):
    if d is NOT_RUN:
        return "–"
    if d is None:
        return "failed"
    b, c = d["broker"], d["connections"]
    if not c["ok"] or b.get("rss_bytes_end") is None:
        return "–"
    return f"{(b['rss_bytes_end'] - b['rss_bytes_start']) / c['ok']:,.0f} B ({c['ok']:,} conns)"

def connects_cell(d):
    if d is NOT_RUN:
        return "–"
    if d is None:
        return "failed"
    c = d["connections"]
    failed = sum(c["failed"].values())
    cell = f"{c['connects_per_s']:,.0f}" + saturated(d)
    return cell + (f" ({failed:,} failed)" if failed else "")

labels = {
    "fanfare": "fanfare, 1 shard",
    "fanfare-2shards": "fanfare, 2 shards (cores 0–1, shared with the load generator)",
    "mosquitto": "Mosquitto",
    "rumqttd": "rumqttd",
}
rows = []
others = []
for broker in brokers.split():
    for scenario in ("fixed", "closed", "idle", "connects"):
        d = load(broker, scenario)
        if isinstance(d, dict):
            other = other_cpu(broker, scenario, d)
            if other is not None:
                others.append(f"{broker}/{scenario} {other:.1f}")
    rows.append(
        [labels.get(broker, broker)]
        + fanout_cells(load(broker, "fixed"))
        + fanout_cells(load(broker, "closed"))
        + [idle_cell(load(broker, "idle")), connects_cell(load(broker, "connects"))]
    )

cpu = "unknown"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
backlog = open("/proc/sys/net/core/netdev_max_backlog").read().strip()
head = [
    "broker",
    "10 msg/s: deliveries/s", "lost", "p50 / p99 ms", "CPU-s/M",
    "closed loop W=128: deliveries/s", "lost", "p50 / p99 ms", "CPU-s/M",
    "RSS per idle connection", "connects/s",
]
out = [
    "<!-- bench-compare:begin (written by scripts/bench-compare.sh) -->",
    f"Written by `scripts/bench-compare.sh` on {datetime.date.today().isoformat()}, commit `{commit}`"
    + (" (with uncommitted changes)" if dirty else "") + ".",
    f"Machine: {os.cpu_count()} vCPU {cpu}, Linux {platform.release()}, "
    f"`net.core.netdev_max_backlog` = {backlog}. Versions: {versions.replace(';', ', ')}; "
    f"rumqttd installed with `{rumqttd_install}`.",
    "",
    "MQTT 3.1.1 over WebSocket, QoS 0, 64-byte payload, 10 000 subscribers of one topic and one",
    "publisher; broker on core 1, `fanfare-loadtest` on core 0 (one worker, two source",
    "addresses of 127.0.0.2–9 per scenario); \"load generator saturated\" marks a run whose",
    "load-generator thread was busy all the time, i.e. that measured it too. CPU-s/M is the broker process's CPU seconds per million",
    "deliveries (the loopback receive work the kernel runs in softirq on the broker's core is",
    "not in it). Idle RSS: a fresh broker, 19 000 connections opened at 5 000/s, each",
    "subscribed to its own topic. Connects/s: 19 000 upgrade + CONNECT + SUBSCRIBE offered at",
    "30 000/s, at most 2 048 in progress. Each cell is one run on a fresh broker; raw JSON in",
    "`target/bench-compare/results/`.",
    "",
    "| " + " | ".join(head) + " |",
    "|" + "---|" * len(head),
]
out += ["| " + " | ".join(row) + " |" for row in rows]
pictures = [
    (scenario, title)
    for scenario, title in (("fixed", "10 msg/s"), ("closed", "closed loop W=128"))
    if os.path.exists(os.path.join(os.path.dirname(doc), "img", f"bench-compare-{scenario}.svg"))
]
if pictures:
    out += ["", "End-to-end latency by percentile, the runs of the table overlaid (`fanfare-loadtest compare --svg`):", ""]
    out += [f"![{title}: latency by percentile](img/bench-compare-{scenario}.svg)" for scenario, title in pictures]
out += [
    "",
    "CPU seconds spent outside the broker and the load generator during each run (user and",
    "system time; another workload sharing the machine shows here): " + ", ".join(others) + ".",
]
out.append("<!-- bench-compare:end -->")
block = "\n".join(out)

text = open(doc).read()
pattern = re.compile(r"<!-- bench-compare:begin.*?<!-- bench-compare:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: block, text)
else:
    text = text.rstrip("\n") + "\n\n## Side by side: fanfare, Mosquitto, rumqttd\n\n" + block + "\n"
open(doc, "w").write(text)
print(block)
EOF
