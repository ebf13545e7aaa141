"""A real nginx (Debian's ``nginx`` package) serving a directory on loopback, for the mirror tests.

Use::

    with serve(bundle_dir, tmp_path / "nginx") as web:
        requests.get(web.url("manifest.json"))
        assert [r.status for r in web.requests(1)] == [200]
        web.reset_log()

:func:`serve` writes ``nginx.conf`` under ``workdir`` (pid file, error log, access log and
every temp path there; nothing under /etc or /var is read or written), starts
``/usr/sbin/nginx`` in the foreground (``daemon off``: the master is our child, its pid is
``Nginx.pid``) with two workers on a free 127.0.0.1 port, waits until it listens (bounded, no
fixed sleep) and stops it by pid on exit, also when the test fails.

* Served files: ``root`` with ``etag on`` (nginx's ETag is ``"<mtime hex>-<size hex>"``) and
  no open-file cache, so a file replaced with ``os.replace`` is served new at once.
* Workers: the tests run as root and pytest's tmp_path is under a 0700 directory, which
  Debian's default worker user (www-data) cannot enter. As root the config says
  ``user root;`` (nginx accepts it): the workers keep root's rights, no permission of the
  test tree is loosened. As another user the directive is left out (workers cannot switch).
* Access log: one line per request, tab-separated, unbuffered (no ``buffer=``, so no
  ``flush=``): each line is one write(2) in the request's log phase, which nginx runs just
  after handing the response to the kernel. A client can therefore read its response a few
  microseconds before the line is written: ``requests(n)`` waits (bounded) until ``n``
  lines are there; call it before ``reset_log()`` so that no line of the previous phase
  lands after the truncation.

A missing nginx fails the test (:class:`NginxMissing`), never a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

__all__ = ["LOG_FORMAT", "NGINX", "Nginx", "NginxError", "NginxMissing", "Request", "config", "parse_log", "serve",
           "stop", "wait_ready"]

NGINX = "/usr/sbin/nginx"
# Tab-separated; nginx escapes '"', '\\' and bytes outside 0x20-0x7e as \xXX (escape=default),
# so a tab inside a field is \x09 and the split is unambiguous. An empty value is logged as "-".
LOG_FORMAT = r"$request_method\t$uri\t$status\t$body_bytes_sent\t$bytes_sent\t$http_if_none_match"
_ESCAPE = re.compile(r"\\x([0-9A-F]{2})")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOG_TIMEOUT = 5.0
_PORT_ATTEMPTS = 3  # a free port taken by someone else between our probe and nginx's bind


class NginxMissing(RuntimeError):
    """The nginx binary is not installed."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        return (f"{self.path} not found: the mirror tests need a real nginx: apt-get install nginx "
                "(make test installs it: scripts/system-packages)")


class NginxError(RuntimeError):
    """nginx did not start or stop as expected, or its access log did not show what was asked."""

    def __init__(self, reason: str, error_log: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_log = error_log

    def __str__(self) -> str:
        if not self.error_log:
            return self.reason
        return f"{self.reason}; nginx's error log:\n{self.error_log}"


@dataclass(frozen=True)
class Request:
    """One access-log line. ``bytes_sent`` counts headers and body, ``body_bytes_sent`` the body;
    ``if_none_match`` is the request's If-None-Match header (None when absent)."""

    method: str
    path: str
    status: int
    bytes_sent: int
    if_none_match: Optional[str]
    body_bytes_sent: int


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), field)


def parse_log(text: str) -> List[Request]:
    """The requests of an access log written with :data:`LOG_FORMAT`, in order."""
    found = []
    for line in text.splitlines():
        method, path, status, body, sent, inm = (_unescape(f) for f in line.split("\t"))
        found.append(Request(method, path, int(status), int(sent), None if inm == "-" else inm, int(body)))
    return found


