"""Who may connect, publish and subscribe: the password file (made by `fanfare passwd` and by
`mosquitto_passwd`), JWTs in the password field, the ACL file, and SIGHUP reloading them.

CONNACK codes as paho reports them: MQTT 3.1.1's return codes 4 and 5 arrive as the MQTT 5
reason codes 0x86 (134) and 0x87 (135). Tokens are made here with the standard library and
`cryptography` (HS256 and ES256), so no JWT library is needed to test one. Debian's
`mosquitto_pub`/`mosquitto_sub` log in with a password-file user (skipped when missing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import shutil
import subprocess
import threading
import time

import paho.mqtt.client as paho
import pytest

from broker import fanfare_bin
from client import TIMEOUT_S, Client
from client5 import Client5

pytestmark = pytest.mark.skipif(
    __import__("broker").broker_kind() != "fanfare", reason="fanfare's own auth settings"
)

BAD_CREDENTIALS = 134  # 0x86; 3.1.1 return code 4
NOT_AUTHORIZED = 135  # 0x87; 3.1.1 return code 5


def passwd(*args: str) -> None:
    subprocess.run([str(fanfare_bin()), "passwd", *args], check=True, capture_output=True,
                   timeout=30)


def attempt(broker, transport="tcp", username=None, password=None, version=paho.MQTTv311,
            will=None) -> tuple[Client, int]:
    """Connects with these credentials; returns the client and its CONNACK code."""
    if version == paho.MQTTv5:
        c = Client5(broker, transport, will=will)
    else:
        c = Client(broker, transport, will=will)
    if username is not None or password is not None:
        c.paho.username_pw_set(username, password)
    c.paho.connect(broker.host, broker.port(transport), 30)
    c._start_loop()
    try:
        _, code = c.connacks.get(timeout=TIMEOUT_S)
    except queue.Empty:
        raise AssertionError("no CONNACK") from None
    return c, code


@pytest.fixture
def session():
    """Clients made by `attempt`, closed at teardown."""
    made: list[Client] = []

    def _attempt(*args, **kw) -> tuple[Client, int]:
        c, code = attempt(*args, **kw)
        made.append(c)
        return c, code

    yield _attempt
    for c in made:
        c.close()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret: bytes, claims: dict, header: dict | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


def unsigned(claims: dict) -> str:
    """A token with `alg: none` and no signature."""
    head = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}."


def es256(private_key, claims: dict, kid: str | None = None) -> str:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    header = {"alg": "ES256", "typ": "JWT"} | ({"kid": kid} if kid else {})
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    der = private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def now() -> int:
    return int(time.time())


# -- passwords


def test_password_file_written_by_fanfare_passwd(start, session, tmp_path, transport):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "s3cret-pass")
    broker = start(config={"auth": {"password_file": file}})

    _, ok = session(broker, transport, "backend", "s3cret-pass")
    _, wrong = session(broker, transport, "backend", "wrong")
    _, unknown = session(broker, transport, "nobody", "s3cret-pass")
    _, anonymous = session(broker, transport)
    assert (ok, wrong, unknown, anonymous) == (0, BAD_CREDENTIALS, BAD_CREDENTIALS,
                                               NOT_AUTHORIZED)
    log = broker.log(tail=None)
    assert "CONNECT refused: unknown user or wrong password" in log
    assert "CONNECT refused: anonymous clients are not allowed" in log
    assert "s3cret-pass" not in log and "wrong" not in log.replace("wrong password", "")


def test_mqtt5_gets_reason_codes(start, session, tmp_path):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "pw")
    broker = start(config={"auth": {"password_file": file}})
    _, wrong = session(broker, username="backend", password="nope", version=paho.MQTTv5)
    _, anonymous = session(broker, version=paho.MQTTv5)
    assert (wrong, anonymous) == (BAD_CREDENTIALS, NOT_AUTHORIZED)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd missing")
def test_a_mosquitto_password_file_works_unchanged(start, session, tmp_path):
    file = tmp_path / "mosquitto-passwords"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(file), "legacy", "old-pass"], check=True,
                   capture_output=True, timeout=30)
    broker = start(config={"auth": {"password_file": file}})
    _, ok = session(broker, username="legacy", password="old-pass")
    _, wrong = session(broker, username="legacy", password="new-pass")
    assert (ok, wrong) == (0, BAD_CREDENTIALS)


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None,
                    reason="mosquitto_pub/mosquitto_sub missing (Debian's mosquitto-clients)")
def test_mosquitto_clients_with_a_password_file_user(start, tmp_path, topic):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "s3cret-pass")
    broker = start(config={"auth": {"password_file": file}})

    def tool(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([name, "-h", broker.host, "-p", str(broker.port("tcp")),
                               "-u", "backend", *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)

    # Retained, so the subscriber started afterwards gets it without racing the publish.
    pub = tool("mosquitto_pub", "-P", "s3cret-pass", "-q", "1", "-r", "-t", topic, "-m", "6-4 6-3")
    assert pub.returncode == 0, pub.stderr
    sub = tool("mosquitto_sub", "-P", "s3cret-pass", "-q", "1", "-C", "1", "-W", "10", "-t", topic)
    assert (sub.returncode, sub.stdout) == (0, "6-4 6-3\n"), sub.stderr

    for version in ("mqttv311", "mqttv5"):
        refused = tool("mosquitto_pub", "-V", version, "-P", "wrong", "-t", topic, "-m", "x")
        assert refused.returncode != 0, version
        # 3.1.1: "Connection Refused: bad user name or password."; 5: "Bad User Name or Password"
        assert "bad user name or password" in refused.stderr.lower(), (version, refused.stderr)
    assert "s3cret-pass" not in broker.log(tail=None)


def test_a_subscriber_keeps_receiving_while_200_passwords_are_verified(start, clients, tmp_path,
                                                                        topic):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "pw")
    broker = start(config={"auth": {"password_file": file, "allow_anonymous": True,
                                     "verified_cache_entries_max": 0}})
    subscriber = clients(broker)
    subscriber.subscribe(topic)
    publisher = clients(broker)

    codes: list[int] = []
    storm: list[Client] = []

    def connect_many():
        for _ in range(200):
            c = Client(broker, "tcp")
            c.paho.username_pw_set("backend", "pw")
            c.paho.connect_async(broker.host, broker.port("tcp"), 30)
            c.paho.reconnect()
            c._start_loop()
            storm.append(c)
        for c in storm:
            codes.append(c.connacks.get(timeout=60)[1])

    thread = threading.Thread(target=connect_many)
    thread.start()
    try:
        for n in range(50):
            publisher.publish(topic, f"score {n}")
            assert subscriber.wait_for_message().payload == f"score {n}".encode()
            time.sleep(0.02)
        thread.join(90)
    finally:
        for c in storm:
            c.close()
    assert codes == [0] * 200


# -- tokens


def test_hs256_tokens_and_every_refusal(start, session, tmp_path):
    secret = b"a shared secret of enough length!"
    (tmp_path / "secret").write_bytes(secret + b"\n")
    broker = start(config={"auth": {"jwt_secret_file": tmp_path / "secret",
                                     "jwt_audience": "scores"}})
    good = {"sub": "browser-1", "aud": "scores", "exp": now() + 600}
    cases = {
        "valid": (hs256(secret, good), 0),
        "expired": (hs256(secret, good | {"exp": now() - 600}), BAD_CREDENTIALS),
        "not yet valid": (hs256(secret, good | {"nbf": now() + 600}), BAD_CREDENTIALS),
        "wrong audience": (hs256(secret, good | {"aud": "other"}), BAD_CREDENTIALS),
        "alg none": (unsigned(good), BAD_CREDENTIALS),
        "tampered": (hs256(secret, good)[:-4] + "AAAA", BAD_CREDENTIALS),
        "bad base64": ("@@@.@@@.@@@", BAD_CREDENTIALS),
        # A password holds at most 65 535 bytes, so a 100 KB token cannot even be sent: 50 KB
        # (base64 of 38 000 bytes) is past `jwt_token_bytes_max` (8 KiB) all the same.
        "50 KB": (hs256(secret, good | {"pad": "x" * 38_000}), BAD_CREDENTIALS),
        "other secret": (hs256(b"another secret entirely, longer", good), BAD_CREDENTIALS),
    }
    got = {name: session(broker, username="ignored", password=token)[1]
           for name, (token, _) in cases.items()}
    assert got == {name: code for name, (_, code) in cases.items()}
    assert broker.log(tail=None).count("CONNECT refused: ") == len(cases) - 1


def test_es256_token_from_a_pem_key_and_unknown_kid_from_jwks(start, session, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "es256.pem").write_bytes(pem)
    broker = start(config={"auth": {"jwt_public_key_files": [tmp_path / "es256.pem"]}})
    claims = {"sub": "browser-2", "exp": now() + 600}
    _, ok = session(broker, "ws", username="browser", password=es256(key, claims))
    other = ec.generate_private_key(ec.SECP256R1())
    _, forged = session(broker, "ws", username="browser", password=es256(other, claims))
    assert (ok, forged) == (0, BAD_CREDENTIALS)

    numbers = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
                      "x": b64url(numbers.x.to_bytes(32, "big")),
                      "y": b64url(numbers.y.to_bytes(32, "big"))}]}
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    broker = start(config={"auth": {"jwks_file": tmp_path / "jwks.json"}})
    _, known = session(broker, username="browser", password=es256(key, claims, kid="k1"))
    _, unknown = session(broker, username="browser", password=es256(key, claims, kid="k2"))
    assert (known, unknown) == (0, BAD_CREDENTIALS)


def test_a_token_that_expires_ends_the_connection_with_0xa0(start, tmp_path):
    secret = b"a shared secret of enough length!"
    (tmp_path / "secret").write_bytes(secret)
    broker = start(config={"auth": {"jwt_secret_file": tmp_path / "secret", "jwt_leeway_s": 0}})
    token = hs256(secret, {"sub": "browser-3", "exp": now() + 2})
    reasons: queue.Queue = queue.Queue()
    c = Client5(broker)
    c.paho.username_pw_set("browser", token)
    c.paho.on_disconnect = lambda _c, _u, _f, rc, _p: reasons.put(rc.value)
    c.paho.connect(broker.host, broker.port("tcp"), 30)
    c._start_loop()
    try:
        assert c.connacks.get(timeout=TIMEOUT_S)[1] == 0
        assert reasons.get(timeout=10) == 0xA0
    finally:
        c.close()


# -- topic rules

ACL = """\
# anonymous browsers read the scores
topic read scores/#

