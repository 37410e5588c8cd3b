"""fanfare.js as the broker serves it: the minified build at /fanfare.js and /fanfare.mjs, small
on the wire, and the readable source at /fanfare.src.js."""

import gzip
import http.client

import pytest

from broker import REPO_ROOT

pytestmark = pytest.mark.fanfare_only  # the built-in client is fanfare's

# What the README promises a page downloads for the client, gzipped.
GZIPPED_BYTES_MAX = 5000
HTTP_TIMEOUT_S = 5.0
WEB = REPO_ROOT / "web"


def get(broker, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(broker.host, broker.ws_port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path, built", [("/fanfare.js", "fanfare.js"),
                                         ("/fanfare.mjs", "fanfare.mjs")])
def test_the_client_on_the_wire_is_the_minified_build_within_5_kb(broker, path, built):
    response, body = get(broker, path, {"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.getheader("Content-Encoding") == "gzip"
    assert int(response.getheader("Content-Length")) == len(body)
    assert len(body) <= GZIPPED_BYTES_MAX, f"{path}: {len(body)} bytes gzipped"
    assert gzip.decompress(body) == (WEB / "dist" / built).read_bytes()


def test_the_readable_source_is_served_beside_it(broker):
    response, body = get(broker, "/fanfare.src.js", {})
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/javascript")
    assert response.getheader("Content-Encoding") is None
    assert body == (WEB / "fanfare.js").read_bytes()
    minified = (WEB / "dist" / "fanfare.js").read_bytes()
    assert len(minified) < len(body) // 2
