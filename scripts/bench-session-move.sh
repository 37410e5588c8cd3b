#!/usr/bin/env bash
# What moving a persistent session between fanfare nodes costs its client: the time from
# CONNECT to CONNACK, and to the last of its queued QoS 1 messages, for sessions resumed
#   - on the node that holds them (no move: the baseline),
#   - on another node, which takes them from the holder over NATS,
#   - on another node after the holder was killed (kill -9), from the JetStream bucket and
#     the QoS stream read again since the image was written.
# Each session is resumed alone, one after the other (a client's view, not a storm).
#
#   scripts/bench-session-move.sh        # ~1 minute; needs nats-server (Debian package)
#   SESSIONS=500 QUEUED=50 scripts/bench-session-move.sh
#   STORM=1 scripts/bench-session-move.sh   # after the kill, every client reconnects at once;
#                                           # one refused (Server unavailable) tries again
#                                           # 0.2-1 s later, as clients with back-off do
#   FILTERS=2 STORM=1 scripts/bench-session-move.sh  # each session also subscribes to a
#                                           # second filter, which nothing is published to:
#                                           # a replay then reads every subject, not one
#
# Two nodes of one shard each on one nats-server with JetStream; every process shares the
# machine's cores. Results (JSON, logs) in target/bench-session-move/. Not part of the suite.
set -euo pipefail

OUT=$(cd "$(dirname "$0")/.." && pwd)/target/bench-session-move
SESSIONS=${SESSIONS:-200}
QUEUED=${QUEUED:-10}
STORM=${STORM:-0}
FILTERS=${FILTERS:-1}
source "$(dirname "$0")/bench-common.sh"

NATS_PORT=$(free_port)
rm -rf "$OUT/js"
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$OUT/js" >"$OUT/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
    sleep 0.1
done

for node in a b; do
    printf '[cluster]\nnode = "%s"\n' "$node" >"$OUT/$node.toml"
done
start_node a --shards 1 --config "$OUT/a.toml" --nats "nats://127.0.0.1:$NATS_PORT"
PID_A=$PID PORT_A=$PORT_TCP
start_node b --shards 1 --config "$OUT/b.toml" --nats "nats://127.0.0.1:$NATS_PORT"
PID_B=$PID PORT_B=$PORT_TCP
log "nodes a (:$PORT_A) and b (:$PORT_B) on nats-server :$NATS_PORT; $SESSIONS sessions, $QUEUED queued QoS 1 messages each"

python3 - "$PORT_A" "$PORT_B" "$PID_B" "$SESSIONS" "$QUEUED" "$STORM" "$FILTERS" "$OUT/results.json" <<'PY'
import json, os, random, selectors, signal, statistics, sys, time

sys.path.insert(0, "tests/python")
import rawmqtt as mqtt

port_a, port_b, pid_b, sessions, queued, storm, filters = map(int, sys.argv[1:8])
results_path = sys.argv[8]
# How long a storm's last session may take before the rest count as missing.
STORM_TIMEOUT_S = 60.0
HOST = "127.0.0.1"
CONNACK, PUBLISH, PUBACK, SUBACK = 2, 3, 4, 9
# A node writes a changed session to the bucket within session_sync_interval_ms (100 ms).
SYNC_WAIT_S = 1.0


class Client:
    def __init__(self, port: int):
        self.conn = mqtt.TcpConn(HOST, port, timeout=10)
        self.buf = bytearray()

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def read(self, timeout: float = 10.0) -> mqtt.Packet:
        deadline = time.monotonic() + timeout
        while True:
            split = mqtt.split_packet(self.buf)
            if split:
                packet, used = split
                del self.buf[:used]
                return packet
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no packet in time")
            data = self.conn.recv_some(left)
            if not data:
                raise mqtt.Closed()
            self.buf += data

    def read_type(self, ptype: int) -> mqtt.Packet:
        while True:
            packet = self.read()
            if packet.ptype == ptype:
                return packet

    def close(self) -> None:
        self.send(mqtt.disconnect())
        self.conn.close()


def cid(n: int) -> str:
    return f"mover-{n}"


def topic(n: int) -> str:
    return f"move/{n}"


def subscribe_all(port: int) -> None:
    for n in range(sessions):
        c = Client(port)
        c.send(mqtt.connect(cid(n), clean=False))
        c.read_type(CONNACK)
        extra = [(f"quiet/{n}/{f}", 1) for f in range(1, filters)]
        c.send(mqtt.subscribe(1, (topic(n), 1), *extra))
        c.read_type(SUBACK)
        c.close()


def queue_all(port: int, round_: str) -> None:
    """QUEUED QoS 1 messages to every session's topic, each acknowledged by the broker."""
    pub = Client(port)
    pub.send(mqtt.connect(f"queuer-{round_}", clean=True))
    pub.read_type(CONNACK)
    packet_id = 0
    for n in range(sessions):
        for q in range(queued):
            packet_id = packet_id % 65535 + 1
            pub.send(mqtt.publish(topic(n), b"%s %d" % (round_.encode(), q), qos=1,
                                  packet_id=packet_id))
        for _ in range(queued):
            pub.read_type(PUBACK)
    pub.close()


