"""Fetch: list every resource of a SCIM endpoint, all or nothing.

One method talks to the network (``_Fetcher._exchange``); the rest are values
and plain checks around it: the retry policy (attempt -> wait), the
classification of a response (what a status means), the page checks. Any
anomaly fails the whole listing: nsscache must never be handed a partial
directory.
"""

from __future__ import annotations

import email.utils
import gc
import json
import logging
import multiprocessing
import multiprocessing.pool
import queue
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Generic, Hashable, List, Mapping, Optional, Set, Tuple, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3.exceptions

from . import __version__
from .config import Server
from .errors import (
    AuthError,
    Failure,
    FetchError,
    FetchReason,
    ListingError,
    ListingReason,
    StaleCursorError,
)

__all__ = [
    "new_session",
    "Listing",
    "list_resources",
    "COLLECTOR_PAUSED",
    "fetch_page",
    "fetch_document",
    "Clock",
    "Stats",
    "RetryPolicy",
    "retry_after_seconds",
    "Exchanger",
    "Action",
    "Verdict",
    "classify",
    "USER_AGENT",
]

log = logging.getLogger(__name__)

USER_AGENT = f"nss-cache-coreweave/{__version__}"
SCIM_JSON = "application/scim+json"
JSON_TYPES = ("application/scim+json", "application/json")
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
STALE_CURSOR_TYPES = frozenset({"invalidCursor", "expiredCursor"})  # RFC 9865 §2.3
BACKOFF_BASE = 1.0  # seconds; doubled per retry, then capped and jittered
CHUNK = 256 * 1024
WATCHDOG_GRACE = 1.0  # seconds past the deadline before a stalled exchange is abandoned
PARALLEL_MIN_PAGES = 8  # index pages after the first before decoding in workers pays

T = TypeVar("T")


@dataclass
class Stats:
    """HTTP counters of one run, for the run record and the metrics file
    (counted with ``answered`` and ``retried``: several threads may fetch at once)."""

    requests: Counter = field(default_factory=Counter)  # (endpoint, "2xx"/"4xx"/.../"error") -> count
    retries: int = 0
    bytes: int = 0
    fetch: str = ""  # which users were fetched: "members" (by id) or "full" (every user); "" none yet
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def answered(self, endpoint: str, status: str, size: int = 0) -> None:
        """One request to ``endpoint`` ended with ``status`` ("2xx" ... or "error") and ``size`` body bytes."""
        with self.lock:
            self.requests[(endpoint, status)] += 1
            self.bytes += size

    def retried(self) -> None:
        with self.lock:
            self.retries += 1


@dataclass(frozen=True)
class Clock:
    """Time, sleep and randomness, injectable so tests neither wait nor guess."""

    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    random: Callable[[], float] = random.random


# --- the retry policy ----------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How often a page is tried again, and how long to wait before."""

    retries: int  # attempts after the first (coreweave_retries)
    cap: float  # seconds; no wait is longer (coreweave_max_retry_wait)
    base: float = BACKOFF_BASE  # seconds; the first backoff, doubled per retry

    @classmethod
    def of(cls, server: Server) -> RetryPolicy:
        return cls(server.retries, server.max_retry_wait)

    def exhausted(self, attempt: int) -> bool:
        """Whether ``attempt`` (0-based) was the last one allowed."""
        return attempt >= self.retries

    def delay(self, attempt: int, retry_after: Optional[float], jitter: float) -> float:
        """Seconds to wait after the failed ``attempt`` (0-based): the server's
        Retry-After when it sent a usable one, else base·2^attempt; either
        capped. Only the backoff is then scaled by a factor in (0.5, 1]
        (``jitter`` in [0, 1)), so that a fleet of nodes does not retry in step.

        >>> RetryPolicy(3, 60.0).delay(2, None, 0.0), RetryPolicy(3, 60.0).delay(2, 90.0, 0.5)
        (4.0, 60.0)
        """
        if retry_after is not None:
            return max(0.0, min(self.cap, retry_after))
        return min(self.cap, self.base * 2**attempt) * (1 - jitter / 2)


