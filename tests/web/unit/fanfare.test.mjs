// Unit tests of web/fanfare.js against a fake WebSocket: the bytes it writes are compared
// with packets written out by hand from the MQTT 3.1.1 and 5.0 specifications.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const libPath = fileURLToPath(new URL("../../../web/fanfare.js", import.meta.url));
const Fanfare = require(libPath);

/** A WebSocket that records what is sent and lets the test play the server. */
class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.sent = [];
    this.readyState = 0;
    FakeSocket.all.push(this);
    queueMicrotask(() => {
      this.readyState = 1;
      this.onopen?.();
    });
  }
  send(bytes) {
    this.sent.push([...bytes]);
  }
  close(code) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closeCode = code;
    queueMicrotask(() => this.onclose?.({ code }));
  }
  /** The server sends these bytes (one WebSocket message). */
  deliver(bytes) {
    this.onmessage({ data: Uint8Array.from(bytes).buffer });
  }
  /** Sent packets of this type, as byte arrays. */
  ofType(type) {
    return this.sent.filter((p) => p[0] >> 4 === type);
  }
}

class MemoryStorage {
  constructor() { this.map = new Map(); }
  getItem(k) { return this.map.has(k) ? this.map.get(k) : null; }
  setItem(k, v) { this.map.set(k, String(v)); }
  removeItem(k) { this.map.delete(k); }
}

const tick = () => new Promise((r) => setTimeout(r, 0));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const str = (s) => [0, s.length, ...Buffer.from(s)];
const CONNACK_OK = [0x20, 2, 0, 0];
const CONNACK_OK_V5 = [0x20, 3, 0, 0, 0];

/** A client whose socket is open; `connack` is delivered unless null. */
async function open(options = {}, connack = CONNACK_OK) {
  FakeSocket.all = [];
  const client = Fanfare.connect("ws://test/mqtt", {
    clientId: "c",
    WebSocket: FakeSocket,
    reconnectMinMs: 5,
    reconnectMaxMs: 20,
    ...options,
  });
  await tick();
  const ws = FakeSocket.all.at(-1);
  if (connack) ws.deliver(connack);
  return { client, ws };
}

test("CONNECT 3.1.1: minimal, golden bytes", async () => {
  const { client, ws } = await open({}, null);
  assert.equal(ws.protocol, "mqtt");
  assert.equal(ws.binaryType, "arraybuffer");
  assert.deepEqual(ws.sent[0], [0x10, 13, ...str("MQTT"), 4, 0x02, 0, 30, ...str("c")]);
  client.end();
});

test("CONNECT 3.1.1: will, user name, password, no clean session", async () => {
  const { client, ws } = await open({
    clean: false,
    keepalive: 60,
    username: "u",
    password: "pw",
    will: { topic: "w", payload: "bye", qos: 1, retain: true },
  }, null);
  const body = [...str("MQTT"), 4, 0x80 | 0x40 | 0x20 | 0x08 | 0x04, 0, 60,
    ...str("c"), ...str("w"), ...str("bye"), ...str("u"), ...str("pw")];
  assert.deepEqual(ws.sent[0], [0x10, body.length, ...body]);
  client.end();
});

test("CONNECT 3.1.1 refuses a password without a user name [MQTT-3.1.2-22]", () => {
  assert.throws(() => Fanfare.connect("ws://x", { password: "p", WebSocket: FakeSocket }), TypeError);
});

test("CONNECT 5.0: properties length and values, will properties", async () => {
  const { client, ws } = await open({
    protocolVersion: 5,
    properties: { sessionExpiryInterval: 60, receiveMaximum: 10, userProperties: { a: "b" } },
    will: { topic: "w", payload: "x", properties: { willDelayInterval: 5 } },
  }, null);
  const props = [0x11, 0, 0, 0, 60, 0x21, 0, 10, 0x26, ...str("a"), ...str("b")];
  const willProps = [0x18, 0, 0, 0, 5];
  const body = [...str("MQTT"), 5, 0x02 | 0x04, 0, 30, props.length, ...props, ...str("c"),
    willProps.length, ...willProps, ...str("w"), ...str("x")];
  assert.deepEqual(ws.sent[0], [0x10, body.length, ...body]);
  client.end();
});

