"""Fetch: list every resource of a SCIM endpoint, all or nothing.

One method talks to the network (``_Fetcher._send``); the page checks are
plain code around it. Any anomaly fails the whole listing: nsscache must never
be handed a partial directory.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3.exceptions

from . import __version__
from .config import Server
from .errors import AuthError, FetchError, ListingError, StaleCursorError

__all__ = ["new_session", "list_resources", "Clock", "Stats", "USER_AGENT"]

log = logging.getLogger(__name__)

USER_AGENT = f"nss-cache-coreweave/{__version__}"
SCIM_JSON = "application/scim+json"
JSON_TYPES = ("application/scim+json", "application/json")
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
STALE_CURSOR_TYPES = frozenset({"invalidCursor", "expiredCursor"})  # RFC 9865 §2.3
BACKOFF_BASE = 1.0  # seconds; doubled per retry, then jittered and capped
CHUNK = 256 * 1024
WATCHDOG_GRACE = 1.0  # seconds past the deadline before a stalled exchange is abandoned

T = TypeVar("T")


@dataclass
class Stats:
    """HTTP counters of one run, for the run record and the metrics file."""

    requests: Counter = field(default_factory=Counter)  # (endpoint, "2xx"/"4xx"/.../"error") -> count
    retries: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Clock:
    """Time, sleep and randomness, injectable so tests neither wait nor guess."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    random: Callable[[], float] = random.random


def new_session(server: Server) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Accept": SCIM_JSON, "User-Agent": USER_AGENT})
    # As session.auth (not a plain header) so that a ~/.netrc cannot replace
    # the token.
    session.auth = _Bearer(server.token)
    session.verify = server.verify
    return session


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self._token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_Bearer(<redacted>)"


def list_resources(
    session: requests.Session,
    server: Server,
    url: str,
    kind: str,
    extract: Callable[[dict], T],
    key: Callable[[T], Hashable],
    *,
    sleep: Optional[Callable[[float], None]] = time.sleep,
    clock: Optional[Clock] = None,
    deadline: Optional[float] = None,
    stats: Optional[Stats] = None,
) -> List[T]:
    """Every resource at ``url``, each passed through ``extract`` (so only the
    fields the maps need stay in memory) and de-duplicated by ``key`` (the
    resource id).

    ``deadline`` is a ``clock.monotonic()`` time by which the listing must be
    complete (default: ``server.deadline`` seconds from now).

    :raises FetchError: transport failure, 401/403, 429/5xx after retries,
        redirect, deadline.
    :raises ListingError: anything that is not a complete listing.
    """
    clock = clock or Clock(sleep=sleep or _no_sleep)
    if deadline is None:
        deadline = clock.monotonic() + server.deadline
    fetcher = _Fetcher(session, server, url, kind, clock, deadline, stats if stats is not None else Stats())
    walk = _walk_cursor if server.pagination == "cursor" else _walk_index
    try:
        return walk(fetcher, _Collector(kind, extract, key))
    except StaleCursorError:
        # RFC 9865: a cursor may expire mid-walk; start over once.
        log.warning("%s: the server expired our cursor; restarting the listing once", kind)
        return walk(fetcher, _Collector(kind, extract, key))


def _no_sleep(seconds: float) -> None:
    raise AssertionError("no sleep was injected")


class _Collector:
    """De-duplicates resources by id and insists that each page makes progress."""

    def __init__(self, kind, extract, key):
        self.kind, self.extract, self.key = kind, extract, key
        self.items: Dict[Hashable, object] = {}

    def add_page(self, page_no: int, body: dict) -> int:
        """Add a page's resources; return how many were new."""
        resources = body.get("Resources", [])
        if not isinstance(resources, list):
            raise ListingError(f"{self.kind} page {page_no}: 'Resources' is not a list: refusing a malformed listing")
        per_page = body.get("itemsPerPage")
        if isinstance(per_page, int) and not isinstance(per_page, bool) and per_page != len(resources):
            raise ListingError(
                f"{self.kind} page {page_no} says itemsPerPage {per_page} but holds {len(resources)} resources: "
                "refusing a partial listing"
            )
        new = 0
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str) or not resource["id"]:
                raise ListingError(f"{self.kind} page {page_no}: a resource has no string 'id': refusing a malformed listing")
            item = self.extract(resource)
            k = self.key(item)
            if k not in self.items:
                self.items[k] = item
                new += 1
            elif self.items[k] != item:
                raise ListingError(
                    f"{self.kind} page {page_no}: id {str(k)[:80]!r} appears twice with different content: "
                    "the directory changed during the listing, refusing it (the next run will retry)"
                )
        return new


