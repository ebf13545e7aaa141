"""Run the independent SCIM server ``scim2-server`` (PyPI, tested with 0.8.3) for tests.

FakeIAM (``tests/support/fakeiam.py``) is ours; this harness checks our client against
somebody else's reading of RFC 7643/7644/9865.

Use::

    with Scim2Server(tmp_path, token="t0ken") as server:
        ids = load_org(server.base_url, "t0ken", REPO / "demo" / "org.json")
        # ids: org id -> id the server assigned (users and groups)
        ...point the client at server.base_url, with group paths GROUP_NAME_PATH / GROUP_GID_PATH

:class:`Scim2Server` starts ``scim2-server`` as a subprocess on a free loopback port,
serving one tenant (``base_url`` = ``http://127.0.0.1:<port>/<tenant>``: no ``/v2``,
like CoreWeave's ``https://api.coreweave.com/scim/<org-id>``; scim2-server makes
``/v2`` optional), with:

* the RFC 7643 core schemas (scim2-server's own ``default-schemas.json``) plus
  ``tests/data/coreweave-user-extension.json`` and
  ``tests/data/coreweave-group-extension.json``;
* ``tests/data/scim2-resource-types.json``: User with the enterprise and CoreWeaveUser
  extensions, Group with the CoreWeaveGroup extension;
* ``tests/data/scim2-service-provider-config.json``: filter, sort, patch, and
  ``pagination`` with both ``cursor`` and ``index`` (default index,
  ``defaultPageSize`` 100, ``maxPageSize`` 1000, ``cursorTimeout`` 3600); the
  constructor can turn cursor paging off or change the page sizes;
* ``--bearer-token`` when a token is given (missing/wrong token: 401 SCIM Error).

It waits for the server's "Serving SCIM on" line (read with a bounded timeout,
no fixed sleep) and then for one answered ``GET /ServiceProviderConfig``.

What scim2-server 0.8.3 accepts, and the smallest changes :func:`load_org` makes
------------------------------------------------------------------------------

* **Users**: accepted as CoreWeave IAM shapes them. ``id`` and ``meta`` are
  read-only: the server assigns its own ids (32 hex digits), so :func:`load_org`
  drops them and returns the mapping. The extension object keyed by
  ``urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser`` is
  kept, and served back, as is: **the default user attribute paths work
  unchanged** (``...:CoreWeaveUser:sunkPosixUsername`` etc.). One difference:
  an empty list (erin's ``"sunkSshKeys": []``) comes back **absent** (RFC 7643
  §2.5: an empty multi-valued attribute is unassigned), so a client must read a
  missing ``sunkSshKeys`` as "no keys".
* **Groups**: scim2-server refuses undeclared top-level attributes
  (``400 invalidSyntax: Extra inputs are not permitted: sunkPosixGroupName``), and
  a schema cannot add attributes to the core Group schema without replacing it.
  So :func:`load_org` moves ``sunkPosixGroupName`` and ``sunkPosixGid`` into the
  ``urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveGroup``
  object (and lists that URN in ``schemas``). A test against scim2-server must
  configure the group attribute paths :data:`GROUP_NAME_PATH` and
  :data:`GROUP_GID_PATH`::

      urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveGroup:sunkPosixGroupName
      urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveGroup:sunkPosixGid

* **Members**: ``members[].value`` is rewritten to the server's id of the user
  (or of an already created group), ``$ref`` to the server's URL of it. The
  server does not check that members exist: a ``value`` the org does not know
  is kept as is (a dangling member). ``display`` and ``type`` are kept.

What works (checked by ``tests/integration/test_scim2_harness.py``)
-------------------------------------------------------------------

* Index paging: ``startIndex`` (1-based) and ``count``; without ``count`` the
  ``defaultPageSize`` (100); ``count`` above ``maxPageSize``/``filter.maxResults``
  is lowered; ``count=0`` gives ``totalResults`` and no Resources. Resources come
  sorted by id (server ids), not in creation order.
* Cursor paging (RFC 9865): only when the service provider config announces
  ``pagination.cursor`` (scim2-server's own default config does not: a
  ``cursor`` parameter then gets ``501 Pagination by cursor is not supported``);
  needs the ``cryptography`` package (``scim2-server[cursor]``). An empty
  ``cursor=`` (or a bare ``cursor``) starts a walk; ``nextCursor`` is absent on
  the last page; ``totalResults`` is present; no ``startIndex``. A cursor the
  server did not issue: ``400 invalidCursor``; a cursor reused with another
  ``count``: ``400 invalidCount``; older than ``cursorTimeout``: ``400
  expiredCursor``. ``cursor`` together with ``startIndex``: 400.
* ``filter`` (e.g. ``displayName eq "slurm-users"``, ``active eq true``) works;
  the CoreWeave ``groups=`` parameter is silently ignored (every user returned).
* A missing or wrong bearer token: 401 SCIM Error. ``/ServiceProviderConfig``
  needs no token.
"""