@dataclass(frozen=True)
class Nginx:
    """A running nginx: ``root`` served at ``base_url`` (``http://127.0.0.1:<port>``)."""

    root: Path
    port: int
    base_url: str
    access_log: Path
    error_log: Path
    pid: int

    def url(self, path: str = "") -> str:
        """The URL of ``path`` (relative to ``root``)."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def requests(self, count: Optional[int] = None) -> List[Request]:
        """The requests logged since the start or the last :meth:`reset_log`. With ``count``,
        first wait (at most LOG_TIMEOUT s) until at least that many are logged.

        :raises NginxError: fewer than ``count`` lines by the deadline.
        """
        deadline = time.monotonic() + LOG_TIMEOUT
        while True:
            found = parse_log(self.access_log.read_text())
            if count is None or len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise NginxError(f"{self.access_log}: {len(found)} requests logged after {LOG_TIMEOUT}s, "
                                 f"expected {count}: {found}")
            time.sleep(0.01)

    def reset_log(self) -> None:
        """Empty the access log (nginx appends with O_APPEND: its next line lands at offset 0)."""
        with open(self.access_log, "r+") as log:
            log.truncate(0)


def _quoted(path: Path) -> str:
    """``path`` as an nginx string; one nginx would read otherwise ('"', '\\', '$': variables) is refused."""
    text = str(path)
    if set(text) & set('"\\$'):
        raise NginxError(f"{text!r}: a path with '\"', '\\' or '$' cannot be written into nginx.conf; use another")
    return f'"{text}"'


def config(root: Path, workdir: Path, port: int, *, as_root: bool) -> str:
    """nginx.conf serving ``root`` on 127.0.0.1:``port``, every file of nginx under ``workdir``."""
    temps = "\n".join(f"    {name}_temp_path {_quoted(workdir / 'temp' / name)};"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
# Written by tests/support/nginx.py.
{"user root;" if as_root else ""}
daemon off;
master_process on;
worker_processes 2;
pid {_quoted(workdir / 'nginx.pid')};
error_log {_quoted(workdir / 'error.log')} notice;
events {{
    worker_connections 1024;
}}
http {{
    default_type application/octet-stream;
    types {{
        application/json json;
    }}
    log_format harness "{LOG_FORMAT}";
    access_log {_quoted(workdir / 'access.log')} harness;
{temps}
    server {{
        listen 127.0.0.1:{port};
        root {_quoted(root)};
        etag on;
        open_file_cache off;
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_file_names(pid_file: Path, pid: int) -> bool:
    """nginx writes its pid file after binding its sockets: it names our child, not another server."""
    try:
        return pid_file.read_text().strip() == str(pid)
    except FileNotFoundError:
        return False


def _error_log(workdir: Path) -> str:
    try:
        return (workdir / "error.log").read_text()[-4000:]
    except FileNotFoundError:
        return ""


def wait_ready(process: subprocess.Popen, workdir: Path, port: int) -> None:
    """Until nginx's pid file names ``process`` and 127.0.0.1:``port`` accepts; a bare connect
    sends no request, so the access log stays empty.

    :raises NginxError: nginx exited, or was not ready within START_TIMEOUT s.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while not (_pid_file_names(workdir / "nginx.pid", process.pid) and _listening(port)):
        if process.poll() is not None:
            raise NginxError(f"nginx exited with status {process.returncode} on port {port}",
                             _error_log(workdir))
        if time.monotonic() > deadline:
            raise NginxError(f"nginx was not listening on 127.0.0.1:{port} after {START_TIMEOUT}s",
                             _error_log(workdir))
        time.sleep(0.02)


def stop(process: subprocess.Popen, workdir: Path) -> None:
    """SIGTERM (nginx's fast shutdown: the master stops its workers, then exits), wait; after
    STOP_TIMEOUT s SIGKILL the whole process group (a killed master leaves its workers behind).

    :raises NginxError: the master exited by signal or with an error (the processes are gone then).
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # only left-overs: nothing is left after a clean exit
    process.wait()
    if process.returncode != 0:
        raise NginxError(f"nginx (pid {process.pid}) did not stop cleanly: status {process.returncode}",
                         _error_log(workdir))


def _start(root: Path, workdir: Path, port: int) -> subprocess.Popen:
    conf = workdir / "nginx.conf"
    conf.write_text(config(root, workdir, port, as_root=os.geteuid() == 0))
    for name in ("nginx.pid", "access.log", "error.log"):
        (workdir / name).unlink(missing_ok=True)
    (workdir / "access.log").touch()
    # -e: the error log before nginx.conf is read (Debian's default is under /var/log/nginx).
    # Own session: the process group is the master's pid, for the SIGKILL of last resort.
    return subprocess.Popen([NGINX, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _address_taken(workdir: Path) -> bool:
    return "Address already in use" in _error_log(workdir)


@contextlib.contextmanager
def serve(root: Path, workdir: Path) -> Iterator[Nginx]:
    """nginx serving ``root`` on a free loopback port while the block runs; stopped by pid after.

    :raises NginxMissing: no /usr/sbin/nginx.
    :raises NginxError: it did not start (with its error log), or did not stop cleanly.
    """
    if not os.access(NGINX, os.X_OK):
        raise NginxMissing(NGINX)
    root = Path(root).resolve()
    workdir = Path(workdir).resolve()
    (workdir / "temp").mkdir(parents=True, exist_ok=True)
    for attempt in range(_PORT_ATTEMPTS):
        port = _free_port()
        process = _start(root, workdir, port)
        try:
            wait_ready(process, workdir, port)
            break
        except BaseException as e:  # also an interrupt: no nginx is left behind
            with contextlib.suppress(NginxError):
                stop(process, workdir)
            if not isinstance(e, NginxError) or attempt + 1 == _PORT_ATTEMPTS or not _address_taken(workdir):
                raise
    try:
        yield Nginx(root, port, f"http://127.0.0.1:{port}", workdir / "access.log", workdir / "error.log",
                    process.pid)
    finally:
        stop(process, workdir)
