#!/usr/bin/env bash
# Chaos soak: thousands of clients that connect, subscribe, publish at QoS 0/1/2, drop without
# DISCONNECT, reset, send garbage, stall reading and never CONNECT, against a two-shard
# broker; then checks that RSS comes back, that no connection is left half-open past its
# deadline, and that every acknowledged QoS 1/2 message reached the oracle subscribers.
# Not part of CI. Needs Python 3.11+ (standard library only) and `ss`.
#
#   scripts/soak.sh                        # 3 minutes of chaos, a random seed (printed)
#   scripts/soak.sh --duration 60 --seed 42
#   SOAK_DURATION_S=600 SOAK_SEED=7 scripts/soak.sh
#   scripts/soak.sh --help                 # every knob (clients, rates, timeouts, ...)
#
# Uses target/release/fanfare (built if missing; BIN=path to use another binary). Logs and
# results go to target/soak/<time>/ (summary.json holds every figure). Exits non-zero when a
# check fails. Bounded: the whole run is killed past its duration plus ten minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/fanfare}
duration=${SOAK_DURATION_S:-180}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --duration) duration=${args[$((i + 1))]:-$duration} ;;
        --duration=*) duration=${args[$i]#--duration=} ;;
        -h|--help) exec python3 scripts/soak/chaos.py --help ;;
    esac
done
duration=${duration%.*}

if [[ ! -x "$BIN" ]]; then
    echo "soak: building $BIN" >&2
    nice -n 10 cargo build --release --bin fanfare
fi

artifacts=target/soak/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$artifacts"

echo "soak: $(git rev-parse --short HEAD 2>/dev/null || echo unknown) on $(nproc) cores," \
    "$(uname -r); artifacts in $artifacts" >&2

# `timeout` leads its own process group; the broker and the client processes die with the
# coordinator (PR_SET_PDEATHSIG), so ending that group on any exit ends everything started.
child=
cleanup() {
    trap - EXIT INT TERM
    if [[ -n "$child" ]]; then kill -KILL -- "-$child" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The machine is shared: the broker and the clients run at lower priority. The hard bound
# covers start-up, the warm-up, the drain and the settling after the chaos window.
limit_s=$((duration + 600))
timeout --kill-after=15 "$limit_s" \
    nice -n 10 python3 scripts/soak/chaos.py --bin "$BIN" --artifacts "$artifacts" "$@" &
child=$!
status=0
wait "$child" || status=$?
child=
if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "soak: FAIL, did not finish within $limit_s s" >&2
fi
exit "$status"
