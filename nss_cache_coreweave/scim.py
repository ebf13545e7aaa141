"""Fetch: list every resource of a SCIM endpoint, all or nothing.

One function talks to the network (``_get``); the page checks are plain code
around it. Any anomaly fails the whole listing: nsscache must never be handed
a partial directory.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Callable, Dict, Hashable, List, Optional, TypeVar

import requests
import requests.auth

from . import __version__
from .config import Server
from .errors import AuthError, FetchError, ListingError, StaleCursorError

__all__ = ["new_session", "list_resources", "USER_AGENT"]

log = logging.getLogger(__name__)

USER_AGENT = f"nss-cache-coreweave/{__version__}"
SCIM_JSON = "application/scim+json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
STALE_CURSOR_TYPES = frozenset({"invalidCursor", "expiredCursor"})  # RFC 9865 §2.3
BACKOFF_BASE = 1.0  # seconds; doubled per retry
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 120.0
MAX_PAGES = 100_000

T = TypeVar("T")


def new_session(server: Server) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Accept": SCIM_JSON, "User-Agent": USER_AGENT})
    # As session.auth (not a plain header) so that a ~/.netrc cannot replace
    # the token, and requests drops it on a redirect to another host.
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
    sleep: Callable[[float], None] = time.sleep,
) -> List[T]:
    """Every resource at ``url``, each passed through ``extract`` (so only the
    fields the maps need stay in memory) and de-duplicated by ``key`` (the
    resource id).

    :raises FetchError: transport failure, 401/403, or 429/5xx after retries.
    :raises ListingError: anything that is not a complete listing.
    """
    walk = _walk_cursor if server.pagination == "cursor" else _walk_index
    try:
        return walk(session, server, url, kind, extract, key, sleep)
    except StaleCursorError:
        # RFC 9865: a cursor may expire mid-walk; start over once.
        log.warning("%s: the server expired our cursor; restarting the listing once", kind)
        return walk(session, server, url, kind, extract, key, sleep)


class _Collector:
    """De-duplicates resources by id and insists that each page makes progress."""

    def __init__(self, kind, extract, key):
        self.kind, self.extract, self.key = kind, extract, key
        self.items: Dict[Hashable, object] = {}

    def add_page(self, page_no: int, body: dict) -> int:
        resources = body.get("Resources", [])
        if not isinstance(resources, list):
            raise ListingError(f"{self.kind} page {page_no}: 'Resources' is not a list: refusing a malformed listing")
        new = 0
        for resource in resources:
            if not isinstance(resource, dict) or not isinstance(resource.get("id"), str) or not resource["id"]:
                raise ListingError(f"{self.kind} page {page_no}: a resource has no string 'id': refusing a malformed listing")
            item = self.extract(resource)
            k = self.key(item)
            if k not in self.items:
                self.items[k] = item
                new += 1
        return new


def _walk_index(session, server, url, kind, extract, key, sleep):
    """RFC 7644 §3.4.2.4: startIndex (1-based) and count."""
    collected = _Collector(kind, extract, key)
    start, total = 1, None
    for page_no in range(1, MAX_PAGES + 1):
        body = _get(session, server, url, {"startIndex": start, "count": server.page_size}, kind, page_no, sleep)
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
        raise ListingError(f"{kind}: more than {MAX_PAGES} pages: refusing an endless listing")
    if len(collected.items) != total:
        raise ListingError(
            f"{kind}: collected {len(collected.items)} distinct resources but totalResults is {total}: refusing a partial listing"
        )
    return list(collected.items.values())


def _walk_cursor(session, server, url, kind, extract, key, sleep):
    """RFC 9865: ``cursor`` (empty first), follow ``nextCursor`` until absent."""
    collected = _Collector(kind, extract, key)
    cursor, seen_cursors, total = "", set(), None
    for page_no in range(1, MAX_PAGES + 1):
        body = _get(session, server, url, {"cursor": cursor, "count": server.page_size}, kind, page_no, sleep)
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
        raise ListingError(f"{kind}: more than {MAX_PAGES} pages: refusing an endless listing")
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


def _get(session, server, url, params, kind, page_no, sleep) -> dict:
    """GET one page, retrying connection errors, 429 and 5xx; never 401/403."""
    where = f"{kind} page {page_no}"
    for attempt in range(server.retries + 1):
        last = attempt == server.retries
        try:
            # verify per request: a session-level value loses to REQUESTS_CA_BUNDLE.
            response = session.get(url, params=params, timeout=server.timeout, verify=server.verify)
        except (requests.ConnectionError, requests.Timeout) as e:
            problem = f"{where}: {type(e).__name__} talking to {server.base_url}"
            if last:
                raise FetchError(f"{problem} (after {attempt + 1} attempts): is the network or the server down?") from None
            wait = _backoff(attempt)
        except requests.RequestException as e:
            raise FetchError(f"{where}: request failed: {type(e).__name__}") from None
        else:
            log.debug("GET %s -> %d", response.url, response.status_code)
            status = response.status_code
            if status == 200:
                return _json_body(response, where)
            detail = _error_detail(response, server.token)
            if status in (401, 403):
                raise AuthError(
                    f"{where}: HTTP {status} from {server.base_url}{detail}: check the bearer token "
                    "(coreweave_token_file or NSSCACHE_SCIM_AUTH_TOKEN) and its scope"
                )
            if status == 400 and _scim_type(response) in STALE_CURSOR_TYPES:
                raise StaleCursorError(f"{where}: HTTP 400{detail}")
            problem = f"{where}: HTTP {status} from {server.base_url}{detail}"
            if status not in RETRY_STATUSES:
                raise FetchError(f"{problem}: check coreweave_base_url and the endpoints")
            if last:
                raise FetchError(f"{problem} (after {attempt + 1} attempts): the server is failing, try later")
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is None:
                wait = _backoff(attempt)
        log.warning("%s; retrying in %.1f s (%d of %d)", problem, wait, attempt + 1, server.retries)
        sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _json_body(response, where) -> dict:
    body = _loads(response.content)
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


def _error_field(response, name: str) -> Optional[str]:
    body = _loads(response.content)
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


def _scim_type(response) -> Optional[str]:
    return _error_field(response, "scimType")


def _error_detail(response, token: str) -> str:
    """The server's SCIM error 'detail', shortened, printable, and without
    our token should the server echo it."""
    detail = _error_field(response, "detail")
    if detail is None:
        return ""
    detail = detail.replace(token, "<token>") if token else detail
    detail = "".join(c if c.isprintable() else " " for c in detail)[:200]
    return f" ({detail!r})"


def _backoff(attempt: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * (2**attempt))


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After in seconds or as an HTTP date, clamped to RETRY_AFTER_MAX."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(RETRY_AFTER_MAX, seconds))
