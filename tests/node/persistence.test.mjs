// Persistence with MQTT.js (docs/persistence.md): a persistent session (3.1.1 clean session 0,
// MQTT 5 Session Expiry) and a retained message survive a clean stop and a `kill -9` of a
// broker run with a data directory under `durability = "sync"`, so what was acknowledged
// before the stop is there after the restart.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import mqtt from "mqtt";

import { collectMessages, startBroker } from "./broker.mjs";

const WAIT_MS = 5000;
let seq = 0;
const uid = (prefix) => `${prefix}-${process.pid}-${seq++}`;

const dataDirs = [];
after(() => {
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
});

function startOn(dataDir) {
  return startBroker({ config: `data_dir = ${JSON.stringify(dataDir)}\ndurability = "sync"\n` });
}

/** Stops the broker as `how` says, and waits until the process is gone. */
async function stop(broker, how) {
  const exited = new Promise((done) => broker.child.once("exit", done));
  if (how === "SIGTERM") broker.child.kill("SIGTERM");
  else broker.stop();
  await exited;
  if (how === "SIGTERM") broker.stop();
}

async function connect(url, options) {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: WAIT_MS, ...options });
  collectMessages(client, WAIT_MS);
  client.connack = await new Promise((done, fail) => {
    client.once("connect", done);
    client.once("error", fail);
  });
  return client;
}

const flavours = [
  { name: "3.1.1, clean session 0", options: { protocolVersion: 4, clean: false } },
  {
    name: "MQTT 5, Session Expiry 300 s",
    options: { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 300 } },
  },
];

for (const flavour of flavours) {
  for (const how of ["SIGTERM", "kill -9"]) {
    describe(`${flavour.name} across a restart (${how})`, () => {
      test("queued QoS 1 and 2 messages, the subscription and a retained message come back", async () => {
        const dataDir = mkdtempSync(join(tmpdir(), "fanfare-node-data-"));
        dataDirs.push(dataDir);
        const root = `persist/${uid("t")}`;
        const clientId = uid("fan");

        let broker = await startOn(dataDir);
        const first = await connect(broker.tcp, { clientId, ...flavour.options });
        await first.subscribeAsync(`${root}/#`, { qos: 2 });
        await first.endAsync();

        // Every publish below was acknowledged (PUBACK, PUBCOMP) before the stop.
        const publisher = await connect(broker.tcp, { clientId: uid("pub") });
        const sent = [];
        for (let i = 0; i < 3; i++) {
          for (const qos of [1, 2]) {
            const payload = `q${qos}-${i}`;
            await publisher.publishAsync(`${root}/feed`, payload, { qos });
            sent.push(payload);
          }
        }
        await publisher.publishAsync(`${root}/score`, "6-4 3-2", { qos: 1, retain: true });
        sent.push("6-4 3-2");
        await publisher.endAsync();
        await stop(broker, how);

        broker = await startOn(dataDir);
        try {
          const again = await connect(broker.tcp, { clientId, ...flavour.options });
          assert.equal(again.connack.sessionPresent, true);
          const got = [];
          for (let i = 0; i < sent.length; i++) got.push((await again.next()).payload);
          // In order per QoS: MQTT.js hands a QoS 2 message over at its PUBREL, a round trip
          // after the QoS 1 messages sent behind it.
          const ofQos = (list, qos) => list.filter((payload) => payload.startsWith(`q${qos}-`));
          assert.deepEqual(ofQos(got, 1), ofQos(sent, 1));
          assert.deepEqual(ofQos(got, 2), ofQos(sent, 2));
          assert.deepEqual([...got].sort(), [...sent].sort());

          // The subscription itself came back: a publish after the restart arrives.
          const later = await connect(broker.ws, { clientId: uid("pub") });
          await later.publishAsync(`${root}/feed`, "after", { qos: 1 });
          assert.equal((await again.next()).payload, "after");

          // The retained message, for a subscriber new after the restart, over WebSocket.
          const late = await connect(broker.ws, { clientId: uid("late"), protocolVersion: 5 });
          await late.subscribeAsync(`${root}/score`, { qos: 1 });
          const retained = await late.next();
          assert.equal(retained.payload, "6-4 3-2");
          assert.equal(retained.packet.retain, true);
          for (const client of [again, later, late]) await client.endAsync();
        } finally {
          broker.stop();
        }
      });
    });
  }
}

describe("MQTT 5 Session Expiry across a restart", () => {
  test("a session whose expiry passed while the broker was down is gone", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "fanfare-node-data-"));
    dataDirs.push(dataDir);
    const clientId = uid("short");
    let broker = await startOn(dataDir);
    const options = { clientId, protocolVersion: 5, properties: { sessionExpiryInterval: 1 } };
    const first = await connect(broker.tcp, options);
    await first.subscribeAsync(`persist/${clientId}`, { qos: 1 });
    await first.endAsync();
    // The broker must have taken the DISCONNECT before the kill: a session still connected
    // on disk counts its expiry from the restart, the client's end being unknown to it.
    // Half the expiry: the session must not end before the kill either.
    await new Promise((done) => setTimeout(done, 500));
    await stop(broker, "kill -9");
    await new Promise((done) => setTimeout(done, 1500));

    broker = await startOn(dataDir);
    try {
      const again = await connect(broker.tcp, { ...options, clean: false });
      assert.equal(again.connack.sessionPresent, false);
      await again.endAsync();
    } finally {
      broker.stop();
    }
  });
});
