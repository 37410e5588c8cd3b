// Test certificates, made at test time with the openssl command line tool: a CA and a server
// certificate it signs for `localhost` and `127.0.0.1`, all ECDSA P-256. Nothing here is ever
// committed; the files live in a temporary directory the caller removes.
//
// Only node's built-ins are imported, so tests/web uses this file as well.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const OPENSSL_TIMEOUT_MS = 10_000;

function openssl(args, cwd) {
  try {
    execFileSync("openssl", args, { cwd, timeout: OPENSSL_TIMEOUT_MS, stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    if (e.code === "ENOENT") throw new Error("the openssl command is needed to make test certificates (apt-get install openssl)");
    throw new Error(`openssl ${args[0]} failed: ${e.stderr ?? e.message}`);
  }
}

// A positive serial number, random so that two runs never issue the same one.
const serial = () => "0x1" + randomBytes(15).toString("hex");

/** A self-signed CA in `dir`: `<name>.pem` and `<name>.key`. Returns their paths. */
export function makeCa(dir, name = "ca", commonName = "fanfare test CA") {
  const cert = join(dir, `${name}.pem`), key = join(dir, `${name}.key`);
  openssl([
    "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-keyout", key, "-out", cert, "-days", "2", "-set_serial", serial(), "-subj", `/CN=${commonName}`,
    "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    "-addext", "subjectKeyIdentifier=hash",
  ], dir);
  return { cert, key };
}

/**
 * A leaf certificate signed by `ca` in `dir`: `<name>.pem` and `<name>.key`, for the given
 * names (`DNS:` or `IP:` entries of its subjectAltName), for TLS servers.
 */
export function makeLeaf(dir, ca, name, options = {}) {
  const { commonName = "localhost", altNames = ["DNS:localhost", "IP:127.0.0.1"] } = options;
  const cert = join(dir, `${name}.pem`), key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`), ext = join(dir, `${name}.ext`);
  openssl([
    "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
    "-keyout", key, "-out", csr, "-subj", `/CN=${commonName}`,
  ], dir);
  writeFileSync(ext, [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth",
    `subjectAltName=${altNames.join(",")}`,
    "subjectKeyIdentifier=hash",
    "authorityKeyIdentifier=keyid",
  ].join("\n") + "\n");
  openssl([
    "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", serial(),
    "-days", "2", "-sha256", "-extfile", ext, "-out", cert,
  ], dir);
  return { cert, key };
}

/**
 * The usual set in `dir`: the test CA (`ca`), the broker's certificate for localhost and
 * 127.0.0.1 (`server`), and a second CA that signed nothing the broker serves (`otherCa`), for
 * clients that must refuse the broker. PEM contents are read into `caPem` and `otherCaPem`.
 */
export function makeTestCerts(dir) {
  const ca = makeCa(dir, "ca", "fanfare test CA");
  const server = makeLeaf(dir, ca, "server");
  const otherCa = makeCa(dir, "other-ca", "fanfare untrusted CA");
  return {
    ca,
    server,
    otherCa,
    caPem: readFileSync(ca.cert),
    otherCaPem: readFileSync(otherCa.cert),
  };
}
