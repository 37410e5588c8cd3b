// Authentication and topic rules as MQTT.js meets them, in MQTT 3.1.1 and 5: users of a password
// file written by `fanfare passwd -c -b`, HS256 tokens signed here with node's crypto, and an ACL
// file whose anonymous rules let a client read scores/# and do nothing else. The files, the
// passwords and the token secret are made at start-up in a temporary directory.
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import mqtt from "mqtt";

import { collectMessages, passwd, startBroker } from "./broker.mjs";

// Passwords are checked with argon2id on a verifier thread: a CONNACK may take a moment.
const WAIT_MS = 10_000;
const VERSIONS = [4, 5];
const MQTT = { 4: "MQTT 3.1.1", 5: "MQTT 5" };
/** CONNACK for a wrong password or a bad token: return code 4 in 3.1.1, reason 0x86 in 5. */
const BAD_CREDENTIALS = { 4: 4, 5: 0x86 };
/** SUBACK for a filter the rules deny: 0x80 in 3.1.1, 0x87 (not authorized) in 5. */
const SUBSCRIBE_DENIED = { 4: 0x80, 5: 0x87 };
const PUBLISH_DENIED = 0x87; // MQTT 5 PUBACK; 3.1.1 acknowledges and drops

let seq = 0;
const uid = (prefix) => `${prefix}-${process.pid}-${seq++}`;
const dir = mkdtempSync(join(tmpdir(), "fanfare-node-auth-"));
const opened = [];

after(() => {
  for (const c of opened) c.end(true);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Connects and settles with `{ client, code }`: code 0 once connected, or the CONNACK code
 * that refused it. Every message the client gets is queued for `client.next()`.
 */
function attempt(url, options) {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: WAIT_MS, clientId: uid("js-auth"), ...options });
  opened.push(c);
  collectMessages(c, WAIT_MS);
  return new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`no CONNACK from ${url} in time`)), WAIT_MS + 1000);
    c.once("connect", () => {
      clearTimeout(timer);
      done({ client: c, code: 0 });
    });
    // Stays registered: an error after the outcome is settled must not go unhandled.
    c.on("error", (e) => {
      clearTimeout(timer);
      if (typeof e.code === "number") done({ client: c, code: e.code });
      else fail(e);
    });
    c.once("close", () => {
      clearTimeout(timer);
      fail(new Error(`closed before CONNACK: ${url}`));
    });
  });
}

/** Connects and fails the test unless the broker accepted the client. */
async function connected(url, options) {
  const { client, code } = await attempt(url, options);
  assert.equal(code, 0, "CONNACK code");
  return client;
}

/** The SUBACK codes for `filter`, whether granted or refused. */
function suback(c, filter) {
  return new Promise((done, fail) =>
    c.subscribe(filter, { qos: 1 }, (err, _subs, packet) => {
      const granted = (packet ?? err?.packet)?.granted;
      if (granted) done(granted);
      else fail(err ?? new Error(`no SUBACK for ${filter}`));
    }),
  );
}

describe("a password file written by `fanfare passwd -c -b`", () => {
  const password = randomBytes(12).toString("hex");
  let broker;
  before(async () => {
    const file = join(dir, "passwd");
    passwd("-c", "-b", file, "backend", password);
    broker = await startBroker({ auth: { password_file: file } });
  });
  after(() => broker?.stop());

  for (const version of VERSIONS) {
    test(`${MQTT[version]}: its user connects and publishes`, async () => {
      const topic = `scores/pw-${version}`;
      const options = { protocolVersion: version, username: "backend", password };
      const subscriber = await connected(broker.tcp, options);
      assert.deepEqual(await suback(subscriber, topic), [1]);
      const publisher = await connected(broker.tcp, options);
      await publisher.publishAsync(topic, "15-30", { qos: 1 });
      assert.deepEqual(await subscriber.next(), { topic, payload: "15-30" });
    });

    test(`${MQTT[version]}: a wrong password gets CONNACK ${BAD_CREDENTIALS[version]}`, async () => {
      const options = { protocolVersion: version, username: "backend", password: `not-${password}` };
      const { code } = await attempt(broker.tcp, options);
      assert.equal(code, BAD_CREDENTIALS[version]);
    });
  }
});

