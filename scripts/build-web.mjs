#!/usr/bin/env node
// Builds the minified fanfare.js that the broker serves, from the readable source in web/:
//   web/fanfare.js   -> web/dist/fanfare.js    (classic script, served at /fanfare.js)
//   web/fanfare.mjs  -> web/dist/fanfare.mjs   (ES module, served at /fanfare.mjs; the source
//                       imports ./fanfare.js, the build holds it, so a page loads one file)
// The broker compiles web/dist/ into its binary (src/http/site.rs) and serves the source at
// /fanfare.src.js. The outputs are committed; tests/web/unit/build.test.mjs fails when they
// differ from what this script makes, so edit web/fanfare.js, then run:
//   node scripts/build-web.mjs           (needs `npm ci` in tests/web, which pins terser)
//   node scripts/build-web.mjs --check   (exit 1 if web/dist/ is out of date)
import { createRequire } from "node:module";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const root = fileURLToPath(new URL("..", import.meta.url));
const web = join(root, "web");
export const DIST = join(web, "dist");

// terser is a dev dependency of the web tests, pinned in tests/web/package-lock.json: the same
// version always makes the same bytes.
const { minify } = createRequire(join(root, "tests/web/package.json"))("terser");

const OPTIONS = {
  compress: { passes: 2 },
  mangle: true,
  format: { comments: false },
};

const CLASSIC_IMPORT = 'import "./fanfare.js";';

function preamble(served) {
  return `/* fanfare.js, minified: the readable source is /fanfare.src.js (${served}) */`;
}

/** The built files: name in web/dist/ -> content. */
export async function build() {
  const classic = readFileSync(join(web, "fanfare.js"), "utf8");
  const module = readFileSync(join(web, "fanfare.mjs"), "utf8");
  if (module.split(CLASSIC_IMPORT).length !== 2) {
    throw new Error(`web/fanfare.mjs must hold \`${CLASSIC_IMPORT}\` exactly once`);
  }
  const inlined = module.replace(CLASSIC_IMPORT, () => classic);
  const js = await minify(classic, {
    ...OPTIONS,
    format: { ...OPTIONS.format, preamble: preamble("classic script") },
  });
  const mjs = await minify(inlined, {
    ...OPTIONS,
    module: true,
    format: { ...OPTIONS.format, preamble: preamble("ES module") },
  });
  return { "fanfare.js": js.code + "\n", "fanfare.mjs": mjs.code + "\n" };
}

/** The built files that differ from those in web/dist/ (missing ones included). */
export async function stale() {
  const built = await build();
  return Object.keys(built).filter((name) => {
    try {
      return readFileSync(join(DIST, name), "utf8") !== built[name];
    } catch {
      return true;
    }
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes("--check")) {
    const names = await stale();
    if (names.length) {
      console.error(`web/dist/ is out of date (${names.join(", ")}): run node scripts/build-web.mjs`);
      process.exit(1);
    }
  } else {
    mkdirSync(DIST, { recursive: true });
    for (const [name, code] of Object.entries(await build())) {
      writeFileSync(join(DIST, name), code);
      console.log(`web/dist/${name}: ${code.length} bytes`);
    }
  }
}
