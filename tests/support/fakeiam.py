"""A small CoreWeave-IAM-like SCIM 2.0 server for tests, the demo and benchmarks.

Stdlib only. It serves ``GET <prefix>/Users`` and ``GET <prefix>/Groups`` from an
organisation given as ``{"Users": [...], "Groups": [...]}`` (SCIM resources, as
CoreWeave IAM returns them), with both pagination modes of
``docs/coreweave-iam-scim.md`` §3, and one resource by id (below):

* index (RFC 7644 §3.4.2.4): ``startIndex`` (1-based, default 1) and ``count``
  (default :data:`DEFAULT_COUNT`); the ListResponse carries ``schemas``,
  ``totalResults``, ``itemsPerPage``, ``startIndex`` and ``Resources``;
* cursor (RFC 9865): a request carrying a ``cursor`` parameter (empty on the first
  request) gets ``totalResults``, ``itemsPerPage``, ``Resources`` and, only while
  more remain, ``nextCursor``. A cursor this server did not issue gets a 400 with
  ``scimType`` ``invalidCursor``; after :meth:`FakeIAM.invalidate_cursors` the
  issued ones get ``invalidCursor`` or ``expiredCursor``.

``GET <prefix>/Users/<id>`` and ``GET <prefix>/Groups/<id>`` (RFC 7644 §3.4.1; the id
percent-decoded, one path segment) answer the resource as the listing would serve it
(``members_by``, ``attributes_mode``), or a 404 SCIM Error ``Resource <id> not found``;
same bearer token. They are recorded under the singular endpoints ``"User"`` and
``"Group"`` (:data:`RESOURCE_KINDS`), with :attr:`RecordedRequest.resource_id`, so
``iam.requests("Users")`` stays the listing requests and ``iam.requests("User")`` is
the lookups.

By default filters (``filter=``, ``groups=``, ``attributes=``) are recorded but
ignored: every page holds every resource, as a server that does not honour them
would answer. Each request's query parameters are recorded
(:attr:`RecordedRequest.params`), so tests can assert what a client sent. Off by
default, each of these makes the server act like one that supports more of SCIM:

* ``service_provider_config=True``: ``GET <prefix>/ServiceProviderConfig`` (RFC 7643
  §5; else a 404 as any unknown path) answers ``filter: {"supported":
  filter_supported, "maxResults": filter_max_results}``, the other required members
  (nothing else supported) and RFC 9865 ``pagination``; recorded as endpoint
  ``"ServiceProviderConfig"``; it takes the same bearer token. What it advertises
  is independent of ``filter_mode`` (a server may advertise a filter it ignores).
* ``filter_mode`` (``Users`` only; ``Groups`` always list every group):
  ``"ignore"`` (default) as above; ``"reject"``: a request carrying ``filter`` gets
  400 ``invalidFilter``; ``"honour"``: the filter a member-only fetch sends,
  ``id eq "<id>"`` terms joined by ``or`` (RFC 7644 §3.4.2.2: keywords and the
  attribute name case-insensitive, values JSON strings so ``\\"`` and ``\\\\`` escape),
  optionally in one pair of parentheses, lists the users with those ids, in org
  order, paged as the full listing is (``totalResults`` = the users matching; an
  unknown id matches nothing). Any other filter is a 400 ``invalidFilter``; more
  distinct ids than ``filter_max_results`` a 400 ``tooMany``. Three broken filters,
  parsed and checked as ``"honour"`` does: ``"extra"`` also matches one user not asked for
  (``filter_fault_user``, default the first listed user not asked for; none when
  every user was asked for), counted in ``totalResults``; ``"drop"`` leaves one
  requested listed user (``filter_fault_user``, default the first such id in the
  filter's order) out of ``Resources`` while ``totalResults`` still counts it;
  ``"truncate"``, a server that silently cuts long filters, matches only the first
  ``filter_truncate_after`` terms (default 1) of the filter, ``totalResults``
  counting what it serves.
* ``attributes_mode`` (``Users`` and ``Groups``): ``"ignore"`` (default);
  ``"reject"``: a request carrying ``attributes`` gets 400 ``invalidValue``;
  ``"honour"`` (RFC 7644 §3.9): each resource holds only ``id``, ``schemas`` and
  the attributes named (case-insensitive; sub-attributes as ``name.givenName`` or
  ``members.value``, also inside multi-valued ones; extension attributes by their
  schema URN, ``urn:...:CoreWeaveUser:sunkPosixUid`` or the bare URN for the whole
  extension; a core schema URN prefix is dropped). An empty ``attributes`` is no
  projection; ``"lose-active"``: honoured, but ``active`` is left out even when
  asked for (a broken projection). ``excludedAttributes`` stays ignored.

Python use::

    with FakeIAM(org, token="t0ken") as iam:
        iam.add_fault(Fault("Users", page=2, status=500))
        run_client(iam.base_url, token="t0ken")
        assert iam.request_count("Users") == 3
        assert [r.target for r in iam.requests("Users")][0] == "/scim/cw-demo/Users?startIndex=1&count=100"

Faults are plain values (:class:`Fault`) matched, in the order added, against the
endpoint and the page number a request asks for; each fires ``times`` times. A
``"User"``/``"Group"`` fault replaces a lookup's answer, found (200) or not (404).

Command line (the demo)::

    python tests/support/fakeiam.py --org demo/org.json --token-file PATH --port 0 --port-file PATH

writes the port to ``--port-file`` once listening, then prints one
``fakeiam: serving N users, M groups at <base_url> ...`` line to stderr (wait for
that line, or for the port file), logs one line per request to stderr (never the
token) and serves until SIGTERM or SIGINT (exit status 0).
"""

