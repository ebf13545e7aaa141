"""The benchmark SCIM server (issues 5 and 16): pre-rendered pages on loopback.

``GET <prefix>/Users`` and ``GET <prefix>/Groups`` list a synthetic organisation
(:mod:`benchmarks.org`) with both pagination modes:

* index (RFC 7644 §3.4.2.4): ``startIndex`` (1-based, default 1) and ``count``
  (default :data:`DEFAULT_COUNT`, at most :data:`MAX_COUNT`);
* cursor (RFC 9865): a request carrying ``cursor`` (empty on the first request)
  gets ``nextCursor`` while more remain; a cursor this server did not issue gets a
  400 ``invalidCursor``.

What else it honours is its capability (:data:`CAPABILITIES`; ``--capability``,
switchable at ``GET /_bench/capability?set=NAME``):

* ``plain``, a server that does neither: ``/ServiceProviderConfig`` says
  ``filter.supported`` false, and ``filter``, ``attributes`` and
  ``excludedAttributes`` are ignored (every page holds every resource, whole);
* ``filtering``: ``/ServiceProviderConfig`` advertises ``filter`` with
  ``maxResults`` :data:`FILTER_MAX_RESULTS`; ``filter`` on Users is honoured for
  ``id eq "<JSON string>" (or id eq "<JSON string>")*`` (RFC 7644 §3.4.2.2:
  attribute name and operators case-insensitive; ``id`` is caseExact, RFC 7643
  §3.1), anything else, or a filter on Groups, gets a 400 ``invalidFilter``; the
  answer lists the matching users in listing order (``totalResults`` = how many
  match), paged by index or cursor over them, ``count`` capped at
  :data:`FILTER_MAX_RESULTS`. ``attributes`` and ``excludedAttributes`` (RFC 7644
  §3.9) are honoured: names are case-insensitive, sub-attributes use ``.``
  (``name.givenName``, ``members.value``), extension attributes carry their schema
  URN (``urn:...:CoreWeaveUser:sunkSshKeys``, or the bare URN for the whole
  extension); ``id`` (RFC 7643 §3.1: returned "always") and ``schemas`` (required
  in every representation, RFC 7643 §3; scim2-models always dumps it too) are
  always returned.

Other parameters (``groups`` ...) are recorded and ignored.

Every distinct page (endpoint, position, count, attributes, excludedAttributes,
filter) is rendered once, on first request, and then served from memory as bytes
(filtered pages up to :data:`FILTERED_CACHE_BYTES` in all, then rendered per
request); with ``--gzip`` a client sending ``Accept-Encoding: gzip`` gets a cached
gzip copy. A user is found by id in a dict built once when the server starts
filtering. The server is meant to run in its own process (``python -m
benchmarks.server``) so its CPU time never counts against the measured client.
HTTP/1.1 with Content-Length and TCP_NODELAY: a client's keep-alive connection is
reused.

``GET /_bench/latency?set=MS`` makes every answer wait MS milliseconds before it is
sent (0 by default): one round trip to a server far away, each request in its thread.

Counters (requests per endpoint, body bytes, connections, statuses) and the request
targets in arrival order are read and reset at ``GET /_bench/stats?reset=1``, which is
not counted; ``GET /ServiceProviderConfig`` answers discovery (counted as "other").
"""

from __future__ import annotations

import argparse
import gzip
import hmac
import http.server
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, urlsplit

from .org import CORE_GROUP, CORE_USER, EXT_CW, EXT_ENTERPRISE, Org, OrgSpec

__all__ = [
    "BenchServer", "Stats", "DEFAULT_COUNT", "MAX_COUNT", "DEFAULT_PREFIX", "CAPABILITIES", "FILTER_MAX_RESULTS",
    "InvalidFilter", "parse_id_filter", "parse_attribute_list", "project", "service_provider_config",
    "listing_targets", "main",
]

DEFAULT_PREFIX = "/scim/cwbench"
DEFAULT_COUNT = 100
MAX_COUNT = 10_000
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"
ALWAYS = ("id", "schemas")  # returned whatever attributes/excludedAttributes say
ENDPOINTS = ("Users", "Groups")
CONTROL = "/_bench/"
CAPABILITIES = ("plain", "filtering")  # a server that does neither; one that filters Users by id and projects
FILTER_MAX_RESULTS = 200  # /ServiceProviderConfig filter.maxResults when filtering; caps count with a filter
FILTERED_CACHE_BYTES = 1 << 30  # filtered pages kept (1,000 batches at 1,000,000 users are ~0.1 GB)


# --- filter (RFC 7644 §3.4.2.2), the one form this server honours ----------------------