from __future__ import annotations

import copy
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

__all__ = [
    "GROUP_EXT",
    "GROUP_GID_PATH",
    "GROUP_NAME_PATH",
    "Scim2Server",
    "Scim2ServerError",
    "Scim2ServerMissing",
    "USER_EXT",
    "load_org",
    "scim2_server_command",
]

DATA = Path(__file__).resolve().parents[1] / "data"
USER_EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
GROUP_EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveGroup"
GROUP_NAME_PATH = f"{GROUP_EXT}:sunkPosixGroupName"
GROUP_GID_PATH = f"{GROUP_EXT}:sunkPosixGid"
_GROUP_TOP_LEVEL = ("sunkPosixGroupName", "sunkPosixGid")  # where CoreWeave IAM puts them
SCIM_JSON = "application/scim+json"
_INSTALL_HINT = "pip install 'scim2-server[cursor]==0.8.3'"


class Scim2ServerMissing(RuntimeError):
    """scim2-server is not installed for this interpreter (tests must fail, not skip)."""


class Scim2ServerError(RuntimeError):
    """scim2-server did not start, or refused a resource of the org."""


def scim2_server_command() -> list[str]:
    """The command running scim2-server: with ``$SCIM2_SERVER_PYTHON``, a Python that has
    it installed (scim2-server needs 3.11; the package is also tested on 3.9 and 3.10, see
    tox.ini), else this interpreter's installation.

    :raises Scim2ServerMissing: when neither is there.
    """
    other = os.environ.get("SCIM2_SERVER_PYTHON")
    if other:
        if not (os.path.isfile(other) and os.access(other, os.X_OK)):
            raise Scim2ServerMissing(f"SCIM2_SERVER_PYTHON={other} is not an executable file: {_INSTALL_HINT}")
        return [other, "-m", "scim2_server.testserver.cli"]
    try:
        import scim2_server.testserver.cli  # noqa: F401
    except ImportError as e:
        raise Scim2ServerMissing(f"scim2-server is not installed for {sys.executable}: {_INSTALL_HINT} ({e})") from e
    script = Path(sys.executable).parent / "scim2-server"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "scim2_server.testserver.cli"]