test("CONNECT 5.0: empty property list is one zero byte", async () => {
  const { client, ws } = await open({ protocolVersion: 5 }, null);
  assert.deepEqual(ws.sent[0], [0x10, 14, ...str("MQTT"), 5, 0x02, 0, 30, 0, ...str("c")]);
  assert.throws(() => Fanfare.connect("ws://x", {
    protocolVersion: 5, properties: { nope: 1 }, WebSocket: FakeSocket,
  }), TypeError);
  client.end();
});

test("CONNACK 5.0: properties are read; a refusal is an error and the socket closes", async () => {
  const { client, ws } = await open({ protocolVersion: 5 }, null);
  const events = [];
  client.on("connect", (c) => events.push(c));
  // Session present, success, assigned client id "z", receive maximum 1.
  const props = [0x12, ...str("z"), 0x21, 0, 1];
  ws.deliver([0x20, 3 + props.length, 1, 0, props.length, ...props]);
  assert.equal(events.length, 1);
  assert.equal(events[0].sessionPresent, true);
  assert.equal(client.clientId, "z");
  assert.equal(client.sendWindow, 1);
  // Receive maximum 1: a second QoS 1 publish waits for the first one's PUBACK.
  const first = client.publish("t", "1", { qos: 1 });
  client.publish("t", "2", { qos: 1 });
  assert.equal(ws.ofType(3).length, 1);
  ws.deliver([0x40, 2, 0, 1]);
  assert.deepEqual(await first, { reasonCode: 0, properties: undefined });
  assert.equal(ws.ofType(3).length, 2);
  client.end();

  const refused = await open({ protocolVersion: 5, reconnect: false }, null);
  const errors = [];
  refused.client.on("error", (e) => errors.push(e));
  refused.ws.deliver([0x20, 3, 0, 0x86, 0]);
  assert.equal(errors[0].code, 0x86);
  assert.equal(refused.ws.readyState, 3);
  assert.equal(refused.client.connected, false);
});

test("subscribe, SUBACK, per-subscription callbacks with wildcards, PUBACK", async () => {
  const { client, ws } = await open();
  const seen = [];
  const granted = client.subscribe("scores/+", { qos: 1 }, (t, p, m) => seen.push(["plus", t, Fanfare.text(p), m.qos, m.retain]));
  client.subscribe("scores/#", (t) => seen.push(["hash", t]));
  const [sub1, sub2] = ws.ofType(8);
  assert.deepEqual(sub1, [0x82, 2 + 10 + 1, 0, 1, ...str("scores/+"), 1]);
  assert.deepEqual(sub2, [0x82, 2 + 10 + 1, 0, 2, ...str("scores/#"), 0]);
  ws.deliver([0x90, 3, 0, 1, 1]);
  assert.equal(await granted, 1);
  // QoS 1 retained PUBLISH of "2-1" on scores/m1, packet id 7.
  ws.deliver([0x33, 2 + 9 + 2 + 3, ...str("scores/m1"), 0, 7, ...Buffer.from("2-1")]);
  assert.deepEqual(seen, [["plus", "scores/m1", "2-1", 1, true], ["hash", "scores/m1"]]);
  assert.deepEqual(ws.ofType(4).at(-1), [0x40, 2, 0, 7]);
  // scores/m1/x matches only the multi-level filter.
  ws.deliver([0x30, 2 + 11, ...str("scores/m1/x")]);
  assert.deepEqual(seen.at(-1), ["hash", "scores/m1/x"]);
  assert.equal(seen.length, 3);
  client.end();
});

test("SUBACK failure rejects and forgets the subscription", async () => {
  const { client, ws } = await open();
  const p = client.subscribe("a/#", { qos: 2 });
  ws.deliver([0x90, 3, 0, 1, 0x80]);
  await assert.rejects(p, (e) => e.code === 0x80);
  assert.equal(client.subscriptions.size, 0);
  client.end();
});

