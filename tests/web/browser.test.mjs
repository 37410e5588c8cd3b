// Browser tests: the real broker binary on loopback, Debian's Chromium driven by
// playwright-core, and MQTT.js over TCP from Node as the non-browser client.
//
// The broker also listens for mqtts and wss with a certificate for localhost and 127.0.0.1
// signed by a test CA made at start-up (../node/certs.mjs, openssl). Chromium trusts that CA
// the way it trusts any locally added root on Linux: the CA is in the NSS database
// $HOME/.pki/nssdb (certutil, Debian's libnss3-tools), HOME being a fresh directory of the
// test's; no certificate check is switched off.
//
// "anonymous browser" starts a second broker with an ACL file (anonymous clients may only read
// scores/#) and a password file for the MQTT.js backend, both written at test time.
//
// FANFARE_BIN overrides the broker binary (default target/debug/fanfare); CHROMIUM overrides
// the browser (default /usr/bin/chromium). The demo screenshots go to test-artifacts/demo.png
// (http) and test-artifacts/demo-https.png.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, writeFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import https from "node:https";
import net from "node:net";
import { chromium } from "playwright-core";
import mqtt from "mqtt";
import { makeLeaf, makeTestCerts } from "../node/certs.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const BIN = process.env.FANFARE_BIN || join(root, "target/debug/fanfare");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = join(root, "test-artifacts");

const work = mkdtempSync(join(tmpdir(), "fanfare-web-"));
const www = join(work, "www");
const configFile = join(work, "fanfare.toml");
const pki = join(work, "pki");
const home = join(work, "home");
let broker, browser, node, certs;

/** Starts the broker with `config` (a TOML file) and resolves once it printed `ready`, with the
 * ports it bound. */
function startBroker(ports = {}, config = configFile) {
  const { tcp = "127.0.0.1:0", ws = "127.0.0.1:0", mqtts = "127.0.0.1:0", wss = "127.0.0.1:0" } = ports;
  const args = ["--tcp", tcp, "--ws", ws, "--mqtts", mqtts, "--wss", wss, "--admin", "off",
    "--tls-cert", certs.server.cert, "--tls-key", certs.server.key, "--config", config, "--shards", "2"];
  const proc = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: { FANFARE_LOG: "debug", ...process.env } });
  let out = "", err = "";
  proc.stderr.on("data", (d) => (err += d));
  return new Promise((resolvePorts, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`broker not ready in 10 s: ${out} ${err}`));
    }, 10_000);
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}: ${err}`));
    });
    proc.stdout.on("data", (d) => {
      out += d;
      if (!/^ready$/m.test(out)) return;
      clearTimeout(timer);
      resolvePorts({
        proc,
        tcpPort: +out.match(/^listening tcp [\d.]+:(\d+)/m)[1],
        wsPort: +out.match(/^listening ws [\d.]+:(\d+)/m)[1],
        mqttsPort: +out.match(/^listening mqtts [\d.]+:(\d+)/m)[1],
        wssPort: +out.match(/^listening wss [\d.]+:(\d+)/m)[1],
        stderr: () => err,
      });
    });
  });
}

async function stopBroker(b) {
  if (!b || b.proc.exitCode !== null) return;
  const exited = once(b.proc, "exit");
  b.proc.kill("SIGTERM");
  const timer = setTimeout(() => b.proc.kill("SIGKILL"), 5000);
  await exited;
  clearTimeout(timer);
}

async function nodeClient(port) {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000 });
  await once(client, "connect");
  return client;
}

/** The next message on `topic` (retained ones included), within `ms`. */
async function nextMessage(client, topic, ms = 5000) {
  let onMessage, timer;
  const got = new Promise((resolveMsg, reject) => {
    onMessage = (t, payload, packet) => {
      if (t === topic) resolveMsg({ payload: payload.toString(), retain: packet.retain });
    };
    timer = setTimeout(() => reject(new Error(`no message on ${topic} within ${ms} ms`)), ms);
    client.on("message", onMessage);
  });
  await client.subscribeAsync(topic, { qos: 1 });
  try {
    return await got;
  } finally {
    clearTimeout(timer);
    client.off("message", onMessage);
  }
}

/** `promise`, or a rejection naming `what` after `ms`. */
async function within(ms, what, promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function newPage() {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log("page error:", e.message));
  return page;
}

const base = () => `http://127.0.0.1:${broker.wsPort}`;
const wsUrl = () => `ws://127.0.0.1:${broker.wsPort}/mqtt`;

