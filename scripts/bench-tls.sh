#!/usr/bin/env bash
# TLS against plain, one broker core: the same fan-out scenarios over ws and wss, and
# connections (with their handshakes) per second of broker CPU over tcp, mqtts and wss.
#
#   cargo build --release --workspace && scripts/bench-tls.sh
#   BROKER_CPU=1 LOADGEN_CPUS=2-5 WORKERS=4 scripts/bench-tls.sh    # on a larger machine
#   PARTS=connect CONCURRENCY=8 scripts/bench-tls.sh   # few handshakes at once: most resume
#
# Per round, each with a fresh broker (`--shards 1`, pinned to BROKER_CPU):
#   fan-out: SUBSCRIBERS subscribers on one topic, 64-byte payloads, (a) 10 messages/s,
#            (b) closed loop with 128 messages outstanding; over ws, then over wss;
#   connect: CONNECTS connections at once (at most CONCURRENCY handshakes in flight), each
#            CONNECT and SUBSCRIBE, over tcp, mqtts (full handshakes), mqtts with --tls-resume
#            (a client resumes when a ticket of an earlier connection has reached it), and wss.
# The certificate is ECDSA P-256, from a throwaway CA made with openssl. Every summary is kept
# in OUT (default target/bench-tls/<time>/), one line per run goes to OUT/log.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-2}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
CONNECTS=${CONNECTS:-8000}
DURATION=${DURATION:-10}
BROKER_CPU=${BROKER_CPU:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1}
WORKERS=${WORKERS:-1}
PARTS=${PARTS:-fanout connect}
CONCURRENCY=${CONCURRENCY:-1024}
OUT=${OUT:-target/bench-tls/$(date +%Y%m%d-%H%M%S)}
SOURCES=$(seq -s, -f "127.0.0.%g" 2 17)
mkdir -p "$OUT"
BROKER_PID=
trap '[[ -n "$BROKER_PID" ]] && kill -KILL "$BROKER_PID" 2>/dev/null' EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=bench CA" -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$OUT/server.key" -out "$OUT/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$OUT/ext.cnf"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" \
    -CAcreateserial -days 1 -extfile "$OUT/ext.cnf" -out "$OUT/server.pem" 2>/dev/null

log() { echo "$*" | tee -a "$OUT/log"; }

start_broker() {
    taskset -c "$BROKER_CPU" "$BIN/fanfare" --shards 1 --tcp 127.0.0.1:0 --ws 127.0.0.1:0 --admin off \
        --mqtts 127.0.0.1:0 --wss 127.0.0.1:0 --tls-cert "$OUT/server.pem" \
        --tls-key "$OUT/server.key" >"$OUT/broker.out" 2>"$OUT/broker.$1.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do grep -q '^ready' "$OUT/broker.out" && break; sleep 0.1; done
}

stop_broker() {
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
}

# The URL of a listener of the running broker, and the flags its TLS needs.
target() {
    local port
    port=$(sed -n "s/^listening $1 127.0.0.1:\([0-9]*\).*/\1/p" "$OUT/broker.out")
    case $1 in
    tcp) echo "--url tcp://127.0.0.1:$port" ;;
    ws) echo "--url ws://127.0.0.1:$port/mqtt" ;;
    mqtts) echo "--url mqtts://127.0.0.1:$port --ca $OUT/ca.pem" ;;
    wss) echo "--url wss://127.0.0.1:$port/mqtt --ca $OUT/ca.pem" ;;
    esac
}

loadtest() {
    taskset -c "$LOADGEN_CPUS" timeout 300 "$BIN/fanfare-loadtest" "$@" --workers "$WORKERS" \
        --source "$SOURCES" --broker-pid "$BROKER_PID"
}

for round in $(seq "$ROUNDS"); do
    [[ " $PARTS " == *" fanout "* ]] && for scheme in ws wss; do
        for mode in rate closed; do
            name="fanout.$mode.$scheme.$round"
            start_broker "$name"
            load=(--rate 10)
            [ "$mode" = closed ] && load=(--closed-loop 128)
            # shellcheck disable=SC2046 # target's words are flags
            loadtest fanout $(target "$scheme") --subscribers "$SUBSCRIBERS" --payload 64 \
                --duration "$DURATION" --warmup 2 --drain 3 --conn-rate 10000 "${load[@]}" \
                >"$OUT/$name.json" 2>"$OUT/$name.err"
            log "$name $(jq -c '{delivered, lost, msgs_per_s, cpu_s_per_million: .broker.cpu_s_per_million,
                socket_p50_us: .socket_latency_us.p50, socket_p99_us: .socket_latency_us.p99}' "$OUT/$name.json")"
            stop_broker
        done
    done
    [[ " $PARTS " == *" connect "* ]] && for kind in tcp mqtts mqtts-resume wss; do
        name="connect.$kind.$round"
        start_broker "$name"
        resume=()
        [ "$kind" = mqtts-resume ] && resume=(--tls-resume)
        # shellcheck disable=SC2046
        loadtest conn $(target "${kind%-resume}") "${resume[@]}" --subscribers "$CONNECTS" \
            --conn-rate 40000 --connect-concurrency "$CONCURRENCY" --duration 1 \
            >"$OUT/$name.json" 2>"$OUT/$name.err"
        log "$name $(jq -c '{ok: .connections.ok, failed: .connections.failed, resumed: .connections.tls.resumed,
            broker_cpu_s: .broker.cpu_s, per_broker_cpu_s: (.connections.ok / .broker.cpu_s | round)}' "$OUT/$name.json")"
        stop_broker
    done
done