test("unsubscribe removes one callback, then the subscription (UNSUBSCRIBE, UNSUBACK)", async () => {
  const { client, ws } = await open();
  const a = () => {}, b = () => {};
  client.subscribe("x", a);
  client.subscribe("x", b);
  await client.unsubscribe("x", a);
  assert.equal(ws.ofType(10).length, 0);
  const done = client.unsubscribe("x", b);
  const [unsub] = ws.ofType(10);
  assert.deepEqual(unsub, [0xa2, 5, 0, 3, ...str("x")]);
  ws.deliver([0xb0, 2, 0, 3]);
  await done;
  assert.equal(client.subscriptions.size, 0);
  client.end();
});

test("publish QoS 0, 1, 2: bytes and promises", async () => {
  const { client, ws } = await open();
  await client.publish("t", "a");
  assert.deepEqual(ws.ofType(3)[0], [0x30, 4, ...str("t"), 97]);
  const q1 = client.publish("t", new Uint8Array([1, 2]), { qos: 1, retain: true });
  assert.deepEqual(ws.ofType(3)[1], [0x33, 7, ...str("t"), 0, 1, 1, 2]);
  ws.deliver([0x40, 2, 0, 1]);
  await q1;
  let done = false;
  const q2 = client.publish("t", "", { qos: 2 }).then(() => (done = true));
  assert.deepEqual(ws.ofType(3)[2], [0x34, 5, ...str("t"), 0, 2]);
  ws.deliver([0x50, 2, 0, 2]);
  assert.deepEqual(ws.ofType(6)[0], [0x62, 2, 0, 2]);
  await tick();
  assert.equal(done, false);
  ws.deliver([0x70, 2, 0, 2]);
  await q2;
  assert.equal(client.outgoing.size, 0);
  await assert.rejects(client.publish("a/+", "x"), TypeError);
  client.end();
});

test("MQTT 5: PUBLISH carries properties; a PUBACK reason code from 0x80 rejects", async () => {
  const { client, ws } = await open({ protocolVersion: 5 }, CONNACK_OK_V5);
  const p = client.publish("t", "x", { qos: 1, properties: { contentType: "a", messageExpiryInterval: 9 } });
  const props = [0x03, ...str("a"), 0x02, 0, 0, 0, 9];
  assert.deepEqual(ws.ofType(3)[0], [0x32, 3 + 2 + 1 + props.length + 1, ...str("t"), 0, 1, props.length, ...props, 120]);
  ws.deliver([0x40, 4, 0, 1, 0x87, 0]);
  await assert.rejects(p, (e) => e.code === 0x87);
  // PUBACK of packet id only: success (MQTT 5.0 §3.4.2.1).
  const ok = client.publish("t", "x", { qos: 1 });
  ws.deliver([0x40, 2, 0, 2]);
  await ok;
  // PUBREC with a failure code ends the QoS 2 flow without PUBREL.
  const q2 = client.publish("t", "x", { qos: 2 });
  ws.deliver([0x50, 3, 0, 3, 0x97]);
  await assert.rejects(q2, (e) => e.code === 0x97);
  assert.equal(ws.ofType(6).length, 0);
  client.end();
});

test("MQTT 5: SUBSCRIBE options, SUBACK and UNSUBACK with properties", async () => {
  const { client, ws } = await open({ protocolVersion: 5 }, CONNACK_OK_V5);
  const granted = client.subscribe("a", { qos: 2, noLocal: true, retainHandling: 1 });
  assert.deepEqual(ws.ofType(8)[0], [0x82, 7, 0, 1, 0, ...str("a"), 2 | 4 | 16]);
  const reason = [0x1f, ...str("ok")];
  ws.deliver([0x90, 2 + 1 + reason.length + 1, 0, 1, reason.length, ...reason, 1]);
  assert.equal(await granted, 1);
  const gone = client.unsubscribe("a");
  assert.deepEqual(ws.ofType(10)[0], [0xa2, 6, 0, 2, 0, ...str("a")]);
  ws.deliver([0xb0, 4, 0, 2, 0, 0x11]);
  // 0x11 "no subscription existed" is not a failure.
  assert.equal(await gone, 0x11);
  client.end();
});

