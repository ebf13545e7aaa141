"""Fetch: list every resource of a SCIM endpoint, all or nothing.

One method talks to the network (``_Fetcher._send``); the page checks are
plain code around it. Any anomaly fails the whole listing: nsscache must never
be handed a partial directory.
"""

from __future__ import annotations

import email.utils
import gc
import json
import logging
import multiprocessing
import queue
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, List, Optional, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3.exceptions

from . import __version__
from .config import Server
from .errors import AuthError, FetchError, ListingError, StaleCursorError

__all__ = ["new_session", "list_resources", "fetch_page", "Clock", "Stats", "USER_AGENT"]

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
PARALLEL_MIN_PAGES = 8  # index pages after the first before decoding in workers pays

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
    limit: Optional[int] = None,
) -> List[T]:
    """Every resource at ``url``, each passed through ``extract`` (so only the
    fields the maps need stay in memory) and de-duplicated by ``key`` (the
    resource id); more than ``limit`` resources are refused (memory stays bounded).

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
    # Decoded pages hold no reference cycles: while they stream through, the
    # cyclic collector would only keep walking millions of fresh objects.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return walk(fetcher, _Collector(kind, extract, key, limit))
    except StaleCursorError:
        # RFC 9865: a cursor may expire mid-walk; start over once.
        log.warning("%s: the server expired our cursor; restarting the listing once", kind)
        return walk(fetcher, _Collector(kind, extract, key, limit))
    finally:
        fetcher.close()
        if collecting:
            gc.enable()


def fetch_page(
    session: requests.Session,
    server: Server,
    url: str,
    kind: str,
    params: dict,
    *,
    clock: Optional[Clock] = None,
    stats: Optional[Stats] = None,
) -> dict:
    """One page of ``url`` (e.g. ``{"startIndex": 1, "count": 1}``) as a
    checked SCIM ListResponse, under a listing's rules: retries, redirects
    refused, coreweave_max_page_bytes, coreweave_deadline from now.

    :raises FetchError: as :func:`list_resources`.
    :raises ListingError: a response too large, or not a SCIM ListResponse.
    """
    clock = clock or Clock()
    deadline = clock.monotonic() + server.deadline
    fetcher = _Fetcher(session, server, url, kind, clock, deadline, stats if stats is not None else Stats())
    try:
        return fetcher.page(1, params)
    finally:
        fetcher.close()


def _no_sleep(seconds: float) -> None:
    raise AssertionError("no sleep was injected")


@dataclass(frozen=True)
class _Page:
    """What a walk needs from one decoded page."""

    total: object  # totalResults as sent (checked by _total)
    next_cursor: object
    count: int  # resources on the page
    items: list  # [(key, extracted item)]


class _Collector:
    """De-duplicates resources by id and insists that each page makes progress."""

    def __init__(self, kind, extract, key, limit: Optional[int] = None):
        self.kind, self.extract, self.key, self.limit = kind, extract, key, limit
        self.items: Dict[Hashable, object] = {}

    def check_size(self, count: int, what: str) -> None:
        """Refuse a listing with more resources than the limit."""
        if self.limit is not None and count > self.limit:
            raise ListingError(
                f"{self.kind}: {what} {count}, more than coreweave_max_{self.kind.lower()} ({self.limit}): "
                "refusing to hold a larger listing"
            )

    def read(self, body: dict, page_no: int) -> "_Page":
        """Check a page's envelope and resources and extract them (no state:
        this also runs in a decoding worker)."""
        resources = body.get("Resources", [])
        if not isinstance(resources, list):
            raise ListingError(f"{self.kind} page {page_no}: 'Resources' is not a list: refusing a malformed listing")
        per_page = body.get("itemsPerPage")
        if isinstance(per_page, int) and not isinstance(per_page, bool) and per_page != len(resources):
            raise ListingError(
                f"{self.kind} page {page_no} says itemsPerPage {per_page} but holds {len(resources)} resources: "
                "refusing a partial listing"
            )
        items = []
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str) or not resource["id"]:
                raise ListingError(
                    f"{self.kind} page {page_no}: a resource has no string 'id': refusing a malformed listing"
                )
            item = self.extract(resource)
            items.append((self.key(item), item))
        return _Page(body.get("totalResults"), body.get("nextCursor"), len(resources), items)

    def merge(self, page_no: int, page: "_Page") -> int:
        """Add a page's items; return how many were new."""
        new = 0
        for k, item in page.items:
            if k not in self.items:
                self.items[k] = item
                new += 1
            elif self.items[k] != item:
                raise ListingError(
                    f"{self.kind} page {page_no}: id {str(k)[:80]!r} appears twice with different content: "
                    "the directory changed during the listing, refusing it (the next run will retry)"
                )
        self.check_size(len(self.items), "collected")
        return new