def retry_after_seconds(value: Optional[str], now: float) -> Optional[float]:
    """A Retry-After header (RFC 9110 §10.2.3: delay-seconds or an HTTP date)
    as seconds from ``now`` (a ``time.time()``); None if absent or unusable.

    >>> retry_after_seconds(" 7 ", 0.0), retry_after_seconds("soon", 0.0)
    (7.0, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp() - now


# --- what a response means -----------------------------------------------------


class Action(Enum):
    """What to do about one response."""

    OK = "ok"
    RETRY = "retry"  # 429, 5xx, no answer: again, as the retry policy says
    STALE_CURSOR = "stale cursor"  # RFC 9865: the walk restarts once
    AUTH = "auth"  # 401/403: the token is refused, never retried
    REDIRECT = "redirect"  # 3xx: never followed (the token would go along)
    REFUSED = "refused"  # any other status: not retried


@dataclass(frozen=True)
class Verdict:
    """The classification of one response (or of its absence)."""

    action: Action
    status: Optional[int] = None  # None: no HTTP answer
    detail: str = ""  # the server's SCIM error detail: printable, cut, without our token
    retry_after: Optional[str] = None  # the Retry-After header, as sent
    location: str = ""  # a redirect's target host ("elsewhere" if none)
    error: str = ""  # no HTTP answer: the transport error's type name

    def failure(self, base_url: str) -> Failure:
        """The verdict as an error's account of what the attempt got."""
        return Failure(base_url, self.status, self.detail, self.error)


_OK = Verdict(Action.OK, 200)


def classify(status: int, headers: Mapping[str, str], content: bytes, token: str) -> Verdict:
    """What a response with ``status``, ``headers`` and body ``content`` calls
    for. Pure: the body is read only for a status other than 200, and the
    bearer ``token`` is cut out of the server's words."""
    if status == 200:
        return _OK
    if 300 <= status < 400:
        location = urlsplit(headers.get("Location", "")).netloc or "elsewhere"
        return Verdict(Action.REDIRECT, status, location=location)
    detail = _error_detail(content, token)
    if status in (401, 403):
        return Verdict(Action.AUTH, status, detail)
    if status == 400 and _error_field(content, "scimType") in STALE_CURSOR_TYPES:
        return Verdict(Action.STALE_CURSOR, status, detail)
    if status in RETRY_STATUSES:
        return Verdict(Action.RETRY, status, detail, headers.get("Retry-After"))
    return Verdict(Action.REFUSED, status, detail)


# The errors a verdict other than OK, RETRY or REDIRECT raises at once.
_REFUSALS = {
    Action.AUTH: (AuthError, FetchReason.TOKEN_REFUSED),
    Action.STALE_CURSOR: (StaleCursorError, FetchReason.STALE_CURSOR),
    Action.REFUSED: (FetchError, FetchReason.NOT_RETRIED),
}


def _refusal(verdict: Verdict, kind: str, page_no: int, base_url: str) -> FetchError:
    if verdict.action is Action.REDIRECT:
        return FetchError(kind, page_no, FetchReason.REDIRECT, status=verdict.status, location=verdict.location)
    error, reason = _REFUSALS[verdict.action]
    return error(kind, page_no, reason, failure=verdict.failure(base_url))


# --- listing -------------------------------------------------------------------


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


@dataclass(frozen=True)
class Listing(Generic[T]):
    """What to list and what to keep of it: every resource at ``url``, each
    passed through ``extract`` (so only the fields the maps need stay in
    memory) and de-duplicated by ``key`` (the resource id); more than
    ``limit`` resources are refused (memory stays bounded). ``kind`` names
    the endpoint in messages ("Users")."""

    kind: str
    url: str
    extract: Callable[[dict], T]
    key: Callable[[T], Hashable]
    limit: Optional[int] = None