test("MQTT 5: incoming PUBLISH with properties and a topic alias", async () => {
  const { client, ws } = await open({ protocolVersion: 5 }, CONNACK_OK_V5);
  const seen = [];
  client.subscribe("s/#", (t, p, m) => seen.push([t, Fanfare.text(p), m.properties]));
  const props = [0x23, 0, 1, 0x01, 1];
  ws.deliver([0x30, 2 + 3 + 1 + props.length + 2, ...str("s/a"), props.length, ...props, 104, 105]);
  ws.deliver([0x30, 2 + 1 + 3 + 2, 0, 0, 3, 0x23, 0, 1, 111, 107]);
  assert.deepEqual(seen, [
    ["s/a", "hi", { topicAlias: 1, payloadFormatIndicator: 1 }],
    ["s/a", "ok", { topicAlias: 1 }],
  ]);
  client.end();
});

test("MQTT 5: server DISCONNECT is reported and closes", async () => {
  const { client, ws } = await open({ protocolVersion: 5, reconnect: false }, CONNACK_OK_V5);
  const events = [];
  client.on("disconnect", (d) => events.push(d.code));
  ws.deliver([0xe0, 2, 0x8b, 0]);
  assert.deepEqual(events, [0x8b]);
  assert.equal(ws.readyState, 3);
});

test("incoming QoS 2 is delivered once until PUBREL", async () => {
  const { client, ws } = await open();
  let count = 0;
  client.subscribe("q", () => count++);
  const publish = [0x34, 2 + 1 + 2 + 1, ...str("q"), 0, 9, 120];
  ws.deliver(publish);
  ws.deliver([0x3c, ...publish.slice(1)]);
  assert.equal(count, 1);
  assert.deepEqual(ws.ofType(5), [[0x50, 2, 0, 9], [0x50, 2, 0, 9]]);
  ws.deliver([0x62, 2, 0, 9]);
  assert.deepEqual(ws.ofType(7)[0], [0x70, 2, 0, 9]);
  ws.deliver(publish);
  assert.equal(count, 2);
  client.end();
});

test("packets split across and packed into WebSocket messages", async () => {
  const { client, ws } = await open({}, null);
  const topics = [];
  client.on("message", (t) => topics.push(t));
  const stream = [...CONNACK_OK, 0x30, 3, ...str("a"), 0x30, 3, ...str("b")];
  for (const byte of stream) ws.deliver([byte]);
  assert.deepEqual(topics, ["a", "b"]);
  ws.deliver([0x30, 3, ...str("c"), 0x30, 3, ...str("d"), 0x30]);
  ws.deliver([3, ...str("e")]);
  assert.deepEqual(topics, ["a", "b", "c", "d", "e"]);
  client.end();
});

test("malformed input closes with 1002", async () => {
  const { client, ws } = await open({ reconnect: false });
  client.on("error", () => {});
  ws.deliver([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
  assert.equal(ws.closeCode, 1002);
  const second = await open({ reconnect: false }, null);
  second.client.on("error", () => {});
  second.ws.deliver([0x30, 2, 0, 5]);
  assert.equal(second.ws.closeCode, 1002);
});

test("reconnects with back-off, restores subscriptions, resends unacknowledged", async () => {
  const { client, ws } = await open();
  const events = [];
  client.on("offline", () => events.push("offline"));
  client.on("connect", () => events.push("connect"));
  client.subscribe("a/#", { qos: 1 });
  ws.deliver([0x90, 3, 0, 1, 1]);
  const pending = client.publish("t", "x", { qos: 1 });
  ws.close();
  await sleep(40);
  const next = FakeSocket.all.at(-1);
  assert.notEqual(next, ws);
  assert.equal(next.sent[0][0], 0x10);
  next.deliver(CONNACK_OK);
  assert.deepEqual(events, ["offline", "connect"]);
  const [resub] = next.ofType(8);
  assert.deepEqual(resub.slice(4), [...str("a/#"), 1]);
  // No session present: sent again without DUP.
  const [again] = next.ofType(3);
  assert.deepEqual(again, [0x32, 6, ...str("t"), 0, 2, 120]);
  next.deliver([0x40, 2, 0, 2]);
  await pending;
  client.end();
});

test("a resend within a kept session carries DUP [MQTT-3.3.1-1]", async () => {
  const { client, ws } = await open({ clean: false });
  client.publish("t", "x", { qos: 1 });
  ws.close();
  await sleep(40);
  const next = FakeSocket.all.at(-1);
  next.deliver([0x20, 2, 1, 0]);
  assert.equal(next.ofType(3)[0][0], 0x3a);
  client.end();
});

test("back-off doubles up to its maximum", async () => {
  FakeSocket.all = [];
  const client = Fanfare.connect("ws://x", {
    WebSocket: FakeSocket, reconnectMinMs: 10, reconnectMaxMs: 40, connectTimeoutMs: 1000,
  });
  const delays = [];
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = (fn, ms) => {
    if (ms !== 1000) delays.push(ms);
    return realSetTimeout(fn, 0);
  };
  try {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => realSetTimeout(r, 5));
      FakeSocket.all.at(-1).close();
    }
    await new Promise((r) => realSetTimeout(r, 5));
  } finally {
    globalThis.setTimeout = realSetTimeout;
  }
  client.end();
  const bounds = [10, 20, 40, 40, 40];
  delays.slice(0, 5).forEach((d, i) => {
    assert.ok(d >= bounds[i] / 2 && d <= bounds[i], `delay ${i}: ${d}`);
  });
});

