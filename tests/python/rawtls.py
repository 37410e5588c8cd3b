"""A TLS client whose every byte on the wire the test controls.

Python's `ssl` runs over memory buffers here (`SSLContext.wrap_bio`), and this module moves
the bytes between them and a plain socket. So a test can send half a ClientHello, raw bytes
after a completed handshake, or an alert record of its own, on the same connection that does
ordinary TLS. `TlsConn` has the interface `rawmqtt.Mqtt` reads and writes packets through.
Every read takes a deadline.

A TLS 1.3 record after the handshake is encrypted, so an alert sent mid-stream must be too:
with a context made by `client_context(keylog=...)`, `TlsConn.sealed_alert` encrypts one under
the client's application traffic key, derived (RFC 8446 §7.1, §7.3) from the secret that
OpenSSL writes to the key log, with the next record sequence number (§5.3).
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from rawmqtt import assert_loopback

# TLS record content types, RFC 8446 §5.1.
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
# Alert levels and descriptions, RFC 8446 §6.
WARNING = 1
FATAL = 2
CLOSE_NOTIFY = 0
HANDSHAKE_FAILURE = 40
INTERNAL_ERROR = 80

# The TLS 1.3 cipher suites (RFC 8446 §B.4): their AEAD, key length and hash.
TLS13_SUITES = {
    "TLS_AES_128_GCM_SHA256": (AESGCM, 16, hashes.SHA256),
    "TLS_AES_256_GCM_SHA384": (AESGCM, 32, hashes.SHA384),
    "TLS_CHACHA20_POLY1305_SHA256": (ChaCha20Poly1305, 32, hashes.SHA256),
}


def record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    """One TLS record: type, legacy version, length, body."""
    return struct.pack("!BHH", content_type, version, len(body)) + body


def count_records(data: bytes, content_type: int) -> int:
    """How many records of `content_type` `data` holds; it must hold whole records."""
    count, at = 0, 0
    while at < len(data):
        assert at + 5 <= len(data), "a record header cut short"
        length = int.from_bytes(data[at + 3:at + 5], "big")
        count += data[at] == content_type
        at += 5 + length
    assert at == len(data), "a record cut short"
    return count


def alert_record(level: int, description: int) -> bytes:
    """A plaintext alert record, as sent before the handshake's keys are in use."""
    return record(ALERT, bytes([level, description]))


def hkdf_expand_label(hash_type, secret: bytes, label: str, length: int) -> bytes:
    """HKDF-Expand-Label with an empty context (RFC 8446 §7.1)."""
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(hash_type(), length, info).derive(secret)


def client_context(ca_file=None, cert=None, *, alpn: list[str] | None = None,
                   verify: bool = True, keylog: Path | None = None) -> ssl.SSLContext:
    """A client context trusting `ca_file`, presenting `cert` (a `certs.Issued`) if given.
    With `keylog`, TLS 1.3 only, and its secrets written there (for `TlsConn.sealed_alert`;
    one connection per such context)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if keylog is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.keylog_filename = str(keylog)
    if verify:
        ctx.load_verify_locations(cafile=str(ca_file))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class TlsConn:
    """TLS over a plain socket to the broker, through memory buffers."""

    def __init__(self, host: str, port: int, ctx: ssl.SSLContext,
                 server_hostname: str | None = None, timeout: float = 5.0):
        assert_loopback(host)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # `ip:port` of this end, as the broker's log names the peer.
        self.local = "%s:%d" % self.sock.getsockname()[:2]
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.eof = False
        # The ssl error that ended the connection, if one did (an alert from the broker).
        self.error: ssl.SSLError | None = None
        self.keylog = ctx.keylog_filename
        # Application data records sent since the handshake: the next one's sequence number.
        self.records_sent: int | None = None

    # -- bytes on the wire
    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the socket, past the TLS layer."""
        self.sock.sendall(data)

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            if self.records_sent is not None:
                self.records_sent += count_records(data, APPLICATION_DATA)
            self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Moves what the socket has into the TLS layer; False on EOF."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing from the broker in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        except socket.timeout as e:
            raise TimeoutError("nothing from the broker in time") from e
        if not data:
            self.eof = True
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    def recv_raw(self, timeout: float = 5.0) -> bytes:
        """The next bytes on the socket, left out of the TLS layer; b'' on EOF."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""
        except socket.timeout as e:
            raise TimeoutError("nothing from the broker in time") from e

    def client_hello(self) -> bytes:
        """The records of this client's first flight (the ClientHello), not sent."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        return self.outgoing.read()

    def handshake(self, timeout: float = 5.0) -> None:
        """The whole handshake; raises the ssl error if the broker refuses it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.tls.do_handshake()
                self._flush()  # the client's Finished, under the handshake keys
                self.records_sent = 0
                return
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill(deadline):
                    self.tls.do_handshake()  # raises: the broker closed mid-handshake
            except ssl.SSLError:
                self._flush()  # the alert this client sends as it gives up
                raise

    def sealed_alert(self, level: int, description: int) -> bytes:
        """An alert record as this client's TLS layer would seal its next record: sent with
        `send_raw`, the broker reads a genuine alert from the client mid-stream."""
        assert self.records_sent is not None, "the handshake is not done"
        assert self.keylog, "the context has no keylog"
        suite = self.tls.cipher()[0]
        aead, key_bytes, hash_type = TLS13_SUITES[suite]
        secret = None
        for line in Path(self.keylog).read_text().splitlines():
            if line.startswith("CLIENT_TRAFFIC_SECRET_0 "):
                secret = bytes.fromhex(line.split()[2])
        assert secret is not None, "no client traffic secret in the key log"
        key = hkdf_expand_label(hash_type, secret, "key", key_bytes)
        iv = hkdf_expand_label(hash_type, secret, "iv", 12)
        nonce = bytes(a ^ b for a, b in zip(iv, self.records_sent.to_bytes(12, "big")))
        inner = bytes([level, description, ALERT])  # TLSInnerPlaintext, no padding
        header = struct.pack("!BHH", APPLICATION_DATA, 0x0303, len(inner) + 16)
        self.records_sent += 1
        return header + aead(key).encrypt(nonce, inner, header)

    # -- the interface rawmqtt.Mqtt uses
    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv_some(self, timeout: float) -> bytes:
        """Plaintext that arrived within timeout; b'' on close_notify, EOF or an alert."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.tls.read(65536)
                self._flush()  # TLS 1.3 may answer post-handshake messages
                return data
            except ssl.SSLWantReadError:
                if self.eof:
                    return b""
                self._fill(deadline)
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as e:
                self.error = e
                return b""

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Reads until the broker closes the socket; returns the raw bytes it sent meanwhile
        (alerts, for one), without going through the TLS layer."""
        deadline = time.monotonic() + timeout
        seen = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the broker did not close the connection; got {seen!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return seen
            except socket.timeout:
                continue
            if not data:
                return seen
            seen += data

    def unwrap(self) -> None:
        """Sends close_notify (an encrypted warning alert) and stops using TLS."""
        try:
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        self._flush()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()