def list_resources(
    session: requests.Session,
    server: Server,
    listing: Listing[T],
    *,
    clock: Optional[Clock] = None,
    deadline: Optional[float] = None,
    stats: Optional[Stats] = None,
) -> List[T]:
    """Every resource of ``listing``, or an error.

    ``deadline`` is a ``clock.monotonic()`` time by which the listing must be
    complete (default: ``server.deadline`` seconds from now).

    :raises FetchError: transport failure, 401/403, 429/5xx after retries,
        redirect, deadline.
    :raises ListingError: anything that is not a complete listing.
    """
    clock = clock or Clock()
    if deadline is None:
        deadline = clock.monotonic() + server.deadline
    stats = stats if stats is not None else Stats()
    fetcher = _Fetcher(session, server, listing.url, listing.kind, clock, deadline, stats)
    walk = _walk_cursor if server.pagination == "cursor" else _walk_index
    # Decoded pages hold no reference cycles: while they stream through, the
    # cyclic collector would only keep walking millions of fresh objects.
    with COLLECTOR_PAUSED:
        try:
            return walk(fetcher, _Collector(listing))
        except StaleCursorError:
            # RFC 9865: a cursor may expire mid-walk; start over once.
            log.warning("%s: the server expired our cursor; restarting the listing once", listing.kind)
            return walk(fetcher, _Collector(listing))
        finally:
            fetcher.close()


class _CollectorPause:
    """The cyclic garbage collector off while any user of it runs, in any thread (member
    batches are listed two at a time), and back as it was when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listings = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._listings == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._listings += 1

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._listings -= 1
            if self._listings == 0 and self._was_enabled:
                gc.enable()


# Listings, and policy deciding a run (run.decide): both build many small objects and no cycles.
COLLECTOR_PAUSED = _CollectorPause()


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
    content = fetch_document(session, server, url, kind, clock=clock, deadline=clock.monotonic() + server.deadline,
                             stats=stats if stats is not None else Stats(), params=params)
    return _decode(content, kind, 1)


def fetch_document(session: requests.Session, server: Server, url: str, kind: str, *, clock: Clock,
                   deadline: float, stats: Stats, params: Optional[dict] = None) -> bytes:
    """One JSON document's text (``/ServiceProviderConfig``, ``/Users/<id>``, a page),
    under a listing's rules: retries, no redirect, the size limit, ``deadline``.
    :raises FetchError, ListingError: as :func:`fetch_page`"""
    fetcher = _Fetcher(session, server, url, kind, clock, deadline, stats)
    try:
        return fetcher.content(1, params or {})
    finally:
        fetcher.close()


@dataclass(frozen=True)
class _Page:
    """What a walk needs from one decoded page."""

    total: object  # totalResults as sent (checked by _Collector.note_total)
    next_cursor: object
    count: int  # resources on the page
    items: list  # [(key, extracted item)]


class _Collector:
    """De-duplicates resources by id, checks each page and the totals, and
    insists that each page makes progress."""

    def __init__(self, listing: Listing):
        self.listing, self.kind = listing, listing.kind
        self.items: Dict[Hashable, object] = {}
        self.total: Optional[int] = None  # the first totalResults a page sent
        self.total_page = 0  # the page that sent it

    def check_size(self, count: int, reason: ListingReason) -> None:
        """Refuse a listing with more resources than the limit."""
        limit = self.listing.limit
        if limit is not None and count > limit:
            option = f"coreweave_max_{self.kind.lower()}"
            raise ListingError(self.kind, None, reason, count=count, limit=limit, option=option)

    def read(self, body: dict, page_no: int) -> _Page:
        """Check a page's envelope and resources and extract them (no state:
        this also runs in a decoding worker)."""
        resources = body.get("Resources", [])
        if not isinstance(resources, list):
            raise ListingError(self.kind, page_no, ListingReason.RESOURCES_NOT_A_LIST)
        # RFC 7644 §3.4.2 makes itemsPerPage the number returned; servers that
        # echo the requested count (also on the last, short page) are
        # tolerated: completeness is decided by totalResults, the ids
        # collected and progress. Fewer than the page holds is a page that
        # contradicts itself.
        per_page = body.get("itemsPerPage")
        if isinstance(per_page, int) and not isinstance(per_page, bool) and per_page < len(resources):
            raise ListingError(self.kind, page_no, ListingReason.ITEMS_PER_PAGE, said=per_page, held=len(resources))
        extract, key = self.listing.extract, self.listing.key
        items = []
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str) or not resource["id"]:
                raise ListingError(self.kind, page_no, ListingReason.RESOURCE_WITHOUT_ID)
            item = extract(resource)
            items.append((key(item), item))
        return _Page(body.get("totalResults"), body.get("nextCursor"), len(resources), items)

    def note_total(self, value: object, page_no: int) -> int:
        """A page's totalResults: a non-negative integer, the same as the
        first page's that sent one."""
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ListingError(self.kind, page_no, ListingReason.BAD_TOTAL, total=value)
        if self.total is None:
            self.total, self.total_page = value, page_no
        elif value != self.total:
            raise ListingError(
                self.kind, page_no, ListingReason.TOTAL_CHANGED, total=value, first=self.total,
                first_page=self.total_page,
            )
        return value

    def merge(self, page_no: int, page: _Page) -> int:
        """Add a page's items; return how many were new."""
        new = 0
        for k, item in page.items:
            if k not in self.items:
                self.items[k] = item
                new += 1
            elif self.items[k] != item:
                raise ListingError(self.kind, page_no, ListingReason.CHANGED_DURING_LISTING, id=str(k)[:80])
        self.check_size(len(self.items), ListingReason.TOO_MANY_COLLECTED)
        return new

    def complete(self) -> list:
        """The listing, once every page is in: as many resources as totalResults said (if any page said)."""
        if self.total is not None and len(self.items) != self.total:
            raise ListingError(
                self.kind, None, ListingReason.COUNT_MISMATCH, collected=len(self.items), total=self.total
            )
        return list(self.items.values())