test("persisted QoS 1 publishes survive a reload and are sent on connect", async () => {
  const storage = new MemoryStorage();
  FakeSocket.all = [];
  const before = Fanfare.connect("ws://test/mqtt", { WebSocket: FakeSocket, storage, persist: true });
  before.publish("scores/m1", "offline goal", { qos: 1 });
  assert.equal(JSON.parse(storage.getItem("fanfare:ws://test/mqtt")).length, 1);
  before.end();
  // The page reloads: a new client with the same storage.
  const { client, ws } = await open({ storage, persist: true, clientId: undefined });
  const [resent] = ws.ofType(3);
  assert.deepEqual(resent.slice(2), [...str("scores/m1"), 0, 1, ...Buffer.from("offline goal")]);
  ws.deliver([0x40, 2, 0, 1]);
  assert.equal(storage.getItem("fanfare:ws://test/mqtt"), null);
  client.end();
});

test("QoS 0 publishes made offline are sent on connect", async () => {
  const { client, ws } = await open({}, null);
  client.publish("t", "x");
  assert.equal(ws.ofType(3).length, 0);
  ws.deliver(CONNACK_OK);
  assert.equal(ws.ofType(3).length, 1);
  client.end();
});

test("keep alive: PINGREQ when idle, close when PINGRESP does not come", async () => {
  const { client, ws } = await open({ keepalive: 0.08, reconnect: false });
  await sleep(60);
  assert.deepEqual(ws.ofType(12)[0], [0xc0, 0]);
  ws.deliver([0xd0, 0]);
  assert.equal(client.pingAt, 0);
  await sleep(250);
  assert.equal(ws.readyState, 3);
});

test("topic filter matching", () => {
  const cases = [
    ["a/b", "a/b", true], ["a/+", "a/b", true], ["a/+", "a/b/c", false], ["a/#", "a", true],
    ["a/#", "a/b/c", true], ["#", "a/b", true], ["+/+", "a/b", true], ["+", "a/b", false],
    ["#", "$SYS/x", false], ["+/x", "$SYS/x", false], ["$SYS/#", "$SYS/x", true],
    ["a/+/c", "a//c", true], ["$share/g/a/+", "a/b", true], ["a", "b", false],
  ];
  for (const [filter, topic, expected] of cases) {
    assert.equal(Fanfare.matches(filter, topic), expected, `${filter} ~ ${topic}`);
  }
});

test("size: the minified build is at most 5 KB gzipped", () => {
  // What the broker sends is measured in tests/python/test_web_client.py; this says early.
  const source = readFileSync(libPath, "utf8");
  const built = readFileSync(new URL("../../../web/dist/fanfare.js", import.meta.url));
  const size = gzipSync(built, { level: 9 }).length;
  console.log(`fanfare.js: ${source.length} bytes, ${built.length} minified, ${size} min+gz`);
  assert.ok(size <= 5000, `${size} bytes`);
});