/** An NSS database in $HOME/.pki/nssdb for Chromium, trusting `caFile` to identify servers. */
function trustInNss(caFile) {
  const db = join(home, ".pki/nssdb");
  mkdirSync(db, { recursive: true });
  const certutil = (...args) => {
    try {
      execFileSync("certutil", ["-d", `sql:${db}`, ...args], { timeout: 10_000, stdio: "pipe" });
    } catch (e) {
      if (e.code === "ENOENT") throw new Error("certutil is needed to trust the test CA (apt-get install libnss3-tools)");
      throw new Error(`certutil ${args[0]} failed: ${e.stderr ?? e.message}`);
    }
  };
  certutil("-N", "--empty-password");
  certutil("-A", "-t", "C,,", "-n", "fanfare test CA", "-i", caFile);
}

before(async () => {
  mkdirSync(pki);
  certs = makeTestCerts(pki);
  trustInNss(certs.ca.cert);
  mkdirSync(www);
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(join(www, "client.html"), "<!doctype html><meta charset=utf-8><title>client</title><p>test page</p>\n");
  copyFileSync(join(here, "node_modules/mqtt/dist/mqtt.min.js"), join(www, "mqtt.min.js"));
  copyFileSync(join(here, "node_modules/paho-mqtt/paho-mqtt.js"), join(www, "paho-mqtt.js"));
  writeFileSync(join(work, "secret.txt"), "secret\n");
  symlinkSync(join(work, "secret.txt"), join(www, "leak.txt"));
  writeFileSync(configFile, `http_dir = ${JSON.stringify(www)}\n`);
  broker = await startBroker();
  node = await nodeClient(broker.tcpPort);
  browser = await chromium.launchPersistentContext(join(work, "profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 900, height: 640 },
    env: { ...process.env, HOME: home },
  });
});

after(async () => {
  await browser?.close();
  node?.end(true);
  await stopBroker(broker);
  rmSync(work, { recursive: true, force: true });
});

