// Starts the fanfare binary on loopback with kernel-chosen ports, as tests/python/broker.py
// does: reads the "listening ..." lines and "ready" from its standard output, with a deadline.
// With `tls: { cert, key }` (PEM files) it also listens for mqtts and wss.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const START_TIMEOUT_MS = 10_000;

export async function startBroker({ tls } = {}) {
  const bin = resolve(ROOT, process.env.FANFARE_BIN ?? "target/debug/fanfare");
  const args = ["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"];
  if (tls) {
    args.push("--mqtts", "127.0.0.1:0", "--wss", "127.0.0.1:0", "--tls-cert", tls.cert, "--tls-key", tls.key);
  }
  const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  // The last few kilobytes of its log, for the error when it does not start.
  let log = "";
  child.stderr.on("data", (chunk) => (log = (log + chunk).slice(-4096)));
  const broker = { child, tcp: null, ws: null, mqtts: null, wss: null };
  await new Promise((done, reject) => {
    const fail = (e) => {
      child.kill("SIGKILL");
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
  broker.stop = () => child.kill("SIGKILL");
  return broker;
}