def _walk_index(fetcher: _Fetcher, collected: _Collector) -> list:
    """RFC 7644 §3.4.2.4: startIndex (1-based) and count."""
    server = fetcher.server
    start, ahead = 1, None
    try:
        for page_no in range(1, server.max_pages + 1):
            page = None if ahead is None else ahead.take(page_no, start)
            if page is None:
                page = collected.read(fetcher.page(page_no, {"startIndex": start, "count": server.page_size}), page_no)
            total = collected.note_total(page.total, page_no)
            if page_no == 1:
                collected.check_size(total, ListingReason.TOO_MANY_ANNOUNCED)
            new = collected.merge(page_no, page)
            if len(collected.items) >= total:
                return collected.complete()
            if new == 0:
                raise ListingError(
                    fetcher.kind, page_no, ListingReason.NO_NEW_RESOURCES, start=start,
                    collected=len(collected.items), total=total,
                )
            start += page.count
            if page_no == 1 and _worth_decoding_ahead(server, total, page.count):
                ahead = _Ahead(fetcher, collected, start, page.count, total)
    finally:
        if ahead is not None:
            ahead.close()
    raise ListingError(fetcher.kind, None, ListingReason.TOO_MANY_PAGES, max_pages=server.max_pages)


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

    def __init__(self, fetcher: _Fetcher, collected: _Collector, start: int, step: int, total: int):
        self.fetcher, self.collected = fetcher, collected
        self.next_page, self.next_start, self.step, self.total = 2, start, step, total
        self.pending: deque = deque()  # (page_no, start, AsyncResult)
        self.depth = 2 * fetcher.server.workers  # bounds the pages held in memory
        self.pool: Optional[multiprocessing.pool.Pool] = multiprocessing.get_context("fork").Pool(
            fetcher.server.workers, initializer=_worker_init, initargs=(collected,)
        )

    def take(self, page_no: int, start: int) -> Optional[_Page]:
        """Page ``page_no`` at ``start``, decoded by a worker; None once the
        pipeline is dropped (the walk then fetches the page itself)."""
        if self.pool is None:
            return None
        self._request(self.pool)
        if self.pending and self.pending[0][:2] == (page_no, start):
            _, _, result = self.pending.popleft()
            return self._result(result, page_no)
        log.info(
            "%s page %d: not where full pages would start, fetching and decoding the rest in this process",
            self.fetcher.kind, page_no,
        )
        self.close()
        return None

    def _request(self, pool: multiprocessing.pool.Pool) -> None:
        """Keep ``depth`` pages in flight, where a walk of full pages would ask."""
        fetcher, server = self.fetcher, self.fetcher.server
        while len(self.pending) < self.depth and self.next_start <= self.total and self.next_page <= server.max_pages:
            content = fetcher.content(self.next_page, {"startIndex": self.next_start, "count": server.page_size})
            self.pending.append(
                (self.next_page, self.next_start, pool.apply_async(_worker_read, (content, self.next_page)))
            )
            self.next_page += 1
            self.next_start += self.step

    def _result(self, result: multiprocessing.pool.AsyncResult, page_no: int) -> _Page:
        fetcher = self.fetcher
        try:
            return result.get(max(0.0, fetcher.deadline - fetcher.clock.monotonic()) + WATCHDOG_GRACE)
        except multiprocessing.TimeoutError:
            raise FetchError(
                fetcher.kind, page_no, FetchReason.DEADLINE_DECODING, deadline=fetcher.server.deadline
            ) from None

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
    return collected.read(_decode(content, collected.kind, page_no), page_no)