def _default_schemas() -> list[dict[str, Any]]:
    """scim2-server's own core schemas (from the installation that runs it)."""
    code = "import json, sys; from scim2_server.utils import load_json_resource; " \
           "json.dump(list(load_json_resource('default-schemas.json')), sys.stdout)"
    python = os.environ.get("SCIM2_SERVER_PYTHON") or sys.executable
    found = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if found.returncode != 0:
        raise Scim2ServerMissing(f"scim2-server's default schemas cannot be read with {python}: {_INSTALL_HINT} "
                                 f"({found.stderr.strip()[-300:]})")
    return json.loads(found.stdout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scim2Server:
    """scim2-server on a free loopback port, for the duration of a ``with`` block.

    :param tmp_path: directory for the generated schema/config files and the log.
    :param token: bearer token to require (``None``: no authentication).
    :param tenant: first path segment; ``base_url`` ends with ``/<tenant>``.
    :param cursor: announce cursor pagination (index paging is always on).
    :param default_page_size, max_page_size: the ``pagination`` page sizes.
    :param startup_timeout: seconds to wait for the server to answer.

    ``base_url``, ``port``, ``log_path`` (the server's stderr: one line per request)
    are set while it runs.
    """

    def __init__(
        self,
        tmp_path: str | os.PathLike[str],
        token: str | None = "t0ken",
        *,
        tenant: str = "cw-demo",
        cursor: bool = True,
        default_page_size: int = 100,
        max_page_size: int = 1000,
        startup_timeout: float = 30.0,
    ):
        self.dir = Path(tmp_path)
        self.token = token
        self.tenant = tenant
        self.cursor = cursor
        self.default_page_size = default_page_size
        self.max_page_size = max_page_size
        self.startup_timeout = startup_timeout
        self.log_path = self.dir / "scim2-server.log"
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("Scim2Server not started")
        return f"http://127.0.0.1:{self.port}/{self.tenant}"

    def _write_files(self) -> list[str]:
        schemas = _default_schemas() + [
            json.loads((DATA / "coreweave-user-extension.json").read_text()),
            json.loads((DATA / "coreweave-group-extension.json").read_text()),
        ]
        config = json.loads((DATA / "scim2-service-provider-config.json").read_text())
        config["pagination"].update(
            cursor=self.cursor, defaultPageSize=self.default_page_size, maxPageSize=self.max_page_size
        )
        files = {
            "--schema": ("scim2-schemas.json", schemas),
            "--resource-type": ("scim2-resource-types.json",
                                json.loads((DATA / "scim2-resource-types.json").read_text())),
            "--service-provider-config": ("scim2-service-provider-config.json", config),
        }
        args = []
        for option, (name, content) in files.items():
            path = self.dir / name
            path.write_text(json.dumps(content, indent=1))
            args += [option, str(path)]
        args += ["--tenant", self.tenant]
        if self.token is not None:
            args += ["--bearer-token", self.token]
        return args

    def start(self) -> Scim2Server:
        if self.process is not None:
            raise RuntimeError("Scim2Server already started")
        command = scim2_server_command()
        self.dir.mkdir(parents=True, exist_ok=True)
        args = self._write_files()
        # The free port may be taken between our probe and the server's bind: retry.
        for _attempt in range(3):
            self.port = _free_port()
            if self._launch(command + args + ["--hostname", "127.0.0.1", "--port", str(self.port)]):
                return self
        raise Scim2ServerError(f"scim2-server never bound a port:\n{self._log_tail()}")

    def _launch(self, argv: list[str]) -> bool:
        """Start the process; True once it answers, False if it died binding its port."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=env)
        deadline = time.monotonic() + self.startup_timeout
        if not self._await_banner(deadline):
            self.process.wait(timeout=max(deadline - time.monotonic(), 1))
            self.process.stdout.close()
            self.process = None
            if "Address already in use" in self._log_tail():
                return False
            raise Scim2ServerError(f"scim2-server exited while starting:\n{self._log_tail()}")
        # Listening; confirm one real answer (no auth needed, RFC 7643 §5).
        while True:
            try:
                r = requests.get(f"{self.base_url}/ServiceProviderConfig",
                                 timeout=max(deadline - time.monotonic(), 0.1))
                if r.status_code == 200:
                    return True
                problem = f"HTTP {r.status_code}: {r.text[:500]}"
            except requests.RequestException as e:
                problem = repr(e)
            if time.monotonic() >= deadline or self.process.poll() is not None:
                self.stop()
                raise Scim2ServerError(f"scim2-server does not answer ({problem}):\n{self._log_tail()}")
            time.sleep(0.05)  # bounded by deadline

    def _await_banner(self, deadline: float) -> bool:
        """Read stdout until the 'Serving SCIM on' line: True; EOF (process died): False."""
        assert self.process is not None and self.process.stdout is not None
        fd, seen = self.process.stdout.fileno(), b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"Serving SCIM on" not in seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    self.stop()
                    raise Scim2ServerError(
                        f"scim2-server did not start within {self.startup_timeout}s:\n{self._log_tail()}"
                    )
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False
                seen += chunk
        return True

    def _log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Scim2Server:
        # ``with Scim2Server(...).start() as server`` works too.
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _user_payload(user: Mapping[str, Any]) -> dict[str, Any]:
    payload = {k: copy.deepcopy(v) for k, v in user.items() if k not in ("id", "meta")}
    schemas = list(payload.get("schemas") or ["urn:ietf:params:scim:schemas:core:2.0:User"])
    if USER_EXT in payload and USER_EXT not in schemas:
        schemas.append(USER_EXT)
    payload["schemas"] = schemas
    return payload


def _group_payload(group: Mapping[str, Any], ids: Mapping[str, str], locations: Mapping[str, str]) -> dict[str, Any]:
    payload = {k: copy.deepcopy(v) for k, v in group.items() if k not in ("id", "meta", *_GROUP_TOP_LEVEL)}
    ext = dict(payload.get(GROUP_EXT) or {})
    for key in _GROUP_TOP_LEVEL:
        if key in group:
            ext[key] = group[key]
    schemas = list(payload.get("schemas") or ["urn:ietf:params:scim:schemas:core:2.0:Group"])
    if ext:
        payload[GROUP_EXT] = ext
        if GROUP_EXT not in schemas:
            schemas.append(GROUP_EXT)
    payload["schemas"] = schemas
    members = []
    for member in payload.get("members") or []:
        member = dict(member)
        old = member.get("value")
        if old in ids:
            member["value"] = ids[old]
            if "$ref" in member:
                member["$ref"] = locations[old]
        members.append(member)
    if "members" in payload:
        payload["members"] = members
    return payload


def load_org(
    base_url: str,
    token: str | None,
    org: Mapping[str, Any] | str | os.PathLike[str],
    *,
    timeout: float = 10.0,
) -> dict[str, str]:
    """Create the org's Users, then its Groups, through the server's SCIM API
    (``POST /Users``, ``POST /Groups``), in the org's order.

    :param org: ``{"Users": [...], "Groups": [...]}`` (FakeIAM/CoreWeave shape) or a
        path to such a JSON file; see the module docstring for what is changed.
    :returns: org id -> server id, for every user and group.
    :raises Scim2ServerError: when the server refuses a resource (its answer quoted).
    """
    if isinstance(org, (str, os.PathLike)):
        org = json.loads(Path(org).read_text(encoding="utf-8"))
    ids: dict[str, str] = {}
    locations: dict[str, str] = {}
    with requests.Session() as http:
        http.headers.update({"Content-Type": SCIM_JSON, "Accept": SCIM_JSON})
        if token is not None:
            http.headers["Authorization"] = f"Bearer {token}"

        def create(endpoint: str, original: Mapping[str, Any], payload: dict[str, Any]) -> None:
            r = http.post(f"{base_url}/{endpoint}", data=json.dumps(payload), timeout=timeout)
            if r.status_code != 201:
                raise Scim2ServerError(
                    f"POST /{endpoint} of {original.get('id')!r} refused: HTTP {r.status_code} {r.text[:1000]}"
                )
            created = r.json()
            if "id" in original:
                ids[original["id"]] = created["id"]
                locations[original["id"]] = (created.get("meta", {}).get("location")
                                             or f"{base_url}/{endpoint}/{created['id']}")

        for user in org.get("Users", []):
            create("Users", user, _user_payload(user))
        for group in org.get("Groups", []):
            create("Groups", group, _group_payload(group, ids, locations))
    return ids