def _walk_index(fetcher: "_Fetcher", collected: _Collector) -> list:
    """RFC 7644 §3.4.2.4: startIndex (1-based) and count."""
    kind, server = fetcher.kind, fetcher.server
    start, total = 1, None
    for page_no in range(1, server.max_pages + 1):
        body = fetcher.page(page_no, {"startIndex": start, "count": server.page_size})
        page_total = _total(body, kind, page_no, required=True)
        if total is None:
            total = page_total
        elif page_total != total:
            raise ListingError(
                f"{kind} page {page_no} has totalResults {page_total}, page 1 said {total}: refusing a partial listing"
            )
        new = collected.add_page(page_no, body)
        if len(collected.items) >= total:
            break
        if new == 0:
            raise ListingError(
                f"{kind} page {page_no} (startIndex {start}) brought no new resources after "
                f"{len(collected.items)} of {total}: refusing a partial listing"
            )
        start += len(body.get("Resources") or ())
    else:
        raise ListingError(f"{kind}: more than coreweave_max_pages ({server.max_pages}) pages: refusing an endless listing")
    if len(collected.items) != total:
        raise ListingError(
            f"{kind}: collected {len(collected.items)} distinct resources but totalResults is {total}: refusing a partial listing"
        )
    return list(collected.items.values())


def _walk_cursor(fetcher: "_Fetcher", collected: _Collector) -> list:
    """RFC 9865: ``cursor`` (empty first), follow ``nextCursor`` until absent."""
    kind, server = fetcher.kind, fetcher.server
    cursor, seen_cursors, total = "", set(), None
    for page_no in range(1, server.max_pages + 1):
        body = fetcher.page(page_no, {"cursor": cursor, "count": server.page_size})
        page_total = _total(body, kind, page_no, required=False)
        if page_total is not None:
            if total is not None and page_total != total:
                raise ListingError(
                    f"{kind} page {page_no} has totalResults {page_total}, an earlier page said {total}: "
                    "refusing a partial listing"
                )
            total = page_total
        new = collected.add_page(page_no, body)
        next_cursor = body.get("nextCursor")
        if next_cursor is None:
            break
        if not isinstance(next_cursor, str) or not next_cursor:
            raise ListingError(f"{kind} page {page_no}: nextCursor {next_cursor!r} is not a non-empty string")
        if next_cursor in seen_cursors or new == 0:
            raise ListingError(
                f"{kind} page {page_no} makes no progress (repeated cursor or no new resources): refusing an endless listing"
            )
        seen_cursors.add(next_cursor)
        cursor = next_cursor
    else:
        raise ListingError(f"{kind}: more than coreweave_max_pages ({server.max_pages}) pages: refusing an endless listing")
    if total is not None and len(collected.items) != total:
        raise ListingError(
            f"{kind}: collected {len(collected.items)} distinct resources but totalResults is {total}: refusing a partial listing"
        )
    return list(collected.items.values())


def _total(body: dict, kind: str, page_no: int, *, required: bool) -> Optional[int]:
    value = body.get("totalResults")
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ListingError(
            f"{kind} page {page_no}: totalResults is {value!r}, not a non-negative integer: refusing a listing we cannot check"
        )
    return value