def _walk_cursor(fetcher: _Fetcher, collected: _Collector) -> list:
    """RFC 9865: ``cursor`` (empty first), follow ``nextCursor`` until absent."""
    server = fetcher.server
    cursor = ""
    seen_cursors: Set[str] = set()
    for page_no in range(1, server.max_pages + 1):
        page = collected.read(fetcher.page(page_no, {"cursor": cursor, "count": server.page_size}), page_no)
        if page.total is not None:  # optional in RFC 9865
            collected.note_total(page.total, page_no)
        new = collected.merge(page_no, page)
        if page.next_cursor is None:
            return collected.complete()
        cursor = _next_cursor(page.next_cursor, seen_cursors, new, fetcher.kind, page_no)
    raise ListingError(fetcher.kind, None, ListingReason.TOO_MANY_PAGES, max_pages=server.max_pages)


def _next_cursor(value: object, seen: Set[str], new: int, kind: str, page_no: int) -> str:
    """A page's nextCursor, checked: a non-empty string never seen before,
    on a page that brought new resources; added to ``seen``."""
    if not isinstance(value, str) or not value:
        raise ListingError(kind, page_no, ListingReason.BAD_NEXT_CURSOR, cursor=value)
    if value in seen or new == 0:
        raise ListingError(kind, page_no, ListingReason.NO_PROGRESS)
    seen.add(value)
    return value


