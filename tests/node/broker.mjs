// Starts the fanfare binary on loopback with kernel-chosen ports, as tests/python/broker.py
// does: reads the "listening ..." lines and "ready" from its standard output, with a deadline.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const START_TIMEOUT_MS = 10_000;

export async function startBroker() {
  const bin = resolve(ROOT, process.env.FANFARE_BIN ?? "target/debug/fanfare");
  const child = spawn(bin, ["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stderr.resume();
  const broker = { child, tcp: null, ws: null };
  await new Promise((done, fail) => {
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
        }
      }
    });
    child.on("exit", (code) => fail(new Error(`broker exited with ${code} before 'ready'`)));
  });
  broker.url = (transport) => (transport === "ws" ? broker.ws : broker.tcp);
  broker.stop = () => child.kill("SIGKILL");
  return broker;
}
