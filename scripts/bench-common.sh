# Sourced by the bench-*.sh scripts that start fanfare nodes of their own: the release build,
# the processes to stop on exit, a log line, a free port, and a node on loopback port 0.
# The caller sets OUT (its results folder) before sourcing.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
mkdir -p "$OUT"
cargo build --release -q -p fanfare -p fanfare-loadtest --bin fanfare --bin fanfare-loadtest
LT=$ROOT/target/release/fanfare-loadtest
FANFARE=$ROOT/target/release/fanfare
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_node NAME ARGS...: a fanfare with WebSocket and TCP listeners on loopback port 0 and
# no operations listener; sets PID, PORT_WS and PORT_TCP once it printed `ready`.
start_node() {
    local name=$1
    shift
    # A previous run's output must not pass for this one's before the shell truncates it.
    rm -f "$OUT/$name.out" "$OUT/$name.err"
    "$FANFARE" --ws 127.0.0.1:0 --tcp 127.0.0.1:0 --admin off "$@" \
        >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        grep -q '^ready' "$OUT/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    PORT_WS=$(listening_port ws "$OUT/$name.out")
    PORT_TCP=$(listening_port tcp "$OUT/$name.out")
    [[ -n $PORT_WS && -n $PORT_TCP ]] || { log "$name did not start:"; cat "$OUT/$name.err" >&2; exit 1; }
}

# listening_port KIND FILE: the port of the first `listening KIND host:port[/path]` line.
listening_port() {
    awk -v kind="$1" '$1 == "listening" && $2 == kind { split($3, a, ":"); sub("/.*", "", a[2]); print a[2]; exit }' "$2"
}