from __future__ import annotations

import argparse
import copy
import hmac
import http.server
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, Union
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "ATTRIBUTES_MODES",
    "DEFAULT_COUNT",
    "DEFAULT_PREFIX",
    "ENDPOINTS",
    "FILTER_MODES",
    "RESOURCE_KINDS",
    "SERVICE_PROVIDER_CONFIG",
    "FakeIAM",
    "Fault",
    "RecordedRequest",
    "load_org",
    "main",
]

DEFAULT_PREFIX = "/scim/cw-demo"
DEFAULT_COUNT = 100
ENDPOINTS = ("Users", "Groups")
SERVICE_PROVIDER_CONFIG = "ServiceProviderConfig"
# One resource by id (GET <prefix>/Users/<id>): the endpoint it is recorded under -> its listing's.
RESOURCE_KINDS = {"User": "Users", "Group": "Groups"}
FILTER_MODES = ("ignore", "honour", "reject", "extra", "drop", "truncate")
ATTRIBUTES_MODES = ("ignore", "honour", "reject", "lose-active")

SPC_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
CORE_SCHEMAS = ("urn:ietf:params:scim:schemas:core:2.0:user", "urn:ietf:params:scim:schemas:core:2.0:group")
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
SCIM_JSON = "application/scim+json"
CW_EXTENSION = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"

Body = Union[bytes, str, dict, list, Callable[[dict], Any], None]


