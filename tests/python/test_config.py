"""The command line and the configuration file, as an operator meets them."""

import subprocess

import pytest

from broker import HOST, fanfare_bin

pytestmark = pytest.mark.fanfare_only


def run(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(fanfare_bin()), *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("text, names", [
    ("[limits]\npacket_bytes = 5\n", ["packet_bytes", "line 2"]),          # unknown key
    ("[limits]\ninflight_max = \"many\"\n", ["inflight_max", "line 2"]),   # wrong type
    ("[limits]\nqueue_bytes_max = 0\n", ["queue_bytes_max"]),              # out of range
    ("tcp = \"localhost\"\n", ["tcp"]),                                     # not an address
    ("shards = 2\nlog_level = \"loud\"\n", ["log_level"]),                 # not a level
])
def test_invalid_config_exits_naming_the_key(tmp_path, text, names):
    cfg = tmp_path / "fanfare.toml"
    cfg.write_text(text)
    result = run("--config", str(cfg), "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--admin", "off")
    assert result.returncode != 0
    assert "ready" not in result.stdout
    for name in names:
        assert name in result.stderr, result.stderr


def test_missing_config_file_is_named(tmp_path):
    missing = tmp_path / "nope.toml"
    result = run("--config", str(missing))
    assert result.returncode != 0
    assert str(missing) in result.stderr


def test_unknown_flag_is_refused():
    result = run("--frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr


def test_help_and_version():
    assert "--config" in run("--help").stdout
    assert run("--version").stdout.startswith("fanfare ")


def test_flags_override_the_file(start, tmp_path, clients):
    # The file asks for /from-file; the harness passes --ws-path, which wins.
    broker = start(config={"ws_path": "/from-file"}, ws_path="/from-flag")
    assert broker.ws_path == "/from-flag"
    c = clients(broker, "ws")
    c.subscribe("t/flags", 0)


@pytest.mark.parametrize("flags, flag", [
    (["--shards", "0"], "`--shards`"),
    (["--log-level", "loud"], "`--log-level`"),
    (["--ws-path", "mqtt"], "`--ws-path`"),
])
def test_bad_flag_is_named_as_typed(tmp_path, flags, flag):
    result = run("--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--admin", "off", *flags)
    assert result.returncode != 0
    assert flag in result.stderr, result.stderr


def test_bad_file_value_is_named_by_its_key(tmp_path):
    """The same value from the file is named by the file's key."""
    cfg = tmp_path / "fanfare.toml"
    cfg.write_text("shards = 0\n")
    result = run("--config", str(cfg), "--tcp", f"{HOST}:0", "--ws", f"{HOST}:0", "--admin", "off")
    assert result.returncode != 0
    assert "`shards`" in result.stderr, result.stderr


def test_check_config_prints_the_effective_configuration(tmp_path):
    cfg = tmp_path / "good.toml"
    cfg.write_text('log_level = "debug"\n[limits]\ninflight_max = 5\n')
    result = run("check-config", str(cfg))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'log_level = "debug"' in lines           # from the file
    assert "inflight_max = 5" in lines              # from the file, in [limits]
    assert 'ws_path = "/mqtt"' in lines             # a default
    assert "[limits]" in lines and "[tls]" in lines and "[auth]" in lines
    # What it prints is a configuration the broker reads back as is.
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert run("check-config", str(again)).stdout == result.stdout


@pytest.mark.parametrize("text, names", [
    ('[limits]\ninflight_max = "many"\n', ["inflight_max", "line 2"]),
    ('log_level = "loud"\n', ["log_level"]),
    ('[auth]\npassword_file = "{missing}"\n', ["auth.password_file", "missing.passwd"]),
    ('mqtts = "127.0.0.1:0"\n[tls]\ncert_file = "{missing}"\nkey_file = "{missing}"\n',
     ["missing.passwd"]),
])
def test_check_config_reports_errors(tmp_path, text, names):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text.replace("{missing}", str(tmp_path / "missing.passwd")))
    result = run("check-config", str(cfg))
    assert result.returncode != 0
    assert result.stdout == ""
    for name in names:
        assert name in result.stderr, result.stderr