def resume_all(port: int, round_: str) -> dict:
    connack_ms, queued_ms, absent, missing = [], [], 0, 0
    for n in range(sessions):
        t0 = time.perf_counter()
        c = Client(port)
        c.send(mqtt.connect(cid(n), clean=False))
        ack = c.read_type(CONNACK)
        t1 = time.perf_counter()
        if not ack.body[0] & 1:
            absent += 1
        got = 0
        try:
            while got < queued:
                p = c.read_type(PUBLISH)
                if p.payload.startswith(round_.encode()):
                    got += 1
                c.send(mqtt.ack(PUBACK, p.packet_id))
        except TimeoutError:
            missing += queued - got
        t2 = time.perf_counter()
        c.close()
        connack_ms.append((t1 - t0) * 1000)
        queued_ms.append((t2 - t0) * 1000)
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1]
    return {
        "sessions": sessions, "queued_each": queued, "filters": filters,
        "connack_ms": {"p50": q(connack_ms, 50), "p99": q(connack_ms, 99), "max": max(connack_ms)},
        "all_queued_ms": {"p50": q(queued_ms, 50), "p99": q(queued_ms, 99), "max": max(queued_ms)},
        "session_absent": absent, "messages_missing": missing,
    }


def resume_storm(port: int, round_: str) -> dict:
    """Every session's CONNECT sent at once; each one's times counted from the first."""
    sel = selectors.DefaultSelector()
    t0 = time.perf_counter()
    state = {}

    def dial(n: int) -> None:
        c = Client(port)
        c.send(mqtt.connect(cid(n), clean=False))
        c.conn.sock.setblocking(False)
        sel.register(c.conn.sock, selectors.EVENT_READ, n)
        state[n]["client"] = c

    for n in range(sessions):
        state[n] = {"client": None, "connack": None, "present": False, "got": 0, "done": None}
        dial(n)
    left = set(state)
    retries = []  # (when, n)
    refused = 0
    deadline = t0 + STORM_TIMEOUT_S
    while left and time.perf_counter() < deadline:
        now = time.perf_counter()
        for when, n in [r for r in retries if r[0] <= now]:
            retries.remove((when, n))
            dial(n)
        for key, _ in sel.select(timeout=0.05):
            st = state[key.data]
            c = st["client"]
            try:
                data = c.conn.sock.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(c.conn.sock)
                left.discard(key.data)
                continue
            c.buf += data
            while (split := mqtt.split_packet(c.buf)):
                packet, used = split
                del c.buf[:used]
                if packet.ptype == CONNACK and packet.body[1] != 0:
                    refused += 1
                    sel.unregister(c.conn.sock)
                    c.conn.close()
                    retries.append((time.perf_counter() + random.uniform(0.2, 1.0), key.data))
                    break
                if packet.ptype == CONNACK:
                    st["connack"] = time.perf_counter() - t0
                    st["present"] = bool(packet.body[0] & 1)
                elif packet.ptype == PUBLISH:
                    if packet.payload.startswith(round_.encode()):
                        st["got"] += 1
                    c.conn.sock.sendall(mqtt.ack(PUBACK, packet.packet_id))
            if st["client"] is c and st["connack"] is not None and st["got"] >= queued \
                    and c.conn.sock.fileno() != -1:
                st["done"] = time.perf_counter() - t0
                sel.unregister(c.conn.sock)
                left.discard(key.data)
    for st in state.values():
        st["client"].conn.close()
    print(f"storm: {refused} CONNECTs refused (server unavailable) and tried again", flush=True)
    connack_ms = [st["connack"] * 1000 for st in state.values() if st["connack"] is not None]
    done_ms = [st["done"] * 1000 for st in state.values() if st["done"] is not None]
    q = lambda xs, p: statistics.quantiles(xs, n=100, method="inclusive")[p - 1] if len(xs) > 1 else (xs or [0])[0]
    return {
        "sessions": sessions, "queued_each": queued, "filters": filters, "storm": True, "refused": refused,
        "connack_ms": {"p50": q(connack_ms, 50), "p99": q(connack_ms, 99), "max": max(connack_ms, default=0)},
        "all_queued_ms": {"p50": q(done_ms, 50), "p99": q(done_ms, 99), "max": max(done_ms, default=0)},
        "session_absent": sum(1 for st in state.values() if not st["present"]),
        "messages_missing": sum(queued - min(st["got"], queued) for st in state.values()),
    }


results = {}
subscribe_all(port_a)

def run(name: str, port: int, at_once: bool = False) -> None:
    r = results[name] = (resume_storm if at_once else resume_all)(port, name)
    print(f"{name}: CONNACK p50 {r['connack_ms']['p50']:.2f} ms, p99 {r['connack_ms']['p99']:.2f} ms; "
          f"all {queued} queued p50 {r['all_queued_ms']['p50']:.2f} ms, "
          f"p99 {r['all_queued_ms']['p99']:.2f} ms; {r['session_absent']} without their session, "
          f"{r['messages_missing']} messages missing", flush=True)

queue_all(port_a, "held")
time.sleep(SYNC_WAIT_S)
run("held", port_a)                # on node a, which holds them: no move
queue_all(port_a, "moved")
time.sleep(SYNC_WAIT_S)
run("moved", port_b)               # node b takes each from node a over NATS
queue_all(port_b, "orphaned")
time.sleep(SYNC_WAIT_S)
os.kill(pid_b, signal.SIGKILL)
run("orphaned", port_a, storm == 1)  # node b is dead: node a reads the bucket and the stream
json.dump(results, open(results_path, "w"), indent=1)
PY
wait "$PID_B" 2>/dev/null || true
