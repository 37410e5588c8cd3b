// MQTT.js over TLS: mqtts:// and wss:// round trips with MQTT 3.1.1 and 5, the client trusting
// the test CA made at start-up (certs.mjs) through its `ca` option, and clients that do not
// trust the broker's certificate refused.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import mqtt from "mqtt";

import { collectMessages, startBroker } from "./broker.mjs";
import { makeTestCerts } from "./certs.mjs";

const WAIT_MS = 5000;
let seq = 0;
const uid = (prefix) => `${prefix}-${process.pid}-${seq++}`;

const dir = mkdtempSync(join(tmpdir(), "fanfare-node-tls-"));
let certs, broker;
const opened = [];

before(async () => {
  certs = makeTestCerts(dir);
  broker = await startBroker({ tls: certs.server });
  assert.ok(broker.mqtts && broker.wss, "mqtts and wss listeners reported");
});

after(() => {
  for (const c of opened) c.end(true);
  broker?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Settles with the client once connected, or rejects with its first error (bounded). */
function connect(url, options) {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: WAIT_MS, clientId: uid("js-tls"), ...options });
  opened.push(c);
  collectMessages(c, WAIT_MS);
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`no CONNACK nor error from ${url} in time`)), WAIT_MS + 1000);
    c.once("connect", (connack) => {
      clearTimeout(timer);
      c.connack = connack;
      done(c);
    });
    c.once("error", (e) => {
      clearTimeout(timer);
      fail(e);
    });
    c.once("close", () => {
      clearTimeout(timer);
      fail(Object.assign(new Error(`closed before CONNACK: ${url}`), { code: "CLOSED" }));
    });
  });
}

// What a client needs to trust the broker: the test CA, nothing switched off. mqtts also
// checks the name `localhost` (SNI and the certificate's DNS name) while connecting to
// 127.0.0.1; wss checks the certificate's IP address 127.0.0.1.
const trusting = (transport) =>
  transport === "mqtts"
    ? { ca: certs.caPem, servername: "localhost", ALPNProtocols: ["mqtt"] }
    : { ca: certs.caPem };

for (const transport of ["mqtts", "wss"]) {
  for (const protocolVersion of [4, 5]) {
    describe(`MQTT ${protocolVersion === 5 ? "5" : "3.1.1"} over ${transport}`, () => {
      test("publish and subscribe round trip, QoS 0, 1 and 2", async () => {
        const options = { protocolVersion, ...trusting(transport) };
        const sub = await connect(broker.url(transport), options);
        const pub = await connect(broker.url(transport), options);
        if (transport === "mqtts") {
          assert.equal(sub.stream.authorized, true);
          assert.equal(sub.stream.alpnProtocol, "mqtt");
        }
        const topic = `tls/${transport}/v${protocolVersion}/${seq++}`;
        await sub.subscribeAsync(`${topic}/+`, { qos: 2 });
        for (const qos of [0, 1, 2]) {
          await pub.publishAsync(`${topic}/${qos}`, `hello over ${transport} at QoS ${qos}`, { qos });
          const m = await sub.next();
          assert.equal(m.topic, `${topic}/${qos}`);
          assert.equal(m.payload, `hello over ${transport} at QoS ${qos}`);
          assert.equal(m.packet.qos, qos);
        }
        if (protocolVersion === 5) {
          await pub.publishAsync(`${topic}/props`, "with properties", {
            qos: 1,
            properties: { userProperties: { over: transport }, contentType: "text/plain" },
          });
          const m = await sub.next();
          assert.deepEqual({ ...m.packet.properties.userProperties }, { over: transport });
          assert.equal(m.packet.properties.contentType, "text/plain");
        }
        sub.end(true);
        pub.end(true);
      });
    });
  }
}

test("one publish reaches subscribers on tcp, ws, mqtts and wss", async () => {
  const topic = `tls/fanout/${seq++}`;
  const subs = [];
  for (const transport of ["tcp", "ws", "mqtts", "wss"]) {
    const secure = transport === "mqtts" || transport === "wss";
    const c = await connect(broker.url(transport), { protocolVersion: 5, ...(secure ? trusting(transport) : {}) });
    await c.subscribeAsync(topic, { qos: 1 });
    subs.push(c);
  }
  const pub = await connect(broker.url("mqtts"), { protocolVersion: 4, ...trusting("mqtts") });
  await pub.publishAsync(topic, "to every listener", { qos: 1 });
  for (const c of subs) {
    const m = await c.next();
    assert.equal(m.payload, "to every listener");
    c.end(true);
  }
  pub.end(true);
});

test("ALPN: mqtt on mqtts, http/1.1 on wss", async () => {
  const alpn = (url, offered) =>
    new Promise((done, fail) => {
      const { hostname, port } = new URL(url);
      const socket = tls.connect({
        host: hostname, port: +port, ca: certs.caPem, servername: "localhost", ALPNProtocols: offered,
      });
      socket.setTimeout(WAIT_MS, () => socket.destroy(new Error("TLS handshake timed out")));
      socket.once("secureConnect", () => {
        done(socket.alpnProtocol);
        socket.destroy();
      });
      socket.once("error", fail);
    });
  assert.equal(await alpn(broker.mqtts, ["mqtt"]), "mqtt");
  assert.equal(await alpn(broker.wss, ["h2", "http/1.1"]), "http/1.1");
});

describe("clients that do not trust the broker's certificate are refused", () => {
  const refusals = [
    ["a CA that did not sign it", () => ({ ca: certs.otherCaPem }), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/i],
    ["only the system's CAs", () => ({}), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/i],
    ["the right CA but another name", () => ({ ca: certs.caPem, servername: "example.com" }),
      /ERR_TLS_CERT_ALTNAME_INVALID|altnames/i],
  ];
  for (const transport of ["mqtts", "wss"]) {
    for (const [what, options, reason] of refusals) {
      // ws takes no servername of its own: wss checks the name of its URL.
      if (transport === "wss" && what.includes("another name")) continue;
      test(`${transport}: trusting ${what}`, async () => {
        const error = await connect(broker.url(transport), { protocolVersion: 5, ...options() }).then(
          () => assert.fail("connected although the certificate is not trusted"),
          (e) => e,
        );
        assert.match(`${error.code} ${error.message}`, reason);
      });
    }
  }

  test("the broker still serves a trusting client afterwards", async () => {
    const c = await connect(broker.url("wss"), { protocolVersion: 5, ...trusting("wss") });
    assert.ok(c.connected);
    c.end(true);
  });
});