user backend
topic readwrite scores/#
topic write alerts/#

# everyone has a room of their own, and every client a mailbox
pattern readwrite rooms/%u/#
pattern read mailbox/%c/#
"""


@pytest.fixture
def acl_broker(start, tmp_path):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "pw")
    passwd("-b", str(file), "alice", "pw")
    (tmp_path / "acl").write_text(ACL)
    return start(config={"auth": {"password_file": file, "acl_file": tmp_path / "acl",
                                  "allow_anonymous": True}})


def test_anonymous_reads_scores_and_may_not_publish(acl_broker, session, clients):
    browser, code = session(acl_broker, "ws")
    assert code == 0
    assert browser.subscribe("scores/#") == 0
    assert browser.subscribe("#") == 128
    assert browser.subscribe("+/final") == 128  # partly outside the readable space
    backend, _ = session(acl_broker, username="backend", password="pw")
    backend.publish("scores/final", "2-1", qos=1)
    assert browser.wait_for_message().payload == b"2-1"

    browser.publish("scores/final", "fake", qos=1)  # 3.1.1: acknowledged and dropped
    browser.publish("scores/final", "fake", qos=0)
    browser.expect_no_message()
    v5, _ = session(acl_broker, version=paho.MQTTv5)
    info = v5.paho.publish("scores/final", "fake", qos=1)
    info.wait_for_publish(TIMEOUT_S)
    browser.expect_no_message()
    assert "publishes_denied" in acl_broker_metrics(acl_broker)
    log = acl_broker.log(tail=None)
    # One line per connection: the browser's first denial was its subscription.
    assert log.count('the topic rules deny subscribing to "#"') == 1
    assert log.count('the topic rules deny publishing to "scores/final"') == 1


def acl_broker_metrics(broker) -> str:
    import urllib.request
    with urllib.request.urlopen(f"http://{broker.host}:{broker.port('admin')}/metrics",
                                timeout=5) as r:
        return r.read().decode().replace("fanfare_publishes_denied_total", "publishes_denied")


def test_patterns_give_each_user_their_room(acl_broker, session):
    alice, code = session(acl_broker, username="alice", password="pw")
    assert code == 0
    assert alice.subscribe("rooms/alice/#") == 0
    assert alice.subscribe("rooms/backend/#") == 128
    assert alice.subscribe("rooms/+/chat") == 128
    backend, _ = session(acl_broker, username="backend", password="pw")
    backend.publish("rooms/alice/chat", "for alice")  # backend may not write there
    alice.expect_no_message()
    alice.publish("rooms/alice/chat", "hello me", qos=1)
    assert alice.wait_for_message().payload == b"hello me"


def test_client_id_patterns(acl_broker):
    own = Client(acl_broker, client_id="kiosk-7")
    own.connect()
    try:
        assert own.subscribe("mailbox/kiosk-7/#") == 0
        assert own.subscribe("mailbox/kiosk-8/#") == 128
        assert own.subscribe("mailbox/+/news") == 128
    finally:
        own.close()


def test_a_token_can_carry_the_clients_rules(start, session, tmp_path):
    secret = b"a shared secret of enough length!"
    (tmp_path / "secret").write_bytes(secret)
    broker = start(config={"auth": {"jwt_secret_file": tmp_path / "secret",
                                     "jwt_acl_claim": "acl"}})
    rules = {"sub": ["scores/#"], "pub": ["scores/live/+"]}
    token = hs256(secret, {"sub": "feed", "exp": now() + 600, "acl": rules})
    feed, code = session(broker, username="feed", password=token)
    assert code == 0
    assert feed.subscribe("scores/#") == 0
    assert feed.subscribe("news/#") == 128
    feed.publish("scores/live/1", "1-0", qos=1)
    assert feed.wait_for_message().payload == b"1-0"
    feed.publish("scores/final", "fake", qos=1)
    feed.expect_no_message()


def test_a_will_on_a_forbidden_topic_refuses_the_connect(acl_broker, session):
    _, code = session(acl_broker, will=("scores/final", b"gone", 0, False))
    assert code == NOT_AUTHORIZED


def test_clients_never_publish_to_dollar_topics(acl_broker, session):
    backend, _ = session(acl_broker, username="backend", password="pw")
    watcher, _ = session(acl_broker, username="backend", password="pw")
    watcher.subscribe("$SYS/#")
    backend.publish("$SYS/fake", "x", qos=1)
    watcher.expect_no_message()


def test_a_reload_that_revokes_a_right_ends_the_subscription(acl_broker, session, tmp_path):
    browser, _ = session(acl_broker, "ws")
    assert browser.subscribe("scores/#") == 0
    backend, _ = session(acl_broker, username="backend", password="pw")
    backend.publish("scores/a", "1", qos=1)
    assert browser.wait_for_message().payload == b"1"

    (tmp_path / "acl").write_text(ACL.replace("topic read scores/#\n", ""))
    acl_broker.reload()
    deadline = time.monotonic() + 5
    while "SIGHUP received: password, ACL and JWT key files reloaded" not in acl_broker.log():
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.05)
    backend.publish("scores/a", "2", qos=1)
    browser.expect_no_message()
    assert browser.subscribe("scores/#") == 128


def test_a_bad_file_stops_start_up_naming_it(tmp_path):
    (tmp_path / "acl").write_text("topic sometimes scores/#\n")
    (tmp_path / "f.toml").write_text(f'tcp = "127.0.0.1:0"\n[auth]\nacl_file = "{tmp_path}/acl"\n')
    done = subprocess.run([str(fanfare_bin()), "--config", str(tmp_path / "f.toml")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "acl_file" in done.stderr and "line 1" in done.stderr, done.stderr



def wait_for_reload(broker) -> None:
    deadline = time.monotonic() + 5
    while "SIGHUP received: password, ACL and JWT key files reloaded" not in broker.log():
        assert time.monotonic() < deadline, "no reload"
        time.sleep(0.05)


def test_sighup_reloads_the_password_file_and_the_jwt_secret(start, session, tmp_path):
    file = tmp_path / "passwords"
    passwd("-c", "-b", str(file), "backend", "old-pass")
    old_secret, new_secret = b"the first secret, long enough!!!!", b"the second secret, long enough!!!"
    (tmp_path / "secret").write_bytes(old_secret)
    broker = start(config={"auth": {"password_file": file, "jwt_secret_file": tmp_path / "secret"}})
    claims = {"sub": "browser", "exp": now() + 600}
    assert session(broker, username="backend", password="old-pass")[1] == 0
    assert session(broker, username="jwt", password=hs256(old_secret, claims))[1] == 0

    passwd("-b", str(file), "backend", "new-pass")
    passwd("-b", str(file), "second", "pw")
    (tmp_path / "secret").write_bytes(new_secret)
    broker.reload()
    wait_for_reload(broker)
    assert session(broker, username="backend", password="old-pass")[1] == BAD_CREDENTIALS
    assert session(broker, username="backend", password="new-pass")[1] == 0
    assert session(broker, username="second", password="pw")[1] == 0
    assert session(broker, username="jwt", password=hs256(old_secret, claims))[1] == BAD_CREDENTIALS
    assert session(broker, username="jwt", password=hs256(new_secret, claims))[1] == 0

    # A file that does not load is named, and the policy in force stays.
    file.write_text("backend:not-a-hash\n")
    broker.reload()
    deadline = time.monotonic() + 5
    while "auth files not reloaded" not in broker.log():
        assert time.monotonic() < deadline, "no refusal logged"
        time.sleep(0.05)
    assert "password_file" in broker.log()
    assert session(broker, username="backend", password="new-pass")[1] == 0