# --- one page over HTTP --------------------------------------------------------


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
    exchanger: Optional[Exchanger] = None
    policy: RetryPolicy = field(init=False)
    query: Tuple[Tuple[str, str], ...] = field(init=False)  # the endpoint's coreweave_*_query

    def __post_init__(self) -> None:
        self.policy = RetryPolicy.of(self.server)
        self.query = _query_of(self.server, self.url)

    def page(self, page_no: int, params: dict) -> dict:
        """One page as a JSON object (see content)."""
        return _decode(self.content(page_no, params), self.kind, page_no)

    def content(self, page_no: int, params: dict) -> bytes:
        """One page's JSON text. Connection errors, timeouts, 429 and 5xx are
        tried again as the retry policy says, within the deadline; any other
        status fails at once."""
        attempt = 0
        while True:
            verdict, headers, content = self._attempt(page_no, params)
            if verdict is _OK:
                return _json_content(headers, content, self.kind, page_no)
            self._before_retrying(verdict, page_no, attempt)
            attempt += 1

    def _attempt(self, page_no: int, params: dict) -> Tuple[Verdict, Any, bytes]:
        """One request, counted and classified."""
        try:
            status, headers, content = self._send(params, page_no)
        except _Transient as e:
            self.stats.answered(self.kind, "error")
            return Verdict(Action.RETRY, error=e.args[0]), None, b""
        self.stats.answered(self.kind, f"{status // 100}xx", len(content))
        return classify(status, headers, content, self.server.token), headers, content

    def _before_retrying(self, verdict: Verdict, page_no: int, attempt: int) -> None:
        """Raise what a failed ``attempt`` calls for, or wait as the policy
        says if the deadline leaves time for it."""
        if verdict.action is not Action.RETRY:
            raise _refusal(verdict, self.kind, page_no, self.server.base_url)
        failure = verdict.failure(self.server.base_url)
        if self.policy.exhausted(attempt):
            reason = FetchReason.UNREACHABLE if verdict.status is None else FetchReason.SERVER_FAILING
            raise FetchError(self.kind, page_no, reason, failure=failure, attempts=attempt + 1)
        asked = retry_after_seconds(verdict.retry_after, time.time())
        wait = self.policy.delay(attempt, asked, self.clock.random())
        if self.clock.monotonic() + wait > self.deadline:
            raise FetchError(
                self.kind, page_no, FetchReason.NO_TIME_TO_RETRY, failure=failure, deadline=self.server.deadline
            )
        log.warning(
            "%s page %d: %s; retrying in %.1f s (%d of %d)",
            self.kind, page_no, failure, wait, attempt + 1, self.policy.retries,
        )
        self.stats.retried()
        self.clock.sleep(wait)

    def _send(self, params: dict, page_no: int):
        """One GET, read to the end within the size limit and the deadline.
        :raises _Transient: for what a retry may cure."""
        remaining = self.deadline - self.clock.monotonic()
        if remaining <= 0:
            raise FetchError(self.kind, page_no, FetchReason.DEADLINE, deadline=self.server.deadline)
        # Socket timeouts restart with every byte, so a server trickling its
        # headers or body would outlast any of them: the exchange runs in a
        # daemon thread and is abandoned, with the run, at the deadline. The
        # grace lets the socket timeout and _read's checks, which say more,
        # speak first.
        if self.exchanger is None:
            self.exchanger = Exchanger()
        outcome = self.exchanger.run(lambda: self._exchange(params, page_no, remaining), remaining + WATCHDOG_GRACE)
        if outcome is None:
            raise FetchError(self.kind, page_no, FetchReason.DEADLINE_WAITING, deadline=self.server.deadline)
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]

    def close(self) -> None:
        if self.exchanger is not None:
            self.exchanger.close()
            self.exchanger = None

    def _exchange(self, params: dict, page_no: int, remaining: float):
        server = self.server
        try:
            # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE.
            # The paging parameters first, then the endpoint's query (which
            # config refuses to carry any of them, so none is overridden).
            response = self.session.get(
                self.url, params=[*params.items(), *self.query], timeout=min(server.timeout, remaining),
                verify=server.verify, allow_redirects=False, stream=True,
            )
            with response:
                log.debug("GET %s -> %d", response.url, response.status_code)
                return response.status_code, response.headers, self._read(response, page_no)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            raise _Transient(type(e).__name__) from None
        except urllib3.exceptions.HTTPError as e:  # while reading the body
            raise _Transient(type(e).__name__) from None
        except requests.RequestException as e:
            raise FetchError(self.kind, page_no, FetchReason.REQUEST_FAILED, error=type(e).__name__) from None

    def _read(self, response, page_no: int) -> bytes:
        limit = self.server.max_page_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise ListingError(self.kind, page_no, ListingReason.TOO_LARGE_RESPONSE, limit=limit)
        chunks, size = [], 0
        for chunk in response.iter_content(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ListingError(self.kind, page_no, ListingReason.TOO_LARGE_RESPONSE, limit=limit)
            if self.clock.monotonic() > self.deadline:
                raise FetchError(self.kind, page_no, FetchReason.DEADLINE_READING, deadline=self.server.deadline)
            chunks.append(chunk)
        return b"".join(chunks)


def _query_of(server: Server, url: str) -> Tuple[Tuple[str, str], ...]:
    """The extra parameters of every listing request to ``url``."""
    if url == server.users_url:
        return server.users_query or ()
    if url == server.groups_url:
        return server.groups_query or ()
    return ()


class Exchanger:
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


def _json_content(headers, content: bytes, kind: str, page_no: int) -> bytes:
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise ListingError(kind, page_no, ListingReason.NOT_JSON_TYPE, content_type=content_type[:60])
    return content


def _decode(content: bytes, kind: str, page_no: int) -> dict:
    body = _loads(content)
    if body is _NOT_JSON:
        raise ListingError(kind, page_no, ListingReason.NOT_JSON)
    if not isinstance(body, dict):
        raise ListingError(kind, page_no, ListingReason.NOT_AN_OBJECT)
    schemas = body.get("schemas", [LIST_RESPONSE])
    if not isinstance(schemas, list) or (schemas and LIST_RESPONSE not in schemas):
        raise ListingError(kind, page_no, ListingReason.NOT_A_LIST_RESPONSE, schemas=str(schemas)[:100])
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
    """The server's SCIM error 'detail' ("" if none), shortened, printable,
    and without our token should the server echo it."""
    detail = _error_field(content, "detail")
    if detail is None:
        return ""
    detail = detail.replace(token, "<token>") if token else detail
    return "".join(c if c.isprintable() else " " for c in detail)[:200]
