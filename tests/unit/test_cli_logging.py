"""``nsscache-coreweave``'s log handlers never carry the bearer token, at any
verbosity and whatever the token's source (inline ``coreweave_token``,
``coreweave_token_file``, ``NSSCACHE_COREWEAVE_TOKEN``,
``NSSCACHE_SCIM_AUTH_TOKEN``).

The CLI runs in process with the real nsscache configuration loader, whose
``-v`` dump of the whole configuration (``loaded configuration: <Config ...>``)
holds an inline token; the syslog handler writes to a real Unix datagram
socket. (tests/integration/test_security.py runs the same through the
installed commands.)
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest

from nss_cache_coreweave import cli, run

TOKEN = "cw-cli-T0ken-9f3e"
SOURCES = ("coreweave_token", "coreweave_token_file", "NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN")


@pytest.fixture
def restored_logging():
    """Undo what cli._setup_logging does to the process's logging."""
    root = logging.getLogger()
    names = ("nss_cache_coreweave", "urllib3")
    saved = root.level, list(root.handlers), {n: logging.getLogger(n).level for n in names}
    yield
    for handler in [h for h in root.handlers if h not in saved[1]]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(saved[0])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def node(tmp_path, monkeypatch):
    """nsscache.conf for one coreweave map against a closed loopback port;
    ``node(source)`` writes it with the token from ``source``."""
    for var in ("NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN", "NSSCACHE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(run, "_CACHE", {})
    for sub in ("cache", "state"):
        (tmp_path / sub).mkdir()

    def write(token_source: str):
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o600)
        line = {"coreweave_token": f"coreweave_token = {TOKEN}\n",
                "coreweave_token_file": f"coreweave_token_file = {token_file}\n"}.get(token_source, "")
        if token_source.startswith("NSSCACHE_"):
            monkeypatch.setenv(token_source, TOKEN)
        conf = tmp_path / "nsscache.conf"
        conf.write_text(
            "[DEFAULT]\nsource = coreweave\ncache = files\nmaps = passwd\n"
            f"timestamp_dir = {tmp_path / 'state'}\nlockfile = {tmp_path / 'lock'}\n"
            f"files_dir = {tmp_path / 'cache'}\nfiles_cache_filename_suffix = cache\n"
            "coreweave_base_url = http://127.0.0.1:9/scim/cw-test\ncoreweave_groups = slurm-users\n"
            f"coreweave_state_dir = {tmp_path / 'state'}\ncoreweave_allowed_shells = /bin/bash\n"
            "coreweave_retries = 0\n" + line
        )
        return str(conf)

    return write


@pytest.mark.parametrize("token_source", SOURCES)
def test_stderr_never_carries_the_token(node, token_source, capsys, restored_logging):
    assert cli.main(["-c", node(token_source), "-v", "status"]) == 0
    # Any later record, e.g. a library echoing a header: the token is known by now.
    logging.getLogger("urllib3.connectionpool").debug("sent Authorization: Bearer %s", TOKEN)

    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "DEBUG sent Authorization: Bearer <redacted>" in err.splitlines()
    assert "DEBUG loaded configuration: <Config:" in err  # the -v dump is there...
    if token_source == "coreweave_token":
        assert "'token': '<redacted>'" in err  # ... with the inline token's value replaced


def test_exception_text_is_redacted_too(node, capsys, restored_logging):
    assert cli.main(["-c", node("coreweave_token_file"), "-v", "status"]) == 0
    try:
        raise RuntimeError(f"server said: bad token {TOKEN}")
    except RuntimeError:
        logging.getLogger("nss_cache_coreweave").exception("update failed")

    err = capsys.readouterr().err
    assert TOKEN not in err
    assert "RuntimeError: server said: bad token <redacted>" in err.splitlines()


def test_a_token_with_a_percent_sign_is_not_shown_when_nsscache_conf_cannot_be_read(node, tmp_path, capsys,
                                                                                     restored_logging):
    conf = node("coreweave_token_file")
    with open(conf, "a") as f:
        f.write("coreweave_token = cw%secret-part\n")  # '%' must be written '%%' in nsscache.conf

    assert cli.main(["-c", conf, "-v", "check"]) == 2

    out, err = capsys.readouterr()
    assert "secret-part" not in out + err
    assert f"ERROR {conf}: InterpolationSyntaxError in coreweave_token (its value is not shown)" in err.splitlines()


class SyslogServer:
    """A Unix datagram socket standing in for /dev/log; a thread drains it
    (the kernel queues only a few datagrams) until the test's end marker."""

    END = b"--end of test--"

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.datagrams = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while True:
            data = self.sock.recv(65536)
            if data == self.END:
                return
            self.datagrams.append(data)

    def received(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(self.END, self.path)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.sock.close()
        return b"\n".join(self.datagrams)


@pytest.mark.parametrize("token_source", SOURCES)
def test_syslog_never_carries_the_token(node, token_source, tmp_path, monkeypatch, capsys, restored_logging):
    syslog = SyslogServer(tmp_path / "log")
    monkeypatch.setattr(cli, "SYSLOG_SOCKET", syslog.path)

    # update from cron (stderr is not a terminal): syslog. Port 9 is closed: IAM unavailable.
    assert cli.main(["-c", node(token_source), "-v", "update"]) == 75
    logging.getLogger("nss_cache_coreweave").error("the server echoed %s", TOKEN)

    sent = syslog.received()
    assert TOKEN.encode() not in sent
    assert b"nsscache-coreweave[" in sent and b"ERROR the server echoed <redacted>" in sent
    assert b"DEBUG loaded configuration: <Config:" in sent
    if token_source == "coreweave_token":
        assert b"'token': '<redacted>'" in sent
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