class InvalidFilter(ValueError):
    """A filter outside ``id eq "<JSON string>" (or id eq "<JSON string>")*``."""


_ID_EQ = re.compile(r"\s*id\s+eq\s+(?=\")", re.ASCII | re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.ASCII | re.IGNORECASE)
_END = re.compile(r"\s*\Z", re.ASCII)
_STRING = json.JSONDecoder()


def parse_id_filter(text: str) -> Tuple[str, ...]:
    """The ids of ``id eq "a" or id eq "b"``, in order: ``("a", "b")``. Each value is a
    JSON string (a SCIM string literal), so ``"x\\" or id pr"`` is one id.

    :raises InvalidFilter: anything else (another attribute, operator or value type, ``and``, brackets)
    """
    ids, at = [], 0
    while True:
        term = _ID_EQ.match(text, at)
        if term is None:
            raise InvalidFilter(f"not an id filter at character {at}: {text[at:at + 40]!r}")
        try:
            value, at = _STRING.raw_decode(text, term.end())
        except ValueError:
            raise InvalidFilter(f"not a JSON string at character {term.end()}") from None
        ids.append(value)
        if _END.match(text, at):
            return tuple(ids)
        joint = _OR.match(text, at)
        if joint is None:
            raise InvalidFilter(f"expected ' or ' at character {at}: {text[at:at + 40]!r}")
        at = joint.end()


# --- attributes / excludedAttributes (RFC 7644 §3.9, §3.10) -------------------------

Path_ = Tuple[str, ...]


def parse_attribute_list(value: Optional[str], schemas: Tuple[str, ...]) -> Tuple[Path_, ...]:
    """``"userName,name.givenName,urn:x:Ext:attr"`` -> lower-cased key paths:
    ``(("username",), ("name", "givenname"), ("urn:x:ext", "attr"))``. A name
    qualified with a core schema URN becomes a core attribute path."""
    if not value:
        return ()
    paths = []
    known = sorted((s.lower() for s in schemas), key=len, reverse=True)
    core = {CORE_USER.lower(), CORE_GROUP.lower()}
    for raw in value.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name.startswith("urn:"):
            urn = next((s for s in known if name == s or name.startswith(s + ":")), None)
            if urn is None:
                continue  # an unknown schema: nothing to return or exclude
            rest = name[len(urn) + 1:]
            if urn in core:
                if rest:
                    paths.append(tuple(rest.split(".")))
                continue
            paths.append((urn,) + (tuple(rest.split(".")) if rest else ()))
        else:
            paths.append(tuple(name.split(".")))
    return tuple(sorted(set(paths)))


def project(resource: dict, attributes: Tuple[Path_, ...], excluded: Tuple[Path_, ...]) -> dict:
    """The resource as RFC 7644 §3.9 asks: only ``attributes`` (when given), minus
    ``excluded``; :data:`ALWAYS` stays."""
    if not attributes and not excluded:
        return resource
    out = _keep(resource, attributes) if attributes else dict(resource)
    for name in ALWAYS:
        if name in resource:
            out[name] = resource[name]
    if excluded:
        out = _drop(out, tuple(p for p in excluded if p[0] not in ALWAYS))
    # Keep the resource's own key order (id first, as a real server does).
    return {k: out[k] for k in resource if k in out}


