"""`fanfare passwd`, as an operator runs it: batch and prompted forms, deletion, what the
file looks like afterwards, and files made by Mosquitto's own `mosquitto_passwd`."""

from __future__ import annotations

import base64
import os
import pty
import re
import select
import shutil
import stat
import subprocess
import termios
import time

import pytest

from broker import fanfare_bin

pytestmark = pytest.mark.fanfare_only

# The crate's defaults, as `fanfare passwd --help` and the README promise.
ARGON2ID_LINE = re.compile(
    r"^(?P<user>[^:]+):\$argon2id\$v=19\$m=19456,t=2,p=1\$"
    r"(?P<salt>[A-Za-z0-9+/]{22})\$(?P<hash>[A-Za-z0-9+/]{43})$"
)
PROMPT_TIMEOUT_S = 10.0


def passwd(*args: str) -> subprocess.CompletedProcess:
    # A session of its own, so that no terminal is there to prompt on.
    return subprocess.run([str(fanfare_bin()), "passwd", *args], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL,
                          start_new_session=True)


def entries(path) -> dict[str, str]:
    """user -> hash for each entry line of the file."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            user, _, hash_ = line.partition(":")
            found[user] = hash_
    return found


def argon2id_matches(line: str, password: bytes) -> bool:
    """Checks a written entry with another argon2id implementation (OpenSSL's, through
    `cryptography`); skips the test where that version of `cryptography` lacks it."""
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
    except ImportError:
        pytest.skip("this `cryptography` has no Argon2id (it came in 44)")
    m = ARGON2ID_LINE.match(line)
    assert m, line

    def unpadded(text: str) -> bytes:
        return base64.b64decode(text + "=" * (-len(text) % 4))

    kdf = Argon2id(salt=unpadded(m["salt"]), length=32, iterations=2, lanes=1,
                   memory_cost=19456)
    return kdf.derive(password) == unpadded(m["hash"])


def test_create_add_change_delete(tmp_path):
    pw = tmp_path / "passwd"
    result = passwd("-c", "-b", str(pw), "alice", "correct horse")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(pw.stat().st_mode) == 0o600
    lines = pw.read_text().splitlines()
    assert len(lines) == 1 and ARGON2ID_LINE.match(lines[0]), lines
    assert argon2id_matches(lines[0], b"correct horse")
    assert not argon2id_matches(lines[0], b"correct horsE")

    assert passwd("-b", str(pw), "bob", "hunter2").returncode == 0
    after_add = pw.read_text().splitlines()
    assert after_add[0] == lines[0]
    assert after_add[1].startswith("bob:$argon2id$")
    assert argon2id_matches(after_add[1], b"hunter2")

    # Changing alice rewrites her line in place, with a fresh salt.
    assert passwd("-b", str(pw), "alice", "new one").returncode == 0
    after_change = pw.read_text().splitlines()
    assert [line.split(":")[0] for line in after_change] == ["alice", "bob"]
    assert after_change[0] != lines[0]
    assert after_change[1] == after_add[1]
    assert argon2id_matches(after_change[0], b"new one")

    assert passwd("-D", str(pw), "alice").returncode == 0
    assert pw.read_text().splitlines() == [after_add[1]]


def test_other_lines_mode_and_symlink_are_kept(tmp_path):
    pw = tmp_path / "passwd"
    assert passwd("-c", "-b", str(pw), "alice", "a").returncode == 0
    alice = pw.read_bytes()
    pw.write_bytes(b"# the demo's users\n\n" + alice + b"   # indented comment\r\n")
    pw.chmod(0o640)
    link = tmp_path / "link"
    link.symlink_to(pw)

    assert passwd("-b", str(link), "bob", "b").returncode == 0
    assert link.is_symlink()
    text = pw.read_bytes()
    assert text.startswith(b"# the demo's users\n\n" + alice + b"   # indented comment\r\nbob:")
    assert stat.S_IMODE(pw.stat().st_mode) == 0o640
    # The rename left nothing behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "passwd"]


def test_c_replaces_an_existing_file(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("# old\nnot even a valid line\n")
    assert passwd("-c", "-b", str(pw), "carol", "c").returncode == 0
    assert list(entries(pw)) == ["carol"]
    assert "# old" not in pw.read_text()


def test_refusals_leave_the_file_unchanged(tmp_path):
    pw = tmp_path / "passwd"
    assert passwd("-c", "-b", str(pw), "alice", "a").returncode == 0
    before = pw.read_bytes()
    for args, code, says in [
        (("-D", str(pw), "nobody"), 1, "no such user"),
        (("-b", str(pw), "a:b", "x"), 1, "`:`"),
        (("-b", str(pw), "bob", ""), 1, "empty"),
        (("-b", str(pw), "bob"), 2, "FILE USER PASSWORD"),
        (("-D", "-b", str(pw), "alice", "x"), 2, "-D"),
        (("--frobnicate", str(pw), "bob"), 2, "frobnicate"),
        ((str(pw), "bob"), 1, "terminal"),  # no terminal to ask on
    ]:
        result = passwd(*args)
        assert result.returncode == code, (args, result.stderr)
        assert says in result.stderr, (args, result.stderr)
        assert pw.read_bytes() == before, args

    missing = tmp_path / "missing"
    result = passwd("-b", str(missing), "bob", "b")
    assert result.returncode == 1 and "-c" in result.stderr and str(missing) in result.stderr
    assert not missing.exists()


def test_a_damaged_file_is_named_not_rewritten(tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text("# users\nalice:plain-text-secret\n")
    result = passwd("-b", str(pw), "bob", "b")
    assert result.returncode == 1
    assert str(pw) in result.stderr and "line 2" in result.stderr, result.stderr
    assert "plain-text-secret" not in result.stderr
    assert pw.read_text() == "# users\nalice:plain-text-secret\n"


def test_help():
    result = passwd("--help")
    assert result.returncode == 0
    for option in ("-c", "-b", "-D", "argon2id"):
        assert option in result.stdout


class Terminal:
    """`fanfare passwd` on a pseudo-terminal, as a person at a shell runs it."""

    def __init__(self, *args: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execv(str(fanfare_bin()), [str(fanfare_bin()), "passwd", *args])
        self.seen = b""

    def expect(self, text: bytes) -> None:
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while text not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on the terminal; saw {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 1024)
                assert chunk, f"terminal closed before {text!r}; saw {self.seen!r}"
                self.seen += chunk

    def type_secret(self, line: str) -> None:
        """Types once the command has turned echo off, as a person would after the prompt
        (what is typed before that is echoed by the terminal, whoever reads it)."""
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while termios.tcgetattr(self.fd)[3] & termios.ECHO:
            assert time.monotonic() < deadline, "echo never turned off"
            time.sleep(0.01)
        os.write(self.fd, line.encode() + b"\r")

    def wait(self) -> int:
        """The exit status, once the command has closed the terminal."""
        deadline = time.monotonic() + PROMPT_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the command did not end; saw {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 1024)
            except OSError:  # EIO: the command ended and the terminal closed
                break
            if not chunk:
                break
            self.seen += chunk
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


def test_prompted_password_is_asked_twice_without_echo(tmp_path):
    pw = tmp_path / "passwd"
    term = Terminal("-c", str(pw), "dave")
    term.expect(b"Password: ")
    term.type_secret("typed secret")
    term.expect(b"again: ")
    term.type_secret("typed secret")
    assert term.wait() == 0, term.seen
    assert b"typed secret" not in term.seen
    [line] = pw.read_text().splitlines()
    assert argon2id_matches(line, b"typed secret")


def test_prompted_passwords_that_differ_are_refused(tmp_path):
    pw = tmp_path / "passwd"
    assert passwd("-c", "-b", str(pw), "alice", "a").returncode == 0
    before = pw.read_bytes()
    term = Terminal(str(pw), "erin")
    term.expect(b"Password: ")
    term.type_secret("one")
    term.expect(b"again: ")
    term.type_secret("two")
    assert term.wait() == 1, term.seen
    assert b"do not match" in term.seen
    assert pw.read_bytes() == before


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None,
                    reason="mosquitto_passwd not installed (Debian: apt-get install mosquitto)")
def test_a_mosquitto_file_is_read_and_its_lines_kept(tmp_path):
    pw = tmp_path / "passwd"
    made_by_mosquitto = [
        ["mosquitto_passwd", "-c", "-b", str(pw), "alice", "correct horse"],   # $7$
        ["mosquitto_passwd", "-H", "sha512", "-b", str(pw), "bob", "hunter2"],  # $6$
        ["mosquitto_passwd", "-b", str(pw), "carol", "c"],
    ]
    for command in made_by_mosquitto:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    original = pw.read_text().splitlines()
    assert original[0].startswith("alice:$7$") and original[1].startswith("bob:$6$")

    # fanfare reads every entry (it refuses to rewrite a file it cannot parse), keeps them
    # byte for byte, and changes or removes only the one named.
    assert passwd("-b", str(pw), "dave", "d").returncode == 0
    assert passwd("-b", str(pw), "carol", "new").returncode == 0
    assert passwd("-D", str(pw), "bob").returncode == 0
    lines = pw.read_text().splitlines()
    assert lines[0] == original[0]
    assert [line.split(":")[0] for line in lines] == ["alice", "carol", "dave"]
    assert lines[1].startswith("carol:$argon2id$") and lines[2].startswith("dave:$argon2id$")
