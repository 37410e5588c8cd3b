// Starts the fanfare binary on loopback with kernel-chosen ports, as tests/python/broker.py
// does: reads the "listening ..." lines and "ready" from its standard output, with a deadline.
// With `tls: { cert, key }` (PEM files) it also listens for mqtts and wss; with `config` (TOML
// text) or `auth` (the `[auth]` table as an object of strings, numbers, booleans and arrays) it
// runs with a config file written to a temporary directory, removed by `stop()`.
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const START_TIMEOUT_MS = 10_000;

/** An object as TOML key/value lines: JSON's strings, numbers, booleans and arrays of them
 * are TOML's as well. */
export function tomlTable(name, table) {
  const lines = Object.entries(table).map(([key, value]) => `${key} = ${JSON.stringify(value)}`);
  return `[${name}]\n${lines.join("\n")}\n`;
}

/** The broker binary: FANFARE_BIN, relative to the repository root, or the debug build. */
export const fanfareBin = () => resolve(ROOT, process.env.FANFARE_BIN ?? "target/debug/fanfare");

/** Runs `fanfare passwd ARGS...` (e.g. `-c -b FILE USER PASSWORD`); throws if it fails. */
export function passwd(...args) {
  execFileSync(fanfareBin(), ["passwd", ...args], { stdio: "pipe", timeout: 30_000 });
}

export async function startBroker({ tls, config, auth } = {}) {
  const bin = fanfareBin();
  const args = ["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--admin", "off"];
  if (tls) {
    args.push("--mqtts", "127.0.0.1:0", "--wss", "127.0.0.1:0", "--tls-cert", tls.cert, "--tls-key", tls.key);
  }
  let configDir = null;
  if (config || auth) {
    configDir = mkdtempSync(join(tmpdir(), "fanfare-node-config-"));
    const file = join(configDir, "fanfare.toml");
    writeFileSync(file, (config ?? "") + "\n" + (auth ? tomlTable("auth", auth) : ""));
    args.push("--config", file);
  }
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  // The last few kilobytes of its log, for the error when it does not start.
  let log = "";
  child.stderr.on("data", (chunk) => (log = (log + chunk).slice(-4096)));
  const broker = { child, tcp: null, ws: null, mqtts: null, wss: null };
  await new Promise((done, reject) => {
    const fail = (e) => {
      child.kill("SIGKILL");
      if (configDir) rmSync(configDir, { recursive: true, force: true });
      reject(new Error(`${e.message}\n${log}`));
    };
    const timer = setTimeout(() => fail(new Error("broker did not print 'ready' in time")), START_TIMEOUT_MS);
    let pending = "";
    child.stdout.on("data", (chunk) => {
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const words = pending.slice(0, newline).trim().split(/\s+/);
        pending = pending.slice(newline + 1);
        if (words[0] === "ready") {
          clearTimeout(timer);
          done();
        } else if (words[0] === "listening") {
          const [addr, ...path] = words[2].split("/");
          if (!addr.startsWith("127.0.0.1:")) fail(new Error(`not loopback: ${addr}`));
          if (words[1] === "tcp") broker.tcp = `mqtt://${addr}`;
          if (words[1] === "ws") broker.ws = `ws://${addr}/${path.join("/")}`;
          if (words[1] === "mqtts") broker.mqtts = `mqtts://${addr}`;
          if (words[1] === "wss") broker.wss = `wss://${addr}/${path.join("/")}`;
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`broker exited with ${code} before 'ready'`));
    });
  });
  broker.url = (transport) => ({ ws: broker.ws, mqtts: broker.mqtts, wss: broker.wss })[transport] ?? broker.tcp;
  broker.stop = () => {
    child.kill("SIGKILL");
    if (configDir) rmSync(configDir, { recursive: true, force: true });
  };
  return broker;
}

/** Keeps `client`'s deliveries in order: `client.next()` resolves with the next one
 * (`{ topic, payload }`, and the MQTT.js `packet`, not enumerable so that whole messages compare
 * by topic and payload), or fails after `waitMs`. */
export function collectMessages(client, waitMs) {
  const inbox = [];
  const waiters = [];
  client.on("message", (topic, payload, packet) => {
    const m = Object.defineProperty({ topic, payload: payload.toString() }, "packet", { value: packet });
    const waiter = waiters.shift();
    if (waiter) waiter(m);
    else inbox.push(m);
  });
  client.next = () =>
    inbox.length
      ? Promise.resolve(inbox.shift())
      : new Promise((done, fail) => {
          const timer = setTimeout(() => fail(new Error("no message in time")), waitMs);
          waiters.push((m) => {
            clearTimeout(timer);
            done(m);
          });
        });
  return client;
}