@dataclass
class Fault:
    """What to do instead of the normal answer, for matching requests.

    :param endpoint: ``"Users"``, ``"Groups"``, ``"*"`` (both), ``"ServiceProviderConfig"``
        (served only with ``service_provider_config=True``) or ``"User"``/``"Group"``
        (one resource by id; its page is None); ``"*"`` matches only the two listings.
        Faults apply only to authorized, well-formed GETs (not to 401, 404, or 400 such
        as invalidCursor or invalidFilter), except that a lookup's 404 (no such id) is
        replaced too.
    :param page: the 1-based page number the request asks for (index mode:
        ``(startIndex - 1) // count + 1``; cursor mode: the page the cursor points
        at, 1 for the empty cursor); ``None`` matches every request.
    :param status: HTTP status to answer; with no ``body`` a SCIM Error body is sent.
    :param body: replaces the body: ``bytes``/``str`` are sent as is, ``dict``/``list``
        as JSON, a callable gets a deep copy of the normal ListResponse dict (of a
        lookup: the resource, or the 404 Error) and returns one of those
        (e.g. ``lambda page: {**page, "totalResults": 99}``).
        The Content-Type stays ``application/scim+json`` unless ``headers`` set it.
    :param headers: extra response headers (e.g. ``{"Retry-After": "2"}``).
    :param delay: seconds to wait before answering (cut short when the server closes).
    :param replay_page: answer as if page ``replay_page`` had been asked for (a
        repeated page: same ``Resources``, same ``startIndex``/``nextCursor``).
    :param disconnect: close the connection without sending anything.
    :param cut_after: send the status line, the headers (with the full
        ``Content-Length``) and only this many body bytes, then close the
        connection: a connection reset mid-body.
    :param chunked: send the body with ``Transfer-Encoding: chunked`` and no
        ``Content-Length`` (a client cannot know the size in advance).
    :param drip: seconds to wait between pieces of ``drip_bytes`` body bytes: a
        server that answers at once but trickles the body (each piece arrives
        well within a read timeout).
    :param header_drip: seconds to wait before each of ``header_lines`` extra
        header lines (``X-Pad-<n>: x``): a server trickling its headers, so a
        client is still waiting for the status and headers.
    :param times: how many matching requests it serves; ``None`` for all of them.

    ``fired`` counts the requests it served.
    """

    endpoint: str
    page: int | None = None
    status: int | None = None
    body: Body = None
    headers: Mapping[str, str] | None = None
    delay: float = 0.0
    replay_page: int | None = None
    disconnect: bool = False
    cut_after: int | None = None
    chunked: bool = False
    drip: float = 0.0
    drip_bytes: int = 64
    header_drip: float = 0.0
    header_lines: int = 0
    times: int | None = 1
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.endpoint not in (*ENDPOINTS, "*", SERVICE_PROVIDER_CONFIG, *RESOURCE_KINDS):
            raise ValueError(f"Fault endpoint must be one of {ENDPOINTS}, '*', {SERVICE_PROVIDER_CONFIG!r} or"
                             f" {tuple(RESOURCE_KINDS)}: {self.endpoint!r}")
        if self.page is not None and self.page < 1:
            raise ValueError(f"Fault page is 1-based: {self.page!r}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"Fault times must be >= 1 or None: {self.times!r}")
        if self.cut_after is not None and self.cut_after < 0:
            raise ValueError(f"Fault cut_after must be >= 0: {self.cut_after!r}")
        if self.drip < 0 or self.drip_bytes < 1:
            raise ValueError(f"Fault drip must be >= 0 and drip_bytes >= 1: {self.drip!r}, {self.drip_bytes!r}")

    # Readable constructors for the usual cases.
    @classmethod
    def error(cls, endpoint: str, page: int | None = None, status: int = 500, **kw: Any) -> Fault:
        """A SCIM Error response with ``status``."""
        return cls(endpoint, page, status=status, **kw)

    @classmethod
    def rate_limited(cls, endpoint: str, page: int | None = None, retry_after: str | int = 1, **kw: Any) -> Fault:
        """A 429 with ``Retry-After`` (seconds or an HTTP date)."""
        return cls(endpoint, page, status=429, headers={"Retry-After": str(retry_after)}, **kw)

    @classmethod
    def not_json(cls, endpoint: str, page: int | None = None, **kw: Any) -> Fault:
        """A 200 whose body is an HTML proxy error page, not JSON."""
        kw.setdefault("body", b"<html><body><h1>502 Bad Gateway</h1></body></html>\n")
        return cls(endpoint, page, **kw)

    @classmethod
    def wrong_total(cls, endpoint: str, page: int | None = None, total: int | None = None, **kw: Any) -> Fault:
        """The normal page with ``totalResults`` replaced (``None``: the key removed)."""

        def rewrite(body: dict) -> dict:
            body.pop("totalResults", None)
            if total is not None:
                body["totalResults"] = total
            return body

        return cls(endpoint, page, body=rewrite, **kw)

    @classmethod
    def empty_page(cls, endpoint: str, page: int | None = None, **kw: Any) -> Fault:
        """The normal page with no ``Resources`` (``itemsPerPage`` 0), totals kept."""

        def rewrite(body: dict) -> dict:
            body["Resources"] = []
            body["itemsPerPage"] = 0
            return body

        return cls(endpoint, page, body=rewrite, **kw)

    @classmethod
    def repeated_page(cls, endpoint: str, page: int, of_page: int = 1, **kw: Any) -> Fault:
        """Page ``page`` answered with the content of page ``of_page``."""
        return cls(endpoint, page, replay_page=of_page, **kw)

    @classmethod
    def stall(cls, endpoint: str, page: int | None = None, seconds: float = 5.0, **kw: Any) -> Fault:
        """The normal answer, after ``seconds``."""
        return cls(endpoint, page, delay=seconds, **kw)

    @classmethod
    def cut_mid_body(cls, endpoint: str, page: int | None = None, after: int = 20, **kw: Any) -> Fault:
        """The normal answer, its connection reset after ``after`` body bytes."""
        return cls(endpoint, page, cut_after=after, **kw)

    @classmethod
    def truncated_json(cls, endpoint: str, page: int | None = None, keep: float = 0.5, **kw: Any) -> Fault:
        """A complete HTTP answer whose JSON body stops after ``keep`` of itself."""

        def rewrite(body: dict) -> bytes:
            text = json.dumps(body).encode("utf-8")
            return text[: int(len(text) * keep)]

        return cls(endpoint, page, body=rewrite, **kw)

    @classmethod
    def content_type(cls, endpoint: str, page: int | None = None, value: str = "text/plain", **kw: Any) -> Fault:
        """The normal page (valid JSON) under another ``Content-Type``."""
        return cls(endpoint, page, headers={"Content-Type": value, **(kw.pop("headers", None) or {})}, **kw)

    @classmethod
    def html_page(cls, endpoint: str, page: int | None = None, **kw: Any) -> Fault:
        """A 200 carrying an HTML error page, as ``text/html`` (a captive proxy)."""
        kw.setdefault("body", b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1></body></html>\n")
        return cls.content_type(endpoint, page, "text/html; charset=utf-8", **kw)

    @classmethod
    def huge_page(cls, endpoint: str, page: int | None = None, size: int = 1 << 20, **kw: Any) -> Fault:
        """The normal page padded with an extra attribute to at least ``size`` bytes."""

        def rewrite(body: dict) -> dict:
            body["x-padding"] = "x" * size
            return body

        return cls(endpoint, page, body=rewrite, **kw)

    @classmethod
    def redirect(cls, endpoint: str, page: int | None = None, location: str = "", status: int = 302,
                 **kw: Any) -> Fault:
        """A redirect to ``location`` (with an empty body)."""
        return cls(endpoint, page, status=status, body=b"", headers={"Location": location}, **kw)

    @classmethod
    def slow_headers(cls, endpoint: str, page: int | None = None, seconds_per_line: float = 0.5, lines: int = 20,
                     **kw: Any) -> Fault:
        """The normal page after ``lines`` header lines sent ``seconds_per_line`` apart."""
        return cls(endpoint, page, header_drip=seconds_per_line, header_lines=lines, **kw)

    @classmethod
    def slow_body(cls, endpoint: str, page: int | None = None, seconds_per_piece: float = 0.5, piece: int = 64,
                  **kw: Any) -> Fault:
        """The normal page, trickled ``piece`` bytes at a time."""
        return cls(endpoint, page, drip=seconds_per_piece, drip_bytes=piece, **kw)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw and answered it (the token is never recorded)."""

    method: str
    target: str  # path + query, as sent
    endpoint: str | None  # "Users", "Groups", "ServiceProviderConfig" (when served), "User", "Group", or None
    params: dict[str, str]  # last value of each query parameter, blanks kept
    status: int  # 0 when the connection was dropped
    bytes_sent: int  # body bytes
    page: int | None  # page number asked for, when known
    authorized: bool
    fault: Fault | None = None
    authorization_sent: bool = False  # an Authorization header arrived (its value is never kept)
    resource_id: str | None = None  # the id a "User"/"Group" lookup asked for, percent-decoded


@dataclass
class _Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    page: int | None = None
    fault: Fault | None = None
    disconnect: bool = False
    delay: float = 0.0
    resource_id: str | None = None


class _ClientError(Exception):
    def __init__(self, status: int, detail: str, scim_type: str | None = None):
        super().__init__(detail)
        self.status, self.detail, self.scim_type = status, detail, scim_type


def load_org(source: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """Return a validated deep copy of an org given as a dict or a JSON file path.

    :raises ValueError: when ``Users``/``Groups`` are not lists of objects with a
        string ``id``, or an ``id`` repeats.
    """
    if isinstance(source, (str, os.PathLike)):
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    else:
        data = copy.deepcopy(dict(source))
    if not isinstance(data, dict):
        raise ValueError(f"org must be a JSON object, got {type(data).__name__}")
    org: dict[str, list[dict[str, Any]]] = {}
    for endpoint in ENDPOINTS:
        resources = data.get(endpoint, [])
        if not isinstance(resources, list):
            raise ValueError(f"org[{endpoint!r}] must be a list")
        seen: set[str] = set()
        for i, resource in enumerate(resources):
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
                raise ValueError(f"org[{endpoint!r}][{i}] must be an object with a string 'id'")
            if resource["id"] in seen:
                raise ValueError(f"org[{endpoint!r}] repeats id {resource['id']!r}")
            seen.add(resource["id"])
        org[endpoint] = resources
    return org


def _error_body(status: int, detail: str, scim_type: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schemas": [ERROR], "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    body["detail"] = detail
    return body


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    return json.dumps(body).encode("utf-8")


def _name_members(groups: list[dict[str, Any]], users: list[dict[str, Any]], key: str) -> None:
    """Put each member's POSIX name (the listed user's ``sunkPosixUsername``) in ``key``
    of the member object, in place; members that are no listed user stay as they are."""
    names = {u["id"]: (u.get(CW_EXTENSION) or {}).get("sunkPosixUsername") for u in users}
    for group in groups:
        for member in group.get("members") or ():
            name = names.get(member.get("value")) if isinstance(member, dict) else None
            if isinstance(name, str):
                member[key] = name


def _int_param(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _ClientError(400, f"{name} must be an integer: {raw!r}", "invalidValue") from None


# One ``id eq "<JSON string>"`` term; the filters a member-only fetch sends are these joined by ``or``.
_ID_TERM = r'id\s+eq\s+("(?:[^"\\]|\\.)*")'
_ID_FILTER = re.compile(rf"\s*{_ID_TERM}(?:\s+or\s+{_ID_TERM})*\s*", re.IGNORECASE | re.DOTALL)


def _parse_id_filter(text: str) -> list[str]:
    """The ids of ``id eq "a" or id eq "b"`` (optionally in parentheses), in order.

    :raises _ClientError: 400 ``invalidFilter`` for any other filter.
    """
    inner = text.strip()
    if inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1]
    if not _ID_FILTER.fullmatch(inner):
        raise _ClientError(400, f"unsupported filter (only id eq \"...\" joined by or): {text!r}", "invalidFilter")
    try:
        # Terms follow one another left to right, so findall sees exactly the validated ones.
        values = [json.loads(quoted) for quoted in re.findall(_ID_TERM, inner, re.IGNORECASE | re.DOTALL)]
    except json.JSONDecodeError:
        raise _ClientError(400, f"bad string escape in filter: {text!r}", "invalidFilter") from None
    return values


def _attribute_path(name: str, resource: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The lower-cased key path ``name`` selects in ``resource``: an extension URN is
    the resource's key, a core schema URN prefix is dropped; None: no such schema."""
    if not name.startswith("urn:"):
        return tuple(name.split("."))
    for urn in CORE_SCHEMAS:
        if name.startswith(urn + ":"):
            return tuple(name[len(urn) + 1 :].split("."))
    urns = sorted((k.lower() for k in resource if k.startswith("urn:")), key=len, reverse=True)
    for urn in urns:
        if name == urn or name.startswith(urn + ":"):
            rest = name[len(urn) + 1 :]
            return (urn, *rest.split(".")) if rest else (urn,)
    return None


def _keep(node: Any, paths: list[tuple[str, ...]]) -> Any:
    """``node`` with only the key paths given (lower-cased), through lists."""
    if any(not p for p in paths):
        return node
    if isinstance(node, list):
        return [_keep(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        below = [p[1:] for p in paths if p[0] == key.lower()]
        if below:
            out[key] = _keep(value, below)
    return out


def _project(resource: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``resource`` with only ``id``, ``schemas`` and the attributes ``names`` (lower-cased) select."""
    paths = [p for p in (_attribute_path(n, resource) for n in names) if p is not None]
    return _keep(resource, [*paths, ("id",), ("schemas",)])


@dataclass(frozen=True)
class _Selection:
    """What one listing request asks for beyond paging (None: everything)."""

    ids: tuple[str, ...] | None = None  # an honoured id filter's ids, in the order asked
    attributes: tuple[str, ...] | None = None  # an honoured attributes=, names lower-cased


def _check_modes(filter_mode: str, attributes_mode: str, filter_max_results: int, filter_truncate_after: int) -> None:
    if filter_mode not in FILTER_MODES:
        raise ValueError(f"filter_mode must be one of {FILTER_MODES}: {filter_mode!r}")
    if attributes_mode not in ATTRIBUTES_MODES:
        raise ValueError(f"attributes_mode must be one of {ATTRIBUTES_MODES}: {attributes_mode!r}")
    if filter_max_results < 1:
        raise ValueError(f"filter_max_results must be >= 1: {filter_max_results!r}")
    if filter_truncate_after < 1:
        raise ValueError(f"filter_truncate_after must be >= 1: {filter_truncate_after!r}")


class FakeIAM:
    """A loopback SCIM server serving one org; a context manager.

    :param org: ``{"Users": [...], "Groups": [...]}`` or a path to such a JSON file.
    :param token: the bearer token to require; ``None`` accepts every request.
    :param prefix: URL path before ``/Users`` and ``/Groups``.
    :param host, port: where to listen; port 0 picks a free one.
    :param default_count: page size when a request has no ``count``.
    :param max_page_size: cap on ``count`` (a server answering smaller pages than asked).
    :param cursor_pagination: when False the ``cursor`` parameter is ignored and the
        answer is index-paged (a server that does not know RFC 9865).
    :param echo_count: report ``itemsPerPage`` as the page size (``count``, or the
        default, capped by ``max_page_size``), also on a last, short page, as some SCIM
        server libraries do (RFC 7644 says the number returned).
    :param members_by: serve group members the way CoreWeave's fork reads them: each
        member that is a listed user gets that user's POSIX name (``sunkPosixUsername``
        of the CoreWeave extension) in this sub-attribute: ``"value"`` (the name instead
        of the id), ``"display"`` or ``"userName"``; None: as given (``value`` = the id).
    :param service_provider_config: serve ``GET <prefix>/ServiceProviderConfig``
        (else it is a 404), advertising ``filter_supported`` and ``filter_max_results``.
    :param filter_mode: what ``filter`` on ``Users`` does, one of :data:`FILTER_MODES`:
        ``"ignore"``, ``"honour"``, ``"reject"``, or the broken ``"extra"``/``"drop"``/``"truncate"``
        (see the module docstring).
    :param filter_fault_user: the user id ``"extra"`` adds or ``"drop"`` leaves out;
        None: the first eligible one.
    :param filter_truncate_after: how many of a filter's terms ``"truncate"`` matches.
    :param attributes_mode: what ``attributes`` on ``Users``/``Groups`` does, one of
        :data:`ATTRIBUTES_MODES`: ``"ignore"``, ``"honour"``, ``"reject"`` or ``"lose-active"``.
    :param log: stream for one line per request (e.g. ``sys.stderr``); None: silent.

    Everything read or set from Python is thread-safe.
    """

    def __init__(
        self,
        org: Mapping[str, Any] | str | os.PathLike[str],
        *,
        token: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        host: str = "127.0.0.1",
        port: int = 0,
        default_count: int = DEFAULT_COUNT,
        max_page_size: int | None = None,
        cursor_pagination: bool = True,
        echo_count: bool = False,
        members_by: str | None = None,
        service_provider_config: bool = False,
        filter_supported: bool = False,
        filter_max_results: int = 200,
        filter_mode: str = "ignore",
        filter_fault_user: str | None = None,
        filter_truncate_after: int = 1,
        attributes_mode: str = "ignore",
        log: TextIO | None = None,
    ):
        _check_modes(filter_mode, attributes_mode, filter_max_results, filter_truncate_after)
        if members_by not in (None, "value", "display", "userName"):
            raise ValueError(f"members_by must be value, display, userName or None: {members_by!r}")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"prefix must start with '/' and not end with '/': {prefix!r}")
        if default_count < 0:
            raise ValueError(f"default_count must be >= 0: {default_count!r}")
        if max_page_size is not None and max_page_size < 1:
            raise ValueError(f"max_page_size must be >= 1: {max_page_size!r}")
        self._org = load_org(org)
        self.token = token
        self.prefix = prefix
        self.default_count = default_count
        self.max_page_size = max_page_size
        self.cursor_pagination = cursor_pagination
        self.members_by = members_by
        self.echo_count = echo_count
        self.service_provider_config = service_provider_config
        self.filter_supported = filter_supported
        self.filter_max_results = filter_max_results
        self.filter_mode = filter_mode
        self.filter_fault_user = filter_fault_user
        self.filter_truncate_after = filter_truncate_after
        self.attributes_mode = attributes_mode
        self.log = log
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._requests: list[RecordedRequest] = []
        self._cursors: dict[str, tuple[str, int]] = {}  # cursor -> (endpoint, offset)
        self._dead_cursors: dict[str, str] = {}  # cursor -> scimType
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> FakeIAM:
        """Bind, listen and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("FakeIAM already started")
        self._server = _Server((self._host, self._port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"FakeIAM:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, drop open connections, wait for the handler threads."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.shutdown()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeIAM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeIAM not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port><prefix>``: the SCIM base URL (no trailing slash)."""
        return f"http://{self._host}:{self.port}{self.prefix}"

    # -- org -------------------------------------------------------------
    @property
    def org(self) -> dict[str, list[dict[str, Any]]]:
        """A deep copy of the org being served."""
        with self._lock:
            return copy.deepcopy(self._org)

    def set_org(self, org: Mapping[str, Any] | str | os.PathLike[str]) -> None:
        """Serve another org from the next request on (issued cursors stay valid)."""
        new = load_org(org)
        with self._lock:
            self._org = new

    # -- faults ----------------------------------------------------------
    def add_fault(self, fault: Fault) -> Fault:
        """Queue a fault (matched in the order added); returns it, to read ``fired``."""
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, endpoint: str, page: int | None = None, status: int = 500, times: int | None = 1,
             **kw: Any) -> Fault:
        """Shorthand: ``add_fault(Fault(endpoint, page, status=status, times=times, **kw))``."""
        return self.add_fault(Fault(endpoint, page, status=status, times=times, **kw))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults that can still fire."""
        with self._lock:
            return [f for f in self._faults if f.times is None or f.fired < f.times]

    def invalidate_cursors(self, scim_type: str = "invalidCursor") -> int:
        """Make every cursor issued so far answer 400 with ``scim_type``
        (``invalidCursor`` or ``expiredCursor``); returns how many."""
        if scim_type not in ("invalidCursor", "expiredCursor"):
            raise ValueError(f"scim_type must be invalidCursor or expiredCursor: {scim_type!r}")
        with self._lock:
            for cursor in self._cursors:
                self._dead_cursors[cursor] = scim_type
            n = len(self._cursors)
            self._cursors.clear()
            return n

    # -- observation -----------------------------------------------------
    def requests(self, endpoint: str | None = None) -> list[RecordedRequest]:
        """Requests served so far, oldest first; only ``endpoint``'s when given."""
        with self._lock:
            return [r for r in self._requests if endpoint is None or r.endpoint == endpoint]

    def request_count(self, endpoint: str | None = None) -> int:
        return len(self.requests(endpoint))

    @property
    def bytes_sent(self) -> int:
        """Response body bytes sent so far, all endpoints."""
        with self._lock:
            return sum(r.bytes_sent for r in self._requests)

    def reset_stats(self) -> None:
        """Forget recorded requests (faults and cursors stay)."""
        with self._lock:
            self._requests.clear()

    # -- request handling (called from handler threads) ------------------
    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, value = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def _answer(self, method: str, target: str, authorized: bool) -> tuple[_Response, str | None, dict[str, str]]:
        """The response to one request, its endpoint and its query parameters.
        Faults apply only to authorized, well-formed GETs; errors are answered as is."""
        split = urlsplit(target)
        params = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        endpoint, resource_id = self._route(split.path)
        try:
            response = self._respond(method, split.path, endpoint, resource_id, params, authorized)
        except _ClientError as e:
            response = _Response(e.status, _encode(_error_body(e.status, e.detail, e.scim_type)))
        response.resource_id = resource_id
        return response, endpoint, params

    def _respond(self, method: str, path: str, endpoint: str | None, resource_id: str | None,
                 params: Mapping[str, str], authorized: bool) -> _Response:
        """:raises _ClientError: for an answer no fault replaces (404, 405, 400)."""
        if endpoint is None:
            raise _ClientError(404, f"no SCIM endpoint at {path!r}")
        if method != "GET":
            raise _ClientError(405, f"{method} not supported: this fake is read-only")
        if not authorized:
            response = _Response(401, headers={"WWW-Authenticate": 'Bearer realm="scim"'})
            response.body = _encode(_error_body(401, "invalid or expired bearer token"))
            return response
        if endpoint == SERVICE_PROVIDER_CONFIG:
            return self._page_response(endpoint, None, lambda _: self._service_provider_config())
        if resource_id is not None:
            return self._lookup(endpoint, resource_id, self._selection(endpoint, params))
        page_no, build = self._plan_page(endpoint, params)
        return self._page_response(endpoint, page_no, build)

    def _route(self, path: str) -> tuple[str | None, str | None]:
        """The endpoint a request path names (None for any other path) and, for
        ``<prefix>/Users/<id>`` or ``<prefix>/Groups/<id>``, the id, percent-decoded."""
        rest = path[len(self.prefix) + 1 :] if path.startswith(self.prefix + "/") else None
        if rest in ENDPOINTS or (rest == SERVICE_PROVIDER_CONFIG and self.service_provider_config):
            return rest, None
        listing, _, quoted = (rest or "").partition("/")
        kind = next((k for k, v in RESOURCE_KINDS.items() if v == listing), None)
        if kind is None or not quoted or "/" in quoted:
            return None, None
        return kind, unquote(quoted)

    def _lookup(self, kind: str, resource_id: str, selection: _Selection) -> _Response:
        """One resource as its listing serves it (200), or a 404 SCIM Error; a fault may replace either."""
        with self._lock:
            found = next((r for r in self._org[RESOURCE_KINDS[kind]] if r["id"] == resource_id), None)
            resource = copy.deepcopy(found)
            if resource is not None and kind == "Group" and self.members_by:
                _name_members([resource], self._org["Users"], self.members_by)
        if resource is None:
            error = _error_body(404, f"Resource {resource_id} not found")
            return self._page_response(kind, None, lambda _: copy.deepcopy(error), status=404)
        (served,) = self._projected([resource], selection)
        return self._page_response(kind, None, lambda _: copy.deepcopy(served))

    def _service_provider_config(self) -> dict[str, Any]:
        """RFC 7643 §5 (all required members) plus RFC 9865 §4 ``pagination``."""
        pagination: dict[str, Any] = {"cursor": self.cursor_pagination, "index": True,
                                      "defaultPaginationMethod": "index", "defaultPageSize": self.default_count}
        if self.max_page_size is not None:
            pagination["maxPageSize"] = self.max_page_size
        return {
            "schemas": [SPC_SCHEMA],
            "patch": {"supported": False},
            "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": self.filter_supported, "maxResults": self.filter_max_results},
            "changePassword": {"supported": False},
            "sort": {"supported": False},
            "etag": {"supported": False},
            "pagination": pagination,
            "authenticationSchemes": [{"type": "oauthbearertoken", "name": "OAuth Bearer Token",
                                       "description": "Authentication with a bearer token"}],
            "meta": {"resourceType": "ServiceProviderConfig", "location": f"{self.prefix}/{SERVICE_PROVIDER_CONFIG}"},
        }

    def _selection(self, endpoint: str, params: Mapping[str, str]) -> _Selection:
        """The honoured ``filter`` and ``attributes`` of a listing request.

        :raises _ClientError: 400 for a filter or attributes refused by the modes."""
        ids = None
        if endpoint == "Users" and "filter" in params and self.filter_mode != "ignore":
            if self.filter_mode == "reject":
                raise _ClientError(400, "filter is not supported by this server", "invalidFilter")
            ids = tuple(_parse_id_filter(params["filter"]))
            if len(set(ids)) > self.filter_max_results:
                raise _ClientError(400, f"filter asks for {len(set(ids))} ids, more than maxResults"
                                        f" {self.filter_max_results}", "tooMany")
        attributes = None
        if "attributes" in params and self.attributes_mode != "ignore":
            if self.attributes_mode == "reject":
                raise _ClientError(400, "attributes is not supported by this server", "invalidValue")
            names = tuple(n.strip().lower() for n in params["attributes"].split(","))
            attributes = tuple(n for n in names if n) or None
        return _Selection(ids, attributes)

    def _listed(self, endpoint: str, selection: _Selection) -> tuple[list[dict[str, Any]], str | None]:
        """The resources a listing pages through and the id of one to leave out of
        its pages (``"drop"``); call with the lock held."""
        resources = self._org[endpoint]
        if selection.ids is None:
            return resources, None
        wanted = set(selection.ids)
        fault_user, extra, drop = self.filter_fault_user, None, None
        if self.filter_mode == "truncate":
            wanted = set(selection.ids[: self.filter_truncate_after])
        elif self.filter_mode == "extra":
            extra = fault_user or next((r["id"] for r in resources if r["id"] not in wanted), None)
        elif self.filter_mode == "drop":
            listed = {r["id"] for r in resources}
            drop = fault_user or next((i for i in selection.ids if i in listed), None)
        return [r for r in resources if r["id"] in wanted or r["id"] == extra], drop

    def _plan_page(self, endpoint: str, params: Mapping[str, str]) -> tuple[int, Callable[[int | None], dict]]:
        """Validate the paging parameters; return the page number and a function
        building the body of any page number (None: the asked one)."""
        count = _int_param(params, "count")
        count = self.default_count if count is None else max(count, 0)
        if self.max_page_size is not None:
            count = min(count, self.max_page_size)
        by_cursor = self.cursor_pagination and "cursor" in params
        if by_cursor:
            if "startIndex" in params:
                raise _ClientError(400, "a request cannot carry both cursor and startIndex", "invalidValue")
            cursor = params["cursor"]
            if cursor == "":
                offset = 0
            else:
                with self._lock:
                    issued = self._cursors.get(cursor)
                    dead = self._dead_cursors.get(cursor)
                if issued is None or issued[0] != endpoint:
                    scim_type = dead or "invalidCursor"
                    raise _ClientError(400,
                                       f"cursor is {'expired' if dead == 'expiredCursor' else 'invalid'}: {cursor!r}",
                                       scim_type)
                offset = issued[1]
        else:
            start = _int_param(params, "startIndex")
            offset = max(start or 1, 1) - 1
        page_no = offset // count + 1 if count else 1
        selection = self._selection(endpoint, params)

        def build(as_page: int | None) -> dict:
            first = offset if as_page is None else (as_page - 1) * count
            chunk, total = self._chunk(endpoint, selection, first, count)
            per_page = count if self.echo_count else len(chunk)
            body: dict[str, Any] = {"schemas": [LIST_RESPONSE], "totalResults": total, "itemsPerPage": per_page}
            if by_cursor:
                if count and first + count < total:
                    body["nextCursor"] = self._issue_cursor(endpoint, first + count)
            else:
                body["startIndex"] = first + 1
            body["Resources"] = chunk
            return body

        return page_no, build

    def _chunk(self, endpoint: str, selection: _Selection, first: int, count: int) -> tuple[list[dict], int]:
        """Copies of the resources of one page, as served, and ``totalResults``."""
        with self._lock:
            resources, drop = self._listed(endpoint, selection)
            chunk = copy.deepcopy([r for r in resources[first : first + count] if r["id"] != drop])
            if endpoint == "Groups" and self.members_by:
                _name_members(chunk, self._org["Users"], self.members_by)
            total = len(resources)
        return self._projected(chunk, selection), total

    def _projected(self, resources: list[dict], selection: _Selection) -> list[dict]:
        """The resources with only the attributes an honoured ``attributes=`` names."""
        if selection.attributes is None:
            return resources
        names = selection.attributes
        if self.attributes_mode == "lose-active":
            names = tuple(n for n in names if n != "active")
        return [_project(r, names) for r in resources]

    def _issue_cursor(self, endpoint: str, offset: int) -> str:
        """The cursor of a position: one per (endpoint, offset) until
        :meth:`invalidate_cursors`, so a repeated page repeats its ``nextCursor``."""
        with self._lock:
            for cursor, position in self._cursors.items():
                if position == (endpoint, offset):
                    return cursor
            cursor = secrets.token_urlsafe(12)  # RFC 9865 §2: unreserved characters only
            self._cursors[cursor] = (endpoint, offset)
            return cursor

    def _take_fault(self, endpoint: str | None, page: int | None) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times is not None and fault.fired >= fault.times:
                    continue
                if fault.endpoint != endpoint and (fault.endpoint != "*" or endpoint not in ENDPOINTS):
                    continue
                if fault.page is not None and fault.page != page:
                    continue
                fault.fired += 1
                return fault
        return None

    def _page_response(self, endpoint: str, page: int | None, build: Callable[[int | None], dict],
                       status: int = 200) -> _Response:
        """The answer ``build`` makes (with ``status``), or what a matching fault makes instead."""
        response = _Response(status, page=page)
        fault = response.fault = self._take_fault(endpoint, page)
        if fault is None:
            response.body = _encode(build(None))
            return response
        response.delay = fault.delay
        response.disconnect = fault.disconnect
        if fault.status is not None:
            response.status = fault.status
        if callable(fault.body):
            response.body = _encode(fault.body(build(fault.replay_page)))
        elif fault.body is not None:
            response.body = _encode(fault.body)
        elif fault.status is not None and fault.status != 200:
            scim_type = "tooMany" if fault.status == 429 else None
            response.body = _encode(_error_body(fault.status, f"injected fault: HTTP {fault.status}", scim_type))
        else:
            response.body = _encode(build(fault.replay_page))
        response.headers.update(fault.headers or {})
        return response

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
        if self.log is not None:
            self.log.write(
                f"fakeiam: {request.method} {request.target} -> {request.status or 'dropped'}"
                f" {request.bytes_sent}B{' fault' if request.fault else ''}\n"
            )
            self.log.flush()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, iam: FakeIAM):
        self.iam = iam
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up, or close() dropping a connection, is not an error.
        if isinstance(sys.exc_info()[1], (ConnectionError, socket.timeout)) or self.iam._closing.is_set():
            return
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests.Session uses it
    server_version = "FakeIAM/1.0"
    timeout = 60  # idle keep-alive connections end on their own
    # Headers and body leave in one buffered write with Nagle off: no 40 ms
    # delayed-ACK stall per keep-alive request (it would skew the benchmarks).
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.iam._lock:
            self.server.iam._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.iam._lock:
            self.server.iam._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # FakeIAM._record logs one line per request

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        iam = self.server.iam
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        authorized = iam._authorized(self.headers.get("Authorization"))
        response, endpoint, params = iam._answer(self.command, self.path, authorized)
        if response.delay:
            iam._closing.wait(response.delay)
        dropped = response.disconnect or iam._closing.is_set()
        fault = response.fault
        cut_after = None if fault is None else fault.cut_after
        sent = len(response.body) if cut_after is None else min(cut_after, len(response.body))
        # Record before answering, so a client that has its answer sees it counted.
        iam._record(
            RecordedRequest(
                method=self.command,
                target=self.path,
                endpoint=endpoint,
                params=dict(params),
                status=0 if dropped else response.status,
                bytes_sent=0 if dropped else sent,
                page=response.page,
                authorized=authorized,
                fault=response.fault,
                authorization_sent="Authorization" in self.headers,
                resource_id=response.resource_id,
            )
        )
        if dropped:
            self._hang_up()
            return
        chunked = fault is not None and fault.chunked
        if not self._send_head(response, chunked):
            return
        if self._send_body(response.body[:sent], fault, chunked):
            return
        self._hang_up()

    def _send_head(self, response: _Response, chunked: bool) -> bool:
        """Send the status line and headers, the fault's padding ones dripped; False once hung up."""
        iam = self.server.iam
        fault = response.fault
        self.send_response(response.status)
        if fault is not None and fault.header_lines:
            try:
                for n in range(fault.header_lines):
                    self.send_header(f"X-Pad-{n}", "x")
                    self.wfile.write(b"".join(self._headers_buffer))
                    self.wfile.flush()
                    self._headers_buffer = []
                    if iam._closing.wait(fault.header_drip):
                        break
            except (BrokenPipeError, ConnectionResetError):
                self._hang_up()
                return False
        for name, value in {"Content-Type": SCIM_JSON, **response.headers}.items():
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        return True

    def _send_body(self, body: bytes, fault: Fault | None, chunked: bool) -> bool:
        """Send the body, dripped or cut as the fault says; True once it went out whole (no hang-up due)."""
        iam = self.server.iam
        cut_after = None if fault is None else fault.cut_after
        drip = 0.0 if fault is None else fault.drip
        step = len(body) or 1 if not drip else fault.drip_bytes
        try:
            for start in range(0, len(body), step):
                if start and drip and iam._closing.wait(drip):
                    break
                piece = body[start : start + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                self.wfile.flush()
            else:
                if cut_after is None:
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                    return True
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what a fault is for
        return False

    def _hang_up(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _read_token_file(path: str) -> str:
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise SystemExit(f"fakeiam: token file {path} is empty")
    return token


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fakeiam", description="Serve a CoreWeave-IAM-like SCIM org on loopback.")
    parser.add_argument("--org", required=True, help="JSON file {'Users': [...], 'Groups': [...]}")
    parser.add_argument("--token-file", help="file holding the bearer token to require (none: no auth)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"URL path prefix (default {DEFAULT_PREFIX})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--max-page-size", type=int, default=None)
    parser.add_argument("--no-cursor", action="store_true", help="ignore the cursor parameter (index paging only)")
    args = parser.parse_args(argv)

    token = _read_token_file(args.token_file) if args.token_file else None
    # Block the stop signals in every thread, then wait for them in this one.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    iam = FakeIAM(
        args.org,
        token=token,
        prefix=args.prefix,
        host=args.host,
        port=args.port,
        max_page_size=args.max_page_size,
        cursor_pagination=not args.no_cursor,
        log=sys.stderr,
    )
    with iam:
        if args.port_file:
            _write_atomically(args.port_file, f"{iam.port}\n")
        org = iam.org
        # Printed after the port file is in place: a reader of this line can use both.
        print(
            f"fakeiam: serving {len(org['Users'])} users, {len(org['Groups'])} groups at {iam.base_url}"
            f" ({'bearer token required' if token else 'no authentication'})",
            file=sys.stderr,
            flush=True,
        )
        signum = signal.sigwait(stop_signals)
        print(f"fakeiam: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