def _keep(node, paths: Tuple[Path_, ...]):
    if any(len(p) == 0 for p in paths):
        return node
    if isinstance(node, list):
        return [_keep(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        wanted = tuple(p[1:] for p in paths if p[0] == key.lower())
        if wanted:
            out[key] = _keep(value, wanted)
    return out


def _drop(node, paths: Tuple[Path_, ...]):
    if not paths:
        return node
    if isinstance(node, list):
        return [_drop(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        below = tuple(p[1:] for p in paths if p[0] == key.lower())
        if any(len(p) == 0 for p in below):
            continue
        out[key] = _drop(value, below) if below else value
    return out


# --- the server ------------------------------------------------------------------------


class Stats:
    """What the clients asked for since the last reset."""

    def __init__(self):
        self.requests: Counter = Counter()  # "Users", "Groups", "other"
        self.statuses: Counter = Counter()
        self.body_bytes = 0
        self.bytes_by_endpoint: Counter = Counter()
        self.connections = 0
        self.targets: List[str] = []
        self.accept_encodings: Counter = Counter()
        self.started = time.time()

    def as_dict(self) -> dict:
        return {
            "requests": dict(self.requests),
            "requests_total": sum(self.requests.values()),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "body_bytes": self.body_bytes,
            "bytes_by_endpoint": dict(self.bytes_by_endpoint),
            "connections": self.connections,
            "targets": list(self.targets),
            "accept_encodings": dict(self.accept_encodings),
        }


class BenchServer:
    """The organisation's pages over HTTP on 127.0.0.1 (a ThreadingHTTPServer)."""

    def __init__(self, org: Org, token: str, *, port: int = 0, prefix: str = DEFAULT_PREFIX, gzip_pages: bool = False,
                 capability: str = "plain"):
        self.org, self.token, self.prefix, self.gzip_pages = org, token, prefix.rstrip("/"), gzip_pages
        self.totals = {"Users": org.spec.users, "Groups": org.spec.groups}
        self._schemas = {"Users": (CORE_USER, EXT_ENTERPRISE, EXT_CW), "Groups": (CORE_GROUP,)}
        self._pages: Dict[tuple, Tuple[int, bytes, Optional[bytes]]] = {}
        self._filtered_bytes = 0  # of the filtered pages kept in _pages
        self._ids: Optional[Dict[str, int]] = None  # user id -> listing index, built when filtering starts
        self._render_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats = Stats()
        self.render_seconds = 0.0
        self.capability = "plain"
        self.set_capability(capability)
        self.latency = 0.0  # seconds added before each answer: a server far away (GET /_bench/latency?set=MS)
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler, self)
        self._thread: Optional[threading.Thread] = None

    def set_capability(self, capability: str) -> None:
        """Answer as a ``plain`` or a ``filtering`` server from the next request on."""
        if capability not in CAPABILITIES:
            raise ValueError(f"capability must be one of {', '.join(CAPABILITIES)}, not {capability!r}")
        if capability == "filtering" and self._ids is None:
            self._ids = {self.org.user_id(i): i for i in range(self.totals["Users"])}
        self.capability = capability

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> "BenchServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bench-scim", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> "BenchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def take_stats(self, reset: bool = False) -> dict:
        with self._stats_lock:
            data = self.stats.as_dict()
            data["pages_cached"] = len(self._pages)
            data["capability"] = self.capability
            data["render_seconds"] = round(self.render_seconds, 3)
            if reset:
                self.stats = Stats()
        return data

    # --- answering -------------------------------------------------------------------

    def answer(self, target: str, authorization: Optional[str],
               accept_encoding: str) -> Tuple[int, bytes, Dict[str, str]]:
        """(status, body, headers) for one GET, counted."""
        split = urlsplit(target)
        path = split.path.rstrip("/")
        endpoint = path[len(self.prefix) + 1:] if path.startswith(self.prefix + "/") else None
        kind = endpoint if endpoint in ENDPOINTS else "other"
        status, body, gz = self._respond(endpoint, split.query, authorization)
        headers = {"Content-Type": SCIM_JSON}
        if gz is not None and self.gzip_pages and "gzip" in accept_encoding.lower():
            body = gz
            headers["Content-Encoding"] = "gzip"
        with self._stats_lock:
            self.stats.requests[kind] += 1
            self.stats.statuses[status] += 1
            self.stats.body_bytes += len(body)
            self.stats.bytes_by_endpoint[kind] += len(body)
            self.stats.targets.append(target)
            self.stats.accept_encodings[accept_encoding] += 1
        return status, body, headers

    def _respond(self, endpoint: Optional[str], query: str, authorization: Optional[str]):
        if not (authorization and hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode())):
            return self._error(401, "invalid or expired bearer token")
        if endpoint == "ServiceProviderConfig":
            return 200, _dumps(service_provider_config(self.capability)), None
        if endpoint not in ENDPOINTS:
            return self._error(404, "no such endpoint")
        try:
            key = self._page_key(endpoint, dict(parse_qsl(query, keep_blank_values=True)))
        except _BadRequest as e:
            return self._error(400, e.detail, e.scim_type)
        page = self._pages.get(key)
        if page is None:
            with self._render_lock:
                page = self._pages.get(key)
                if page is None:
                    page = self._render(key)
                    self._keep(key, page)
        return page

    def _page_key(self, endpoint: str, params: Dict[str, str]) -> tuple:
        """(endpoint, mode, offset, count, attributes, excluded, matched): what the page holds. ``matched``
        is None for the whole listing, else the filter's users (listing indices, in order).
        :raises _BadRequest: a parameter this server refuses"""
        filtering = self.capability == "filtering"
        matched = self._matched(endpoint, params.get("filter")) if filtering else None
        total = self.totals[endpoint] if matched is None else len(matched)
        count = min(_int(params, "count", DEFAULT_COUNT), MAX_COUNT if matched is None else FILTER_MAX_RESULTS)
        mode, offset = _position(params, endpoint, total)
        attributes: Tuple[Path_, ...] = ()
        excluded: Tuple[Path_, ...] = ()
        if filtering:
            schemas = self._schemas[endpoint]
            attributes = parse_attribute_list(params.get("attributes"), schemas)
            excluded = parse_attribute_list(params.get("excludedAttributes"), schemas)
        return (endpoint, mode, offset, max(0, count), attributes, excluded, matched)

    def _matched(self, endpoint: str, text: Optional[str]) -> Optional[Tuple[int, ...]]:
        """The listing indices of the users ``text`` (an id filter) names, in listing order; None without a filter."""
        if text is None:
            return None
        if endpoint != "Users":
            raise _BadRequest("only Users can be filtered", "invalidFilter")
        try:
            ids = parse_id_filter(text)
        except InvalidFilter as e:
            raise _BadRequest(f"the filter is not supported: {e}", "invalidFilter") from None
        assert self._ids is not None, "built by set_capability"
        return tuple(sorted({self._ids[i] for i in ids if i in self._ids}))

    def _keep(self, key: tuple, page: Tuple[int, bytes, Optional[bytes]]) -> None:
        """Keep a rendered page: every whole-listing page, filtered ones while they fit FILTERED_CACHE_BYTES."""
        if key[-1] is not None:
            if self._filtered_bytes + len(page[1]) > FILTERED_CACHE_BYTES:
                return
            self._filtered_bytes += len(page[1])
        self._pages[key] = page

    def prerender(self, count: int, mode: str = "index") -> None:
        """Render every page of both endpoints for ``count`` (no attributes) ahead of the first client."""
        for endpoint, total in self.totals.items():
            for offset in range(0, total, max(1, count)):
                key = (endpoint, mode, offset, count, (), (), None)
                if key not in self._pages:
                    self._pages[key] = self._render(key)

    def _render(self, key: tuple):
        started = time.perf_counter()
        endpoint, mode, offset, count, attributes, excluded, matched = key
        make = self.org.user if endpoint == "Users" else self.org.group
        positions = range(self.totals[endpoint]) if matched is None else matched
        total = len(positions)
        stop = min(total, offset + count)
        resources = [project(make(i), attributes, excluded) for i in positions[offset:stop]]
        body: dict = {"schemas": [LIST_RESPONSE], "totalResults": total, "itemsPerPage": len(resources)}
        if mode == "index":
            body["startIndex"] = offset + 1
        elif stop < total and count > 0:
            body["nextCursor"] = _cursor(stop, endpoint)
        body["Resources"] = resources
        data = _dumps(body)
        page = (200, data, gzip.compress(data, 6) if self.gzip_pages else None)
        self.render_seconds += time.perf_counter() - started
        return page

    @staticmethod
    def _error(status: int, detail: str, scim_type: Optional[str] = None):
        body = {"schemas": [ERROR], "status": str(status), "detail": detail}
        if scim_type:
            body["scimType"] = scim_type
        return status, _dumps(body), None


class _BadRequest(Exception):
    """A request answered 400 (``detail``, ``scim_type``: RFC 7644 §3.12)."""

    def __init__(self, detail: str, scim_type: str):
        super().__init__(detail)
        self.detail, self.scim_type = detail, scim_type


def service_provider_config(capability: str) -> dict:
    """RFC 7643 §5: what a server of ``capability`` advertises (filtering: ``filter`` and its ``maxResults``)."""
    filtering = capability == "filtering"
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": False},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": filtering, "maxResults": FILTER_MAX_RESULTS if filtering else 0},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "pagination": {"cursor": True, "index": True, "defaultPaginationMethod": "index",
                       "defaultPageSize": DEFAULT_COUNT, "maxPageSize": MAX_COUNT, "cursorTimeout": 3600},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                                   "description": "Authentication with a bearer token"}],
    }