/** Sends a raw HTTP request (no URL normalisation) and returns status line and headers. */
function rawGet(path, headers = "") {
  return new Promise((resolveText, reject) => {
    const socket = net.connect(broker.wsPort, "127.0.0.1");
    let data = "";
    socket.setTimeout(5000, () => socket.destroy(new Error("timeout")));
    socket.on("data", (d) => (data += d.toString("latin1")));
    socket.on("end", () => resolveText(data));
    socket.on("error", reject);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\n`);
  });
}

test("static files: types, gzip, ETag, no traversal", async () => {
  const js = await rawGet("/fanfare.js", "Accept-Encoding: gzip, br\r\n");
  assert.match(js, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(js, /\r\nContent-Type: text\/javascript; charset=utf-8\r\n/);
  assert.match(js, /\r\nContent-Encoding: gzip\r\n/);
  const etag = js.match(/\r\nETag: ("[^"]+")\r\n/)[1];
  assert.match(await rawGet("/fanfare.js", `If-None-Match: ${etag}\r\nAccept-Encoding: gzip\r\n`), /^HTTP\/1\.1 304 /);
  assert.match(await rawGet("/client.html"), /^HTTP\/1\.1 200 [^]*text\/html/);
  assert.match(await rawGet("/"), /^HTTP\/1\.1 200 [^]*Live scores/);
  for (const path of ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%252e%252e/secret.txt", "/a%00.html", "/..\\secret.txt"]) {
    assert.match(await rawGet(path), /^HTTP\/1\.1 400 /, path);
  }
  assert.match(await rawGet("/leak.txt"), /^HTTP\/1\.1 404 /);
  assert.match(await rawGet("/mqtt"), /^HTTP\/1\.1 426 /);
});

test("demo page: retained score on load, a new score within 1 s, screenshot", async () => {
  const state = (score, minute, last) => JSON.stringify({
    sport: "football", title: "Test Cup", home: "Reds", away: "Blues", score, minute, status: "live", last,
  });
  await node.publishAsync("scores/test-match", state([2, 1], 60, "GOAL! Reds 59'"), { qos: 1, retain: true });
  await node.publishAsync("scores/test-tennis", JSON.stringify({
    sport: "tennis", title: "Centre Court", home: "L. Moreau", away: "K. Tanaka",
    sets: [[6, 4], [3, 2]], points: ["30", "15"], serving: 0, status: "live", last: "Point L. Moreau",
  }), { qos: 1, retain: true });
  const page = await newPage();
  await page.goto(base() + "/");
  const goals = (side) => `article[data-topic="scores/test-match"] .nums.${side} .goals`;
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "2", goals("home"), { timeout: 5000 });
  assert.equal(await page.textContent(goals("away")), "1");
  await page.waitForSelector(".status.live", { timeout: 5000 });

  const start = Date.now();
  await node.publishAsync("scores/test-match", state([2, 2], 71, "GOAL! Blues 71'"), { qos: 0, retain: true });
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "2", goals("away"), { timeout: 1000 });
  const ms = Date.now() - start;
  console.log(`demo: publish to DOM update in ${ms} ms`);
  assert.ok(ms < 1000);
  assert.ok(await page.$eval(goals("away"), (el) => el.classList.contains("flash")));

  // A few more matches from the feed script for a realistic picture.
  const feed = spawn(join(root, "scripts/score-feed"), ["--port", String(broker.tcpPort), "--rate", "50", "--count", "120", "--seed", "7"]);
  const [code] = await once(feed, "exit");
  assert.equal(code, 0);
  await page.waitForFunction(() => document.querySelectorAll("article.match").length >= 6, null, { timeout: 5000 });
  await page.waitForTimeout(1300); // let the change animations finish
  await page.screenshot({ path: join(ARTIFACTS, "demo.png"), fullPage: true });
  await page.close();
});

test("demo page over https from the wss listener, trusting the test CA: a score over wss://", async () => {
  const origin = `https://localhost:${broker.wssPort}`;
  const page = await newPage();
  const sockets = [];
  page.on("websocket", (ws) => sockets.push(ws.url()));
  const response = await page.goto(origin + "/", { timeout: 10_000 });
  assert.equal(response.status(), 200);
  const security = await response.securityDetails();
  assert.equal(security.issuer, "fanfare test CA");
  assert.equal(security.subjectName, "localhost");
  await page.waitForSelector("#status.live", { timeout: 5000 });
  assert.equal(sockets[0], `wss://localhost:${broker.wssPort}/mqtt`);
  const served = await page.evaluate(async () => Promise.all(
    ["/fanfare.js", "/fanfare.mjs"].map(async (path) => (await fetch(path)).status)));
  assert.deepEqual(served, [200, 200]);

  // The score comes from Node over mqtts, checked against the same CA.
  const publisher = mqtt.connect(`mqtts://127.0.0.1:${broker.mqttsPort}`, {
    ca: certs.caPem, servername: "localhost", reconnectPeriod: 0, connectTimeout: 5000,
  });
  try {
    await within(5000, "mqtts CONNACK", Promise.race([
      once(publisher, "connect"),
      once(publisher, "error").then(([e]) => Promise.reject(e)),
    ]));
    const state = (score, minute, last) => JSON.stringify({
      sport: "football", title: "Secure Cup", home: "Ciphers", away: "Keys", score, minute, status: "live", last,
    });
    const goals = (side) => `article[data-topic="scores/tls-match"] .nums.${side} .goals`;
    const shows = (side, n) => page.waitForFunction(
      ([sel, text]) => document.querySelector(sel)?.textContent === text, [goals(side), n], { timeout: 5000 });
    await publisher.publishAsync("scores/tls-match", state([0, 0], 1, "Kick-off"), { qos: 1, retain: true });
    await shows("home", "0");
    await publisher.publishAsync("scores/tls-match", state([1, 0], 12, "GOAL! Ciphers 12'"), { qos: 1, retain: true });
    await shows("home", "1");
    assert.equal(await page.textContent(goals("away")), "0");
  } finally {
    publisher.end(true);
  }
  await page.waitForTimeout(1300); // let the change animation finish
  await page.screenshot({ path: join(ARTIFACTS, "demo-https.png"), fullPage: true });

  // The trust is the test CA's, not a blanket exception: the same browser refuses a server
  // whose certificate, for the same names, another CA signed.
  const stranger = makeLeaf(pki, certs.otherCa, "stranger");
  const server = https.createServer({ cert: readFileSync(stranger.cert), key: readFileSync(stranger.key) },
    (_, res) => res.end("not trusted\n"));
  server.listen(0, "127.0.0.1");
  await within(5000, "https server listening", once(server, "listening"));
  try {
    await assert.rejects(page.goto(`https://localhost:${server.address().port}/`, { timeout: 5000 }),
      /ERR_CERT_AUTHORITY_INVALID/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
  await page.close();
});

/** Connects a browser library from a page served by the broker, then checks both directions. */
async function roundTrip(name, script, setup, publish) {
  const page = await newPage();
  await page.goto(base() + "/client.html");
  await page.addScriptTag({ url: script });
  const inTopic = `lib/${name}/in`, outTopic = `lib/${name}/out`;
  await page.evaluate(setup, { url: wsUrl(), port: broker.wsPort, topic: inTopic, clientId: `browser-${name}` });
  const fromBrowser = nextMessage(node, outTopic);
  await node.publishAsync(inTopic, `hello ${name}`, { qos: 1 });
  await page.waitForFunction((text) => window.inbox.includes(text), `hello ${name}`, { timeout: 5000 });
  await page.evaluate(publish, { topic: outTopic, text: `reply from ${name}` });
  assert.equal((await fromBrowser).payload, `reply from ${name}`);
  await page.close();
}

test("fanfare.js connects, subscribes, receives and publishes", async () => {
  await roundTrip("fanfare", "/fanfare.js", async ({ url, topic, clientId }) => {
    window.inbox = [];
    window.client = Fanfare.connect(url, { clientId });
    await window.client.subscribe(topic, { qos: 1 }, (t, p) => window.inbox.push(Fanfare.text(p)));
  }, async ({ topic, text }) => {
    await window.client.publish(topic, text, { qos: 1 });
  });
});

test("fanfare.js speaks MQTT 5 to the broker, QoS 2 both ways", async () => {
  await roundTrip("fanfare5", "/fanfare.js", async ({ url, topic, clientId }) => {
    window.inbox = [];
    window.client = Fanfare.connect(url, { clientId, protocolVersion: 5 });
    await window.client.subscribe(topic, { qos: 2 }, (t, p) => window.inbox.push(Fanfare.text(p)));
  }, async ({ topic, text }) => {
    await window.client.publish(topic, text, { qos: 2 });
  });
});

test("fanfare.mjs works as an ES module", async () => {
  const page = await newPage();
  await page.goto(base() + "/client.html");
  const kinds = await page.evaluate(async () => {
    const m = await import("/fanfare.mjs");
    return [typeof m.connect, typeof m.default.matches, m.matches("a/#", "a/b")];
  });
  assert.deepEqual(kinds, ["function", "function", true]);
  await page.close();
});

test("MQTT.js (dist/mqtt.min.js) connects, subscribes, receives and publishes", async () => {
  await roundTrip("mqttjs", "/mqtt.min.js", async ({ url, topic, clientId }) => {
    window.inbox = [];
    const client = (window.client = mqtt.connect(url, { clientId, protocolVersion: 4, reconnectPeriod: 0 }));
    client.on("message", (t, p) => window.inbox.push(p.toString()));
    await new Promise((res, rej) => {
      client.once("connect", res);
      client.once("error", rej);
    });
    await client.subscribeAsync(topic, { qos: 1 });
  }, async ({ topic, text }) => {
    await window.client.publishAsync(topic, text, { qos: 1 });
  });
});

test("Eclipse Paho JS connects, subscribes, receives and publishes", async () => {
  await roundTrip("paho", "/paho-mqtt.js", async ({ port, topic, clientId }) => {
    window.inbox = [];
    const client = (window.client = new Paho.Client("127.0.0.1", port, "/mqtt", clientId));
    client.onMessageArrived = (m) => window.inbox.push(m.payloadString);
    await new Promise((res, rej) => client.connect({
      mqttVersion: 4, onSuccess: res, onFailure: (e) => rej(new Error(e.errorMessage)),
    }));
    await new Promise((res, rej) => client.subscribe(topic, { qos: 1, onSuccess: res, onFailure: rej }));
  }, async ({ topic, text }) => {
    const m = new Paho.Message(text);
    m.destinationName = topic;
    m.qos = 1;
    window.client.send(m);
  });
});

test("anonymous browser: the demo page reads scores, its publishes reach no one", async () => {
  // A broker of its own: anonymous clients may only read scores/#, the backend (a user of a
  // password file written by `fanfare passwd`) may write there.
  const dir = join(work, "auth");
  mkdirSync(dir);
  const password = randomBytes(12).toString("hex");
  execFileSync(BIN, ["passwd", "-c", "-b", join(dir, "passwd"), "backend", password], { stdio: "pipe", timeout: 30_000 });
  writeFileSync(join(dir, "acl"), "# anonymous clients\ntopic read scores/#\n\nuser backend\ntopic readwrite scores/#\n");
  writeFileSync(join(dir, "fanfare.toml"), [
    "[auth]", `password_file = ${JSON.stringify(join(dir, "passwd"))}`,
    `acl_file = ${JSON.stringify(join(dir, "acl"))}`, "allow_anonymous = true", ""].join("\n"));
  const guarded = await startBroker({}, join(dir, "fanfare.toml"));
  const asBackend = () => mqtt.connect(`mqtt://127.0.0.1:${guarded.tcpPort}`, {
    username: "backend", password, reconnectPeriod: 0, connectTimeout: 10_000,
  });
  const backend = asBackend(), watcher = asBackend();
  // Listened for before anything is awaited: a client may connect while the page opens.
  const connected = Promise.all([["backend", backend], ["watcher", watcher]].map(([name, client]) =>
    within(10_000, `${name} CONNACK`, Promise.race([
      once(client, "connect"), once(client, "error").then(([e]) => Promise.reject(e))]))));
  const page = await newPage();
  try {
    await connected.catch((e) => {
      throw new Error(`${e.message}; the broker said:\n${guarded.stderr().slice(-6000)}`);
    });
    const topic = "scores/anon-match";
    const seen = [];
    let markerSeen;
    const marker = new Promise((resolveMarker) => (markerSeen = resolveMarker));
    watcher.on("message", (t, payload) => {
      if (t !== topic) return;
      seen.push(payload.toString());
      if (payload.toString() === "marker") markerSeen();
    });
    await watcher.subscribeAsync(topic, { qos: 1 });

    const score = JSON.stringify({
      sport: "football", title: "Open Cup", home: "Hosts", away: "Guests", score: [3, 1], minute: 80, status: "live", last: "GOAL! Hosts 79'",
    });
    await backend.publishAsync(topic, score, { qos: 1, retain: true });
    await page.goto(`http://127.0.0.1:${guarded.wsPort}/`);
    const goals = (side) => `article[data-topic="${topic}"] .nums.${side} .goals`;
    await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "3", goals("home"), { timeout: 5000 });
    assert.equal(await page.textContent(goals("away")), "1");

    // The same page tries to publish with fanfare.js, in MQTT 3.1.1 (QoS 1 acknowledged and
    // dropped) and in MQTT 5 (PUBACK 0x87, not authorized).
    await page.addScriptTag({ url: "/fanfare.js" });
    const answers = await page.evaluate(async ({ url, topic }) => {
      const attempt = async (protocolVersion) => {
        const client = Fanfare.connect(url, { protocolVersion, reconnect: false });
        await new Promise((connected, refused) => {
          client.on("connect", connected);
          client.on("error", refused);
        });
        const fake = JSON.stringify({ sport: "football", title: "Open Cup", home: "Hosts", away: "Guests", score: [0, 9] });
        await client.publish(topic, fake, { qos: 0 });
        // One connection keeps its order: this answer comes after the QoS 0 one was handled.
        const answer = await client.publish(topic, fake, { qos: 1, retain: true }).then(
          () => "acknowledged", (e) => `refused 0x${e.code.toString(16)}`);
        await client.end();
        return answer;
      };
      return [await attempt(4), await attempt(5)];
    }, { url: `ws://127.0.0.1:${guarded.wsPort}/mqtt`, topic });
    assert.deepEqual(answers, ["acknowledged", "refused 0x87"]);

    // Every fake publish was handled before this one was sent: the watcher sees only the
    // backend's messages, and the page still shows the backend's score.
    await backend.publishAsync(topic, "marker", { qos: 1 });
    await within(5000, "the marker at the watcher", marker);
    assert.deepEqual(seen, [score, "marker"]);
    assert.equal(await page.textContent(goals("away")), "1");
    // Nor was the retained fake kept: subscribing again brings the backend's score.
    assert.deepEqual(await nextMessage(watcher, topic), { payload: score, retain: true });
  } finally {
    await page.close();
    backend.end(true);
    watcher.end(true);
    await stopBroker(guarded);
  }
});

test("fanfare.js reconnects after a broker restart and sends persisted QoS 1 publishes", async () => {
  const page = await newPage();
  await page.goto(base() + "/client.html");
  await page.addScriptTag({ url: "/fanfare.js" });
  const openClient = async (url) => {
    window.client = Fanfare.connect(url, {
      clientId: "restart-test", persist: "fanfare-test", reconnectMinMs: 100, reconnectMaxMs: 500,
    });
    window.events = [];
    window.client.on("connect", () => window.events.push("connect"));
    window.client.on("offline", () => window.events.push("offline"));
  };
  await page.evaluate(openClient, wsUrl());
  await page.waitForFunction(() => window.client.connected, null, { timeout: 5000 });

  // The broker goes away; a QoS 1 publish made meanwhile waits in localStorage.
  const ports = {
    tcp: `127.0.0.1:${broker.tcpPort}`, ws: `127.0.0.1:${broker.wsPort}`,
    mqtts: `127.0.0.1:${broker.mqttsPort}`, wss: `127.0.0.1:${broker.wssPort}`,
  };
  node.end(true);
  await stopBroker(broker);
  await page.waitForFunction(() => window.events.includes("offline"), null, { timeout: 5000 });
  await page.evaluate(() => {
    window.acked = window.client.publish("restart/offline", "sent after restart", { qos: 1, retain: true }).then(() => true);
  });
  assert.match(await page.evaluate(() => localStorage.getItem("fanfare-test")), /restart\/offline/);

  // Same ports: the page's client finds the broker again on its own.
  broker = await startBroker(ports);
  node = await nodeClient(broker.tcpPort);
  await page.waitForFunction(() => window.events.filter((e) => e === "connect").length >= 2, null, { timeout: 5000 });
  assert.equal(await page.evaluate(() => window.acked), true);
  assert.equal((await nextMessage(node, "restart/offline")).payload, "sent after restart");
  assert.equal(await page.evaluate(() => localStorage.getItem("fanfare-test")), null);

  // A publish that never left before the page reloaded is sent by the reloaded page.
  await page.evaluate(() => {
    window.client.end();
    window.client.publish("restart/reload", "sent after reload", { qos: 1, retain: true });
  });
  assert.match(await page.evaluate(() => localStorage.getItem("fanfare-test")), /restart\/reload/);
  await page.reload();
  await page.addScriptTag({ url: "/fanfare.js" });
  await page.evaluate(openClient, wsUrl());
  assert.equal((await nextMessage(node, "restart/reload")).payload, "sent after reload");
  await page.waitForFunction(() => localStorage.getItem("fanfare-test") === null, null, { timeout: 5000 });
  await page.close();
});