def _walk_index(fetcher: "_Fetcher", collected: _Collector) -> list:
    """RFC 7644 §3.4.2.4: startIndex (1-based) and count."""
    kind, server = fetcher.kind, fetcher.server
    start, ahead = 1, None
    total: Optional[int] = None
    try:
        for page_no in range(1, server.max_pages + 1):
            if ahead is not None:
                page = ahead.take(page_no, start)
            else:
                page = collected.read(fetcher.page(page_no, {"startIndex": start, "count": server.page_size}), page_no)
            page_total = _required_total(page.total, kind, page_no)
            if total is None:
                collected.check_size(page_total, "totalResults is")
                total = page_total
            elif page_total != total:
                raise ListingError(
                    f"{kind} page {page_no} has totalResults {page_total}, page 1 said {total}: "
                    "refusing a partial listing"
                )
            new = collected.merge(page_no, page)
            if len(collected.items) >= total:
                break
            if new == 0:
                raise ListingError(
                    f"{kind} page {page_no} (startIndex {start}) brought no new resources after "
                    f"{len(collected.items)} of {total}: refusing a partial listing"
                )
            start += page.count
            if page_no == 1 and _worth_decoding_ahead(server, total, page.count):
                ahead = _Ahead(fetcher, collected, start, page.count, total)
        else:
            raise ListingError(
                f"{kind}: more than coreweave_max_pages ({server.max_pages}) pages: refusing an endless listing"
            )
    finally:
        if ahead is not None:
            ahead.close()
    if len(collected.items) != total:
        raise ListingError(
            f"{kind}: collected {len(collected.items)} distinct resources but totalResults is {total}: "
            "refusing a partial listing"
        )
    return list(collected.items.values())


def _worth_decoding_ahead(server: Server, total: int, per_page: int) -> bool:
    return server.workers > 0 and per_page > 0 and (total - per_page) / per_page >= PARALLEL_MIN_PAGES


class _Ahead:
    """Index paging with the JSON decoding in worker processes.

    Decoding (json.loads) is most of a large listing's CPU time and holds the
    GIL, so forked workers decode and extract pages while this process
    fetches the next ones. Pages are requested where a walk of full pages
    (as long as page 1) would ask for them; each is handed to the walk, in
    order, only if that is where the walk is: otherwise the pipeline is
    dropped and the walk goes on fetching page by page itself.
    """

    def __init__(self, fetcher: "_Fetcher", collected: _Collector, start: int, step: int, total: int):
        self.fetcher, self.collected = fetcher, collected
        self.next_page, self.next_start, self.step, self.total = 2, start, step, total
        self.pending: deque = deque()  # (page_no, start, AsyncResult)
        self.depth = 2 * fetcher.server.workers  # bounds the pages held in memory
        self.pool: Optional[multiprocessing.pool.Pool] = multiprocessing.get_context("fork").Pool(
            fetcher.server.workers, initializer=_worker_init, initargs=(collected,)
        )

    def take(self, page_no: int, start: int) -> _Page:
        fetcher = self.fetcher
        if self.pool is not None:
            while (
                len(self.pending) < self.depth
                and self.next_start <= self.total
                and self.next_page <= fetcher.server.max_pages
            ):
                params = {"startIndex": self.next_start, "count": fetcher.server.page_size}
                content = fetcher.content(self.next_page, params)
                self.pending.append(
                    (self.next_page, self.next_start, self.pool.apply_async(_worker_read, (content, self.next_page)))
                )
                self.next_page += 1
                self.next_start += self.step
            if self.pending and self.pending[0][:2] == (page_no, start):
                _, _, result = self.pending.popleft()
                try:
                    return result.get(max(0.0, fetcher.deadline - fetcher.clock.monotonic()) + WATCHDOG_GRACE)
                except multiprocessing.TimeoutError:
                    raise FetchError(
                        f"{fetcher.kind} page {page_no}: coreweave_deadline ({fetcher.server.deadline:g} s) exceeded "
                        "while decoding: refusing to go on"
                    ) from None
            log.info(
                "%s page %d: not where full pages would start, fetching and decoding the rest in this process",
                fetcher.kind, page_no,
            )
            self.close()
        params = {"startIndex": start, "count": fetcher.server.page_size}
        return self.collected.read(fetcher.page(page_no, params), page_no)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool, self.pending = None, deque()


_worker_collector: Optional[_Collector] = None  # set in each decoding worker


def _worker_init(collected: _Collector) -> None:
    global _worker_collector
    _worker_collector = collected
    # A decoded page holds no reference cycles and dies with the next one:
    # the cyclic collector would only walk millions of fresh objects.
    gc.disable()


def _worker_read(content: bytes, page_no: int) -> _Page:
    collected = _worker_collector
    assert collected is not None, "set by _worker_init"
    return collected.read(_decode(content, f"{collected.kind} page {page_no}"), page_no)