@dataclass
class _Fetcher:
    """GETs pages of one endpoint within the run's deadline."""

    session: requests.Session
    server: Server
    url: str
    kind: str
    clock: Clock
    deadline: float
    stats: Stats

    def page(self, page_no: int, params: dict) -> dict:
        """One page as a JSON object, retrying connection errors, timeouts,
        429 and 5xx with jittered exponential backoff; never 4xx otherwise."""
        server, where = self.server, f"{self.kind} page {page_no}"
        for attempt in range(server.retries + 1):
            last = attempt == server.retries
            try:
                status, headers, content = self._send(params, where)
            except _Transient as e:
                self.stats.requests[(self.kind, "error")] += 1
                problem = f"{where}: {e.args[0]} talking to {server.base_url}"
                if last:
                    raise FetchError(f"{problem} (after {attempt + 1} attempts): is the network or the server down?") from None
                wait = self._backoff(attempt)
            else:
                self.stats.requests[(self.kind, f"{status // 100}xx")] += 1
                self.stats.bytes += len(content)
                if status == 200:
                    return _json_body(headers, content, where)
                detail = _error_detail(content, server.token)
                if status in (401, 403):
                    raise AuthError(
                        f"{where}: HTTP {status} from {server.base_url}{detail}: the bearer token is missing, expired "
                        "or lacks the SUNK/SCIM permissions: check coreweave_token_file or NSSCACHE_SCIM_AUTH_TOKEN"
                    )
                if status == 400 and _error_field(content, "scimType") in STALE_CURSOR_TYPES:
                    raise StaleCursorError(f"{where}: HTTP 400{detail}")
                if 300 <= status < 400:
                    location = urlsplit(headers.get("Location", "")).netloc or "elsewhere"
                    raise FetchError(
                        f"{where}: HTTP {status} redirect to {location}: refusing to follow it (the bearer token must "
                        "not go anywhere else); set coreweave_base_url to the final URL"
                    )
                problem = f"{where}: HTTP {status} from {server.base_url}{detail}"
                if status not in RETRY_STATUSES:
                    raise FetchError(f"{problem}: not retried; check coreweave_base_url and the endpoints")
                if last:
                    raise FetchError(f"{problem} (after {attempt + 1} attempts): the server is failing, try later")
                wait = _retry_after(headers.get("Retry-After"), server.max_retry_wait)
                if wait is None:
                    wait = self._backoff(attempt)
            if self.clock.monotonic() + wait > self.deadline:
                raise FetchError(f"{problem}: no time left to retry within coreweave_deadline ({server.deadline:g} s)")
            log.warning("%s; retrying in %.1f s (%d of %d)", problem, wait, attempt + 1, server.retries)
            self.stats.retries += 1
            self.clock.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, params: dict, where: str):
        """One GET, read to the end within the size limit and the deadline.
        :raises _Transient: for what a retry may cure."""
        remaining = self.deadline - self.clock.monotonic()
        if remaining <= 0:
            raise FetchError(f"{where}: coreweave_deadline ({self.server.deadline:g} s) exceeded: refusing to go on")
        # Socket timeouts restart with every byte, so a server trickling its
        # headers or body would outlast any of them: the exchange runs in a
        # daemon thread and is abandoned, with the run, at the deadline.
        outcome: dict = {}
        done = threading.Event()

        def exchange() -> None:
            try:
                outcome["result"] = self._exchange(params, where, remaining)
            except BaseException as e:  # handed to the waiting thread
                outcome["error"] = e
            finally:
                done.set()

        threading.Thread(target=exchange, name="nss-cache-coreweave-fetch", daemon=True).start()
        # The grace lets the socket timeout and the checks in _read, which
        # say more, speak first.
        if not done.wait(remaining + WATCHDOG_GRACE):
            raise FetchError(
                f"{where}: coreweave_deadline ({self.server.deadline:g} s) exceeded waiting for the server: refusing to go on"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def _exchange(self, params: dict, where: str, remaining: float):
        server = self.server
        try:
            # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE.
            response = self.session.get(
                self.url, params=params, timeout=min(server.timeout, remaining), verify=server.verify,
                allow_redirects=False, stream=True,
            )
            with response:
                log.debug("GET %s -> %d", response.url, response.status_code)
                return response.status_code, response.headers, self._read(response, where)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(type(e).__name__) from None
        except urllib3.exceptions.HTTPError as e:  # while reading the body
            raise _Transient(type(e).__name__) from None
        except requests.RequestException as e:
            raise FetchError(f"{where}: request failed: {type(e).__name__}") from None

    def _read(self, response, where: str) -> bytes:
        limit = self.server.max_page_bytes
        too_big = ListingError(
            f"{where}: the response is larger than coreweave_max_page_bytes ({limit} bytes): refusing a runaway response"
        )
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise too_big
        chunks, size = [], 0
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_big
            if self.clock.monotonic() > self.deadline:
                raise FetchError(f"{where}: coreweave_deadline ({self.server.deadline:g} s) exceeded while reading")
            chunks.append(chunk)
        return b"".join(chunks)

    def _backoff(self, attempt: int) -> float:
        """1, 2, 4 … s, capped, times a random factor in (0.5, 1] so that a
        fleet of nodes does not retry in step."""
        return min(self.server.max_retry_wait, BACKOFF_BASE * (2**attempt)) * (1 - self.clock.random() / 2)


class _Transient(Exception):
    """A failure that a retry may cure (connection, timeout, cut body)."""


def _json_body(headers, content: bytes, where: str) -> dict:
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise ListingError(f"{where}: the response is {content_type[:60]}, not JSON: refusing a malformed listing")
    body = _loads(content)
    if body is _NOT_JSON:
        raise ListingError(f"{where}: the response is not JSON: refusing a malformed listing")
    if not isinstance(body, dict):
        raise ListingError(f"{where}: the response is not a JSON object: refusing a malformed listing")
    schemas = body.get("schemas", [LIST_RESPONSE])
    if not isinstance(schemas, list) or (schemas and LIST_RESPONSE not in schemas):
        raise ListingError(f"{where}: the response is not a SCIM ListResponse (schemas {str(schemas)[:100]})")
    return body


_NOT_JSON = object()


def _loads(content: bytes):
    try:
        return json.loads(content)
    except (ValueError, RecursionError):  # RecursionError: hostile nesting
        return _NOT_JSON


def _error_field(content: bytes, name: str) -> Optional[str]:
    body = _loads(content)
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _error_detail(content: bytes, token: str) -> str:
    """The server's SCIM error 'detail', shortened, printable, and without
    our token should the server echo it."""
    detail = _error_field(content, "detail")
    if detail is None:
        return ""
    detail = detail.replace(token, "<token>") if token else detail
    detail = "".join(c if c.isprintable() else " " for c in detail)[:200]
    return f" ({detail!r})"


def _retry_after(value: Optional[str], cap: float) -> Optional[float]:
    """Retry-After in seconds or as an HTTP date, clamped to ``cap``."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(cap, seconds))