describe("HS256 tokens in the password", () => {
  // Printable, so the file holds exactly the key: the broker drops one trailing newline.
  const secret = randomBytes(32).toString("hex");
  let broker;
  before(async () => {
    const file = join(dir, "jwt.secret");
    writeFileSync(file, secret);
    broker = await startBroker({ auth: { jwt_secret_file: file } });
  });
  after(() => broker?.stop());

  const base64url = (json) => Buffer.from(JSON.stringify(json)).toString("base64url");
  /** A JWT signed with HMAC-SHA256 over base64url(header) "." base64url(claims). */
  function hs256(claims) {
    const signed = `${base64url({ alg: "HS256", typ: "JWT" })}.${base64url(claims)}`;
    return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
  }
  const now = () => Math.floor(Date.now() / 1000);

  for (const version of VERSIONS) {
    test(`${MQTT[version]} over WebSocket: a valid token connects, an expired one gets CONNACK ${BAD_CREDENTIALS[version]}`, async () => {
      // The user name is not looked at: the token's `sub` names the user.
      const options = { protocolVersion: version, username: "browser" };
      const topic = `scores/jwt-${version}`;
      const client = await connected(broker.ws, { ...options, password: hs256({ sub: "fan-1", exp: now() + 600 }) });
      await suback(client, topic);
      await client.publishAsync(topic, "deuce", { qos: 1 });
      assert.deepEqual(await client.next(), { topic, payload: "deuce" });

      // Well past the default leeway of 30 s.
      const expired = hs256({ sub: "fan-1", exp: now() - 600 });
      const { code } = await attempt(broker.ws, { ...options, password: expired });
      assert.equal(code, BAD_CREDENTIALS[version]);
    });
  }
});

describe("an ACL file: anonymous clients read scores/# only", () => {
  const password = randomBytes(12).toString("hex");
  let broker, backend, watcher;
  before(async () => {
    const passwords = join(dir, "acl-passwd");
    passwd("-c", "-b", passwords, "backend", password);
    const acl = join(dir, "acl");
    writeFileSync(acl, "# anonymous clients\ntopic read scores/#\n\nuser backend\ntopic readwrite scores/#\n");
    broker = await startBroker({ auth: { password_file: passwords, acl_file: acl, allow_anonymous: true } });
    backend = await connected(broker.tcp, { protocolVersion: 5, username: "backend", password });
    // Another anonymous reader: what one anonymous client publishes must not reach it.
    watcher = await connected(broker.tcp, { protocolVersion: 5 });
    assert.deepEqual(await suback(watcher, "scores/#"), [1]);
  });
  after(() => broker?.stop());

  for (const version of VERSIONS) {
    test(`${MQTT[version]}: subscribes to scores/#, is refused #, and its publishes go nowhere`, async () => {
      const topic = `scores/acl-${version}`;
      const anonymous = await connected(broker.tcp, { protocolVersion: version });
      assert.deepEqual(await suback(anonymous, "scores/#"), [1]);
      assert.deepEqual(await suback(anonymous, "#"), [SUBSCRIBE_DENIED[version]]);

      await backend.publishAsync(topic, "40-15", { qos: 1 });
      assert.deepEqual(await anonymous.next(), { topic, payload: "40-15" });
      assert.deepEqual(await watcher.next(), { topic, payload: "40-15" });

      await anonymous.publishAsync(topic, "fake at qos 0", { qos: 0 });
      const denied = anonymous.publishAsync(topic, "fake at qos 1", { qos: 1 });
      if (version === 5) await assert.rejects(denied, (e) => e.code === PUBLISH_DENIED);
      else await denied; // acknowledged and dropped
      // The QoS 1 answer came after the broker handled both publishes (one connection keeps
      // its order), so the next thing either reader gets is what the backend sends now.
      await backend.publishAsync(topic, "game", { qos: 1 });
      assert.deepEqual(await watcher.next(), { topic, payload: "game" });
      assert.deepEqual(await anonymous.next(), { topic, payload: "game" });
    });
  }
});
