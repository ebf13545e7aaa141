"""tests/support/nginx.py: Debian's nginx serving a directory on loopback, as the mirror tests use
it: bytes and ETags, conditional GETs, the access log, atomic replacement, and no nginx left after."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import requests

from support import nginx
from support.nginx import Nginx, NginxError, NginxMissing, serve

MANIFEST = b'{"generation": 1}\n'


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "manifest.json").write_bytes(MANIFEST)
    return root


def replace(path, data: bytes, mtime=None) -> None:
    """As the publisher does: a temporary file beside ``path``, then os.replace."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(data)
    if mtime is not None:
        os.utime(temp, (mtime, mtime))
    os.replace(temp, path)


def gone(web: Nginx) -> bool:
    """No process left in nginx's process group (master and workers), and its port refuses."""
    try:
        os.killpg(web.pid, 0)
        return False
    except ProcessLookupError:
        pass
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", web.port)) != 0


def test_a_get_returns_the_file_with_an_etag(site, tmp_path):
    with serve(site, tmp_path / "nginx") as web:
        got = requests.get(web.url("manifest.json"), timeout=10)

    assert got.status_code == 200
    assert got.content == MANIFEST
    assert got.headers["Content-Type"] == "application/json"
    mtime = int(os.stat(site / "manifest.json").st_mtime)
    assert got.headers["ETag"] == f'"{mtime:x}-{len(MANIFEST):x}"'


def test_a_conditional_get_with_the_etag_is_a_304_without_body_and_both_are_logged(site, tmp_path):
    with serve(site, tmp_path / "nginx") as web:
        first = requests.get(web.url("manifest.json"), timeout=10)
        again = requests.get(web.url("/manifest.json"), headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
        logged = web.requests(2)

    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", first.headers["ETag"])
    assert [(r.method, r.path, r.status, r.body_bytes_sent, r.if_none_match) for r in logged] == [
        ("GET", "/manifest.json", 200, len(MANIFEST), None),
        ("GET", "/manifest.json", 304, 0, first.headers["ETag"]),
    ]
    assert logged[0].bytes_sent > len(MANIFEST) and 0 < logged[1].bytes_sent < logged[0].bytes_sent


def test_the_log_shows_a_request_as_soon_as_it_completes_and_reset_log_empties_it(site, tmp_path):
    with serve(site, tmp_path / "nginx") as web:
        assert web.requests() == []  # waiting for the port sent no request
        with requests.Session() as session:
            for n in range(1, 51):
                session.get(web.url("manifest.json"), timeout=10)
                assert len(web.requests(n)) == n
        web.reset_log()
        assert web.requests() == []
        requests.get(web.url("missing"), headers={"If-None-Match": '"a\tb"'}, timeout=10)
        logged = web.requests(1)

    assert [(r.method, r.path, r.status, r.if_none_match) for r in logged] == [("GET", "/missing", 404, '"a\tb"')]


def test_replacing_the_file_atomically_changes_the_etag(site, tmp_path):
    with serve(site, tmp_path / "nginx") as web:
        before = requests.get(web.url("manifest.json"), timeout=10)
        replace(site / "manifest.json", b'{"generation": 22}\n')
        after = requests.get(web.url("manifest.json"), headers={"If-None-Match": before.headers["ETag"]}, timeout=10)

    assert (after.status_code, after.content) == (200, b'{"generation": 22}\n')
    assert after.headers["ETag"] != before.headers["ETag"]


def test_a_same_size_replacement_in_the_same_second_keeps_the_etag(site, tmp_path):
    """nginx's ETag is mtime (seconds) and size: a publisher replacing a file twice within one
    second with as many bytes gets a stale 304 unless it moves the mtime on (here: +1 s)."""
    path = site / "manifest.json"
    os.utime(path, (1_700_000_000, 1_700_000_000))
    with serve(site, tmp_path / "nginx") as web:
        before = requests.get(web.url("manifest.json"), timeout=10).headers["ETag"]
        replace(path, b'{"generation": 2}\n', mtime=1_700_000_000)
        stale = requests.get(web.url("manifest.json"), headers={"If-None-Match": before}, timeout=10)
        replace(path, b'{"generation": 3}\n', mtime=1_700_000_001)
        fresh = requests.get(web.url("manifest.json"), headers={"If-None-Match": before}, timeout=10)

    assert (before, stale.status_code, stale.content) == ('"6553f100-12"', 304, b"")
    assert (fresh.status_code, fresh.content, fresh.headers["ETag"]) == (200, b'{"generation": 3}\n', '"6553f101-12"')


def test_after_the_block_nginx_and_its_workers_are_gone_and_the_port_is_closed(site, tmp_path):
    with serve(site, tmp_path / "nginx") as web:
        workers = subprocess.run(["ps", "-o", "pid=", "--ppid", str(web.pid)], capture_output=True, text=True,
                                 check=True).stdout.split()
        assert len(workers) == 2 and not gone(web)

    assert gone(web)
    with pytest.raises(ProcessLookupError):
        os.kill(web.pid, 0)


def test_nginx_is_stopped_when_the_test_body_fails(site, tmp_path):
    with pytest.raises(AssertionError):
        with serve(site, tmp_path / "nginx") as web:
            assert requests.get(web.url("manifest.json"), timeout=10).status_code == 404

    assert gone(web)


def test_a_server_that_exits_fails_with_its_error_log(tmp_path):
    (tmp_path / "error.log").write_text("[emerg] bind() to 127.0.0.1:80 failed (98: Address already in use)\n")
    exited = subprocess.Popen(["/bin/sh", "-c", "exit 1"])

    with pytest.raises(NginxError) as refused:
        nginx.wait_ready(exited, tmp_path, port=80)

    assert str(refused.value) == ("nginx exited with status 1 on port 80; nginx's error log:\n"
                                  "[emerg] bind() to 127.0.0.1:80 failed (98: Address already in use)\n")


def test_a_missing_nginx_fails_naming_the_package(site, tmp_path, monkeypatch):
    monkeypatch.setattr(nginx, "NGINX", str(tmp_path / "no-nginx"))

    with pytest.raises(NginxMissing) as missing:
        with serve(site, tmp_path / "nginx"):
            pass

    assert str(missing.value) == (f"{tmp_path / 'no-nginx'} not found: the mirror tests need a real nginx: "
                                  "apt-get install nginx (make test installs it: scripts/system-packages)")


def test_a_stop_signal_kills_nothing_but_this_nginx(site, tmp_path):
    """Two servers at once: stopping one (by its pid) leaves the other serving."""
    with serve(site, tmp_path / "one") as one:
        with serve(site, tmp_path / "two") as two:
            assert one.port != two.port
        assert gone(two)
        assert requests.get(one.url("manifest.json"), timeout=10).content == MANIFEST
    assert gone(one)
