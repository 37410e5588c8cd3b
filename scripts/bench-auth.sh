#!/usr/bin/env bash
# What authentication costs at CONNECT: connections (each CONNECT and SUBSCRIBE over TCP) per
# second of broker CPU, and per second of wall time, one broker core:
#   none       anonymous
#   password   a password file entry (argon2id), every check remembered after the first
#   argon2     the same with the cache off, one CONNECT at a time: each runs argon2 on a
#              verifier thread
#   hs256      a JWT signed with HMAC-SHA256 in the password
#   es256      a JWT signed with ECDSA P-256
# then fan-out with and without an ACL file (10 000 subscribers, 10 msg/s, 64 B, every client
# with a password, so that only the ACL differs).
#
#   cargo build --release --workspace && scripts/bench-auth.sh
#
# Broker `--shards 1` on BROKER_CPU with two verifier threads, generator on LOADGEN_CPUS. Tokens
# are made here with python3's standard library and openssl. Summaries go to OUT (default
# target/bench-auth/<time>/), one line per run to OUT/log.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-2}
CONNECTS=${CONNECTS:-8000}
SLOW_CONNECTS=${SLOW_CONNECTS:-100}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
BROKER_CPU=${BROKER_CPU:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1}
OUT=${OUT:-target/bench-auth/$(date +%Y%m%d-%H%M%S)}
SOURCES=$(seq -s, -f "127.0.0.%g" 2 17)
mkdir -p "$OUT"
BROKER_PID=
trap '[[ -n "$BROKER_PID" ]] && kill -KILL "$BROKER_PID" 2>/dev/null' EXIT

"$BIN/fanfare" passwd -c -b "$OUT/passwd" backend bench-password >/dev/null
printf 'a secret for the benchmark tokens, 32+ bytes' >"$OUT/jwt.secret"
openssl ecparam -name prime256v1 -genkey -noout -out "$OUT/es256.key" 2>/dev/null
openssl ec -in "$OUT/es256.key" -pubout -out "$OUT/es256.pem" 2>/dev/null
printf 'topic read bench/#\ntopic read fanfare-lt/#\nuser backend\ntopic readwrite #\n' >"$OUT/acl"

# A JWT for `sub` = backend, valid for a day: HS256 with the secret file, ES256 with the key.
token() {
    python3 - "$1" "$OUT" <<'EOF'
import base64, hashlib, hmac, json, subprocess, sys, time
alg, out = sys.argv[1], sys.argv[2]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": alg.upper(), "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": "backend", "exp": int(time.time()) + 86400}).encode())
signing = f"{head}.{body}".encode()
if alg == "hs256":
    sig = hmac.new(open(f"{out}/jwt.secret", "rb").read(), signing, hashlib.sha256).digest()
else:
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", f"{out}/es256.key"],
                         input=signing, capture_output=True, check=True).stdout
    # DER SEQUENCE { INTEGER r, INTEGER s } to the 64-byte r || s of JWS.
    i, ints = 2 if der[1] < 0x80 else 3, []
    for _ in range(2):
        n = der[i + 1]
        ints.append(int.from_bytes(der[i + 2:i + 2 + n], "big").to_bytes(32, "big"))
        i += 2 + n
    sig = ints[0] + ints[1]
print(f"{head}.{body}.{b64(sig)}")
EOF
}
HS256=$(token hs256)
ES256=$(token es256)

log() { echo "$*" | tee -a "$OUT/log"; }

start_broker() {
    local config="$OUT/$1.toml"
    printf 'tcp = "127.0.0.1:0"\nws = "127.0.0.1:0"\n[auth]\nallow_anonymous = true\n%s' \
        "$2" >"$config"
    taskset -c "$BROKER_CPU" "$BIN/fanfare" --shards 1 --config "$config" \
        >"$OUT/broker.out" 2>"$OUT/broker.$1.log" &
    BROKER_PID=$!
    for _ in $(seq 100); do grep -q '^ready' "$OUT/broker.out" && break; sleep 0.1; done
    TCP=$(sed -n 's/^listening tcp 127.0.0.1:\([0-9]*\).*/\1/p' "$OUT/broker.out")
    WS=$(sed -n 's/^listening ws 127.0.0.1:\([0-9]*\).*/\1/p' "$OUT/broker.out")
}

stop_broker() {
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null
    BROKER_PID=
}

loadtest() {
    taskset -c "$LOADGEN_CPUS" timeout 300 "$BIN/fanfare-loadtest" "$@" --workers 1 \
        --source "$SOURCES" --broker-pid "$BROKER_PID"
}

connect_run() {
    local name=$1 settings=$2 count=$3
    shift 3
    start_broker "$name" "$settings"
    loadtest conn --url "tcp://127.0.0.1:$TCP" --subscribers "$count" --conn-rate 40000 \
        --connect-concurrency 1024 --duration 1 "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
    log "$name $(jq -c '{ok: .connections.ok, failed: .connections.failed, connects_per_s: .connections.connects_per_s,
        broker_cpu_s: .broker.cpu_s, per_broker_cpu_s: (.connections.ok / .broker.cpu_s | round)}' "$OUT/$name.json")"
    stop_broker
}

password_file="password_file = \"$OUT/passwd\""
for round in $(seq "$ROUNDS"); do
    connect_run "none.$round" "" "$CONNECTS"
    connect_run "password.$round" "$password_file" "$CONNECTS" \
        --username backend --password bench-password
    # One at a time, or the checks of the same credentials would share one verifier run.
    connect_run "argon2.$round" "$password_file
verified_cache_entries_max = 0" "$SLOW_CONNECTS" --username backend --password bench-password \
        --connect-concurrency 1
    connect_run "hs256.$round" "jwt_secret_file = \"$OUT/jwt.secret\"" "$CONNECTS" \
        --username jwt --password "$HS256"
    connect_run "es256.$round" "jwt_public_key_files = [\"$OUT/es256.pem\"]" "$CONNECTS" \
        --username jwt --password "$ES256"
    for acl in off on; do
        name="fanout.acl-$acl.$round"
        settings=$password_file
        [ "$acl" = on ] && settings="$password_file
acl_file = \"$OUT/acl\""
        start_broker "$name" "$settings"
        loadtest fanout --url "ws://127.0.0.1:$WS/mqtt" --subscribers "$SUBSCRIBERS" \
            --payload 64 --rate 10 --duration 10 --warmup 2 --drain 3 --conn-rate 10000 \
            --topic-prefix bench --username backend --password bench-password \
            >"$OUT/$name.json" 2>"$OUT/$name.err"
        log "$name $(jq -c '{delivered, lost, cpu_s_per_million: .broker.cpu_s_per_million}' "$OUT/$name.json")"
        stop_broker
    done
done