def listing_targets(prefix: str, totals: Dict[str, int], count: int, pagination: str) -> List[str]:
    """The request targets of the whole listing of Users, then Groups, ``count`` per page, as a client with
    ``coreweave_fetch = full`` asks for them: ``startIndex``/``count`` (index), or the walk of this server's
    cursors (cursor), with no filter and no attributes."""
    targets = []
    for endpoint in ENDPOINTS:
        total, url = totals[endpoint], f"{prefix.rstrip('/')}/{endpoint}"
        for offset in range(0, max(total, 1), count):
            if pagination == "index":
                targets.append(f"{url}?startIndex={offset + 1}&count={count}")
            else:
                targets.append(f"{url}?cursor={_cursor(offset, endpoint) if offset else ''}&count={count}")
    return targets


def _dumps(body) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _int(params: Dict[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise _BadRequest(f"{name} is not an integer", "invalidValue") from None


def _position(params: Dict[str, str], endpoint: str, total: int) -> Tuple[str, int]:
    """("cursor", offset) for a request carrying ``cursor`` (RFC 9865), else ("index", startIndex - 1)."""
    if "cursor" not in params:
        return "index", max(1, _int(params, "startIndex", 1)) - 1
    cursor = params["cursor"]
    offset = 0 if cursor == "" else _parse_cursor(cursor, endpoint)
    if offset is None or offset > total:
        raise _BadRequest("the cursor is not valid", "invalidCursor")
    return "cursor", offset


def _cursor(offset: int, endpoint: str) -> str:
    return f"{endpoint[0]}{offset:x}"  # RFC 9865 §2: unreserved characters only


def _parse_cursor(cursor: str, endpoint: str) -> Optional[int]:
    if len(cursor) < 2 or cursor[0] != endpoint[0]:
        return None
    try:
        return int(cursor[1:], 16)
    except ValueError:
        return None


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, bench: BenchServer):
        self.bench = bench
        super().__init__(address, handler)

    def handle_error(self, request, client_address):  # a client hanging up is not news
        if not isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "bench-scim/1"

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._counted = False

    def log_message(self, format, *args):
        pass  # quiet: no line per request on stderr

    def do_GET(self):
        bench: BenchServer = self.server.bench
        if self.path.startswith(CONTROL):
            return self._control(bench)
        if not self._counted:
            self._counted = True
            with bench._stats_lock:
                bench.stats.connections += 1
        status, body, headers = bench.answer(
            self.path, self.headers.get("Authorization"), self.headers.get("Accept-Encoding", "")
        )
        if bench.latency:
            time.sleep(bench.latency)  # one round trip to a server far away (each request has its thread)
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        self.wfile.write(body)

    def _control(self, bench: BenchServer):
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query))
        if split.path == CONTROL + "stats":
            body, status = _dumps(bench.take_stats(reset=query.get("reset") == "1")), 200
        elif split.path == CONTROL + "capability":
            try:
                bench.set_capability(query.get("set", bench.capability))
                body, status = _dumps({"capability": bench.capability}), 200
            except ValueError as e:
                body, status = _dumps({"detail": str(e)}), 400
        elif split.path == CONTROL + "latency":
            body, status = self._set_latency(bench, query.get("set", ""))
        else:
            body, status = b'{"detail":"unknown control path"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


    @staticmethod
    def _set_latency(bench: BenchServer, value: str) -> Tuple[bytes, int]:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if not 0 <= ms <= 10_000:  # nan fails too
            return _dumps({"detail": f"latency must be 0 to 10000 ms, not {value!r}"}), 400
        bench.latency = ms / 1000
        return _dumps({"latency_ms": ms}), 200


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=2_000)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--invalid", type=int, default=None, help="invalid records (default 0.3%% of the users)")
    parser.add_argument("--key-pool", type=int, default=None)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--ready-file", type=Path, help="written (JSON: port, base_url, org summary) once listening")
    parser.add_argument("--gzip", action="store_true", help="gzip pages for clients that accept it")
    parser.add_argument("--capability", choices=CAPABILITIES, default="plain",
                        help="plain: no filter support, filter and attributes ignored; filtering: id filters on "
                             "Users and attributes honoured, filter advertised in /ServiceProviderConfig")
    parser.add_argument("--prerender", type=int, default=0, metavar="COUNT",
                        help="render every page for this count (no attributes) before listening")
    parser.add_argument("--pagination", choices=("index", "cursor"), default="index",
                        help="the mode --prerender renders")
    args = parser.parse_args(argv)

    spec_args = dict(users=args.users, groups=args.groups, members=args.members, seed=args.seed, invalid=args.invalid)
    if args.key_pool:
        spec_args["key_pool"] = args.key_pool
    org = Org(OrgSpec(**spec_args), cache_dir=args.cache_dir)
    server = BenchServer(org, args.token_file.read_text().strip(), port=args.port, prefix=args.prefix,
                         gzip_pages=args.gzip, capability=args.capability)
    if args.prerender:
        server.prerender(args.prerender, args.pagination)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server._httpd.shutdown, daemon=True).start())
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps({"port": server.port, "base_url": server.base_url, "pid": os.getpid(),
                                   "summary": org.summary()}))
        os.replace(tmp, args.ready_file)
    print(f"bench-scim: {org.spec.users} users, {org.spec.groups} groups at {server.base_url}", file=sys.stderr,
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
