// MQTT 5 end to end with MQTT.js, over TCP and WebSocket: one test per feature of the
// broker's MQTT 5 support, and MQTT 3.1 / 3.1.1 / 5 clients on one topic.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import mqtt from "mqtt";

import { startBroker } from "./broker.mjs";

const WAIT_MS = 5000;
let seq = 0;
const uid = (prefix) => `${prefix}-${process.pid}-${seq++}`;

for (const transport of ["tcp", "ws"]) {
  describe(`MQTT 5 over ${transport}`, () => {
    let broker;
    const opened = [];
    before(async () => {
      broker = await startBroker();
    });
    after(() => {
      for (const c of opened) c.end(true);
      broker.stop();
    });

    // A connected client, with every message queued for `next()`.
    async function client(options = {}) {
      const c = mqtt.connect(broker.url(transport), {
        protocolVersion: 5,
        clientId: uid("js"),
        reconnectPeriod: 0,
        connectTimeout: WAIT_MS,
        ...options,
      });
      opened.push(c);
      c.inbox = [];
      c.waiters = [];
      c.on("message", (topic, payload, packet) => {
        const waiter = c.waiters.shift();
        if (waiter) waiter({ topic, payload, packet });
        else c.inbox.push({ topic, payload, packet });
      });
      c.next = (ms = WAIT_MS) =>
        c.inbox.length
          ? Promise.resolve(c.inbox.shift())
          : new Promise((done, fail) => {
              const timer = setTimeout(() => fail(new Error("no message in time")), ms);
              c.waiters.push((m) => {
                clearTimeout(timer);
                done(m);
              });
            });
      c.none = async (ms = 400) => {
        await sleep(ms);
        assert.deepEqual(c.inbox.map((m) => m.payload.toString()), []);
      };
      c.connack = await new Promise((done, fail) => {
        c.once("connect", done);
        c.once("error", fail);
      });
      return c;
    }

    const topic = (name) => `node/${transport}/${name}/${seq++}`;

    test("CONNACK properties and an assigned client identifier", async () => {
      const c = await client({ clientId: "" });
      const p = c.connack.properties;
      assert.match(p.assignedClientIdentifier, /^fanfare-/);
      assert.ok(p.receiveMaximum >= 1);
      assert.ok(p.topicAliasMaximum >= 1);
      assert.equal(p.sharedSubscriptionAvailable, true);
      assert.equal(p.subscriptionIdentifiersAvailable, true);
      assert.equal(p.maximumQoS, undefined);
    });

    test("session expiry keeps the session across connections", async () => {
      const t = topic("expiry");
      const id = uid("keep");
      const options = { clientId: id, properties: { sessionExpiryInterval: 30 } };
      const first = await client(options);
      await first.subscribeAsync(t, { qos: 1 });
      await first.endAsync();
      const pub = await client();
      await pub.publishAsync(t, "while away", { qos: 1 });
      const again = await client({ ...options, clean: false });
      assert.equal(again.connack.sessionPresent, true);
      assert.equal((await again.next()).payload.toString(), "while away");
    });

    test("will delay, will properties and DISCONNECT 0x04", async () => {
      const t = topic("will");
      const watcher = await client();
      await watcher.subscribeAsync(t);
      const c = await client({
        properties: { sessionExpiryInterval: 10 },
        will: {
          topic: t,
          payload: Buffer.from("gone"),
          qos: 0,
          retain: false,
          properties: { willDelayInterval: 1, contentType: "text/plain" },
        },
      });
      c.stream.destroy();
      await watcher.none(500);
      const will = await watcher.next();
      assert.equal(will.payload.toString(), "gone");
      assert.equal(will.packet.properties.contentType, "text/plain");

      const asked = await client({ will: { topic: t, payload: Buffer.from("asked"), qos: 0, retain: false } });
      await asked.endAsync(false, { reasonCode: 0x04 });
      assert.equal((await watcher.next()).payload.toString(), "asked");
    });

    test("errors: takeover 0x8E, authentication method 0x8C", async () => {
      const id = uid("same");
      const first = await client({ clientId: id });
      const reason = new Promise((done) => first.once("disconnect", (p) => done(p.reasonCode)));
      await client({ clientId: id });
      assert.equal(await reason, 0x8e);
      await assert.rejects(client({ properties: { authenticationMethod: "SCRAM-SHA-1" } }), (e) => e.code === 0x8c);
    });

    test("topic aliases, message expiry and maximum packet size", async () => {
      const t = topic("publish");
      const small = await client({ properties: { maximumPacketSize: 128 } });
      await small.subscribeAsync(t, { qos: 1 });
      const big = await client();
      await big.subscribeAsync(t, { qos: 1 });
      const pub = await client({ autoUseTopicAlias: true });
      await pub.publishAsync(t, "x".repeat(500), { qos: 1 });
      await pub.publishAsync(t, "small", { qos: 1, properties: { topicAlias: 1 } });
      await pub.publishAsync("", "aliased", { qos: 1, properties: { topicAlias: 1 } });
      assert.equal((await big.next()).payload.length, 500);
      for (const c of [big, small]) {
        assert.equal((await c.next()).payload.toString(), "small");
        const aliased = await c.next();
        assert.equal(aliased.topic, t);
        assert.equal(aliased.payload.toString(), "aliased");
      }
      const r = topic("expiry");
      await pub.publishAsync(r, "short", { qos: 1, retain: true, properties: { messageExpiryInterval: 1 } });
      const early = await client();
      await early.subscribeAsync(r);
      assert.equal((await early.next()).packet.properties.messageExpiryInterval, 1);
      await sleep(1200);
      const late = await client();
      await late.subscribeAsync(r);
      await late.none();
    });

    test("subscription options, identifiers and UNSUBACK reasons", async () => {
      const t = topic("options");
      const c = await client();
      await c.subscribeAsync(`${t}/own`, { qos: 0, nl: true });
      await c.subscribeAsync(`${t}/kept`, { qos: 0, rap: true, properties: { subscriptionIdentifier: 42 } });
      await c.publishAsync(`${t}/own`, "mine");
      await c.none(300);
      const other = await client();
      await other.publishAsync(`${t}/kept`, "r", { retain: true, qos: 1 });
      const kept = await c.next();
      assert.equal(kept.packet.retain, true);
      assert.deepEqual([kept.packet.properties.subscriptionIdentifier].flat(), [42]);
      const late = await client();
      await late.subscribeAsync(`${t}/kept`, { qos: 0, rh: 2 });
      await late.none(300);
      const unsuback = await late.unsubscribeAsync([`${t}/kept`, `${t}/never`]);
      assert.deepEqual(unsuback.reasonCode ?? unsuback.granted, [0x00, 0x11]);
      // A shared subscription is granted; an empty share name is refused (0x8F, which MQTT.js
      // turns into an error).
      const granted = await late.subscribeAsync(`$share/g/${t}`, { qos: 1 });
      assert.equal(granted[0].qos, 1);
      await assert.rejects(late.subscribeAsync(`$share//${t}`));
    });

    test("MQTT 3.1, 3.1.1 and 5 clients on one topic", async () => {
      const t = topic("mixed");
      const v31 = await client({ protocolVersion: 3, protocolId: "MQIsdp", clientId: uid("31").slice(0, 23) });
      const v311 = await client({ protocolVersion: 4 });
      const v5 = await client();
      for (const c of [v31, v311, v5]) await c.subscribeAsync(t, { qos: 1 });
      const user = { userProperties: { team: "home" }, contentType: "text/plain" };
      await v5.publishAsync(t, "from v5", { qos: 1, properties: user });
      await v31.publishAsync(t, "from v3.1", { qos: 1 });
      await v311.publishAsync(t, "from v3.1.1", { qos: 1 });
      for (const c of [v31, v311, v5]) {
        const got = [];
        for (let i = 0; i < 3; i++) got.push(await c.next());
        assert.deepEqual(got.map((m) => m.payload.toString()).sort(), ["from v3.1", "from v3.1.1", "from v5"]);
        const fromV5 = got.find((m) => m.payload.toString() === "from v5");
        if (c === v5) {
          assert.equal(fromV5.packet.properties.contentType, "text/plain");
          assert.deepEqual({ ...fromV5.packet.properties.userProperties }, { team: "home" });
        } else {
          assert.equal(fromV5.packet.properties, undefined);
        }
      }
    });
  });
}
