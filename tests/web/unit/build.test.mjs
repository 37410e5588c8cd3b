// The minified client the broker serves (web/dist/, compiled into the binary) is the one
// scripts/build-web.mjs makes from the current source, and works.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

import { DIST, stale } from "../../../scripts/build-web.mjs";

test("web/dist/ is up to date with web/fanfare.js (else: node scripts/build-web.mjs)", async () => {
  assert.deepEqual(await stale(), []);
});

test("the minified classic script exports the API", () => {
  const require = createRequire(import.meta.url);
  const Fanfare = require(join(DIST, "fanfare.js"));
  for (const name of ["connect", "Client", "matches", "text"]) {
    assert.equal(typeof Fanfare[name], "function", name);
  }
  assert.equal(Fanfare.matches("scores/+", "scores/final"), true);
});

test("the minified ES module exports the API on its own", async () => {
  const source = readFileSync(join(DIST, "fanfare.mjs"), "utf8");
  assert.doesNotMatch(source, /\bimport\b/);
  const m = await import(pathToFileURL(join(DIST, "fanfare.mjs")).href);
  for (const name of ["connect", "Client", "matches", "text"]) {
    assert.equal(typeof m[name], "function", name);
  }
  assert.equal(m.default.matches("a/#", "a/b"), true);
});