def _walk_cursor(fetcher: "_Fetcher", collected: _Collector) -> list:
    """RFC 9865: ``cursor`` (empty first), follow ``nextCursor`` until absent."""
    kind, server = fetcher.kind, fetcher.server
    cursor, seen_cursors, total = "", set(), None
    for page_no in range(1, server.max_pages + 1):
        page = collected.read(fetcher.page(page_no, {"cursor": cursor, "count": server.page_size}), page_no)
        page_total = None if page.total is None else _required_total(page.total, kind, page_no)
        if page_total is not None:
            if total is not None and page_total != total:
                raise ListingError(
                    f"{kind} page {page_no} has totalResults {page_total}, an earlier page said {total}: "
                    "refusing a partial listing"
                )
            total = page_total
        new = collected.merge(page_no, page)
        next_cursor = page.next_cursor
        if next_cursor is None:
            break
        if not isinstance(next_cursor, str) or not next_cursor:
            raise ListingError(f"{kind} page {page_no}: nextCursor {next_cursor!r} is not a non-empty string")
        if next_cursor in seen_cursors or new == 0:
            raise ListingError(
                f"{kind} page {page_no} makes no progress (repeated cursor or no new resources): "
                "refusing an endless listing"
            )
        seen_cursors.add(next_cursor)
        cursor = next_cursor
    else:
        raise ListingError(
            f"{kind}: more than coreweave_max_pages ({server.max_pages}) pages: refusing an endless listing"
        )
    if total is not None and len(collected.items) != total:
        raise ListingError(
            f"{kind}: collected {len(collected.items)} distinct resources but totalResults is {total}: "
            "refusing a partial listing"
        )
    return list(collected.items.values())


def _required_total(value, kind: str, page_no: int) -> int:
    """A page's totalResults, checked."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ListingError(
            f"{kind} page {page_no}: totalResults is {value!r}, not a non-negative integer: "
            "refusing a listing we cannot check"
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
    exchanger: Optional["_Exchanger"] = None

    def page(self, page_no: int, params: dict) -> dict:
        """One page as a JSON object (see content)."""
        return _decode(self.content(page_no, params), f"{self.kind} page {page_no}")

    def content(self, page_no: int, params: dict) -> bytes:
        """One page's JSON text, retrying connection errors, timeouts, 429
        and 5xx with jittered exponential backoff; never 4xx otherwise."""
        server, where = self.server, f"{self.kind} page {page_no}"
        for attempt in range(server.retries + 1):
            last = attempt == server.retries
            try:
                status, headers, content = self._send(params, where)
            except _Transient as e:
                self.stats.requests[(self.kind, "error")] += 1
                problem = f"{where}: {e.args[0]} talking to {server.base_url}"
                if last:
                    raise FetchError(
                        f"{problem} (after {attempt + 1} attempts): is the network or the server down?"
                    ) from None
                wait = self._backoff(attempt)
            else:
                self.stats.requests[(self.kind, f"{status // 100}xx")] += 1
                self.stats.bytes += len(content)
                if status == 200:
                    return _json_content(headers, content, where)
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
                asked = _retry_after(headers.get("Retry-After"), server.max_retry_wait)
                wait = self._backoff(attempt) if asked is None else asked
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
        # daemon thread and is abandoned, with the run, at the deadline. The
        # grace lets the socket timeout and _read's checks, which say more,
        # speak first.
        if self.exchanger is None:
            self.exchanger = _Exchanger()
        outcome = self.exchanger.run(lambda: self._exchange(params, where, remaining), remaining + WATCHDOG_GRACE)
        if outcome is None:
            raise FetchError(
                f"{where}: coreweave_deadline ({self.server.deadline:g} s) exceeded waiting for the server: "
                "refusing to go on"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def close(self) -> None:
        if self.exchanger is not None:
            self.exchanger.close()
            self.exchanger = None

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
            f"{where}: the response is larger than coreweave_max_page_bytes ({limit} bytes): "
            "refusing a runaway response"
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


class _Exchanger:
    """One daemon thread that performs a listing's HTTP exchanges, one at a
    time, so that the caller can stop waiting at the deadline (and a thread
    is started once per listing, not once per page)."""

    def __init__(self):
        self._jobs: "queue.SimpleQueue" = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="nss-cache-coreweave-fetch", daemon=True).start()

    def run(self, job: Callable[[], object], timeout: float) -> Optional[dict]:
        """{"result": ...} or {"error": exception}; None if ``timeout`` passed."""
        outcome: dict = {}
        done = threading.Event()
        self._jobs.put((job, outcome, done))
        return outcome if done.wait(timeout) else None

    def close(self) -> None:
        self._jobs.put(None)

    def _serve(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, outcome, done = item
            try:
                outcome["result"] = job()
            except BaseException as e:  # handed to the waiting thread
                outcome["error"] = e
            finally:
                done.set()


class _Transient(Exception):
    """A failure that a retry may cure (connection, timeout, cut body)."""


def _json_content(headers, content: bytes, where: str) -> bytes:
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise ListingError(f"{where}: the response is {content_type[:60]}, not JSON: refusing a malformed listing")
    return content


def _decode(content: bytes, where: str) -> dict:
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
