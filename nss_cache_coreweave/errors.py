"""One exception tree. Every message says what failed and what to do, and never
contains the bearer token."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum, unique
from typing import Any, Optional, Sequence, Tuple, Union

__all__ = [
    "CoreWeaveError",
    "ConfigProblem",
    "ConfigError",
    "FetchError",
    "AuthError",
    "StaleCursorError",
    "Failure",
    "FetchReason",
    "ListingError",
    "ListingReason",
    "GuardError",
    "PublishError",
    "BundleReason",
    "BundleError",
    "InternalError",
]


class CoreWeaveError(Exception):
    """Root of every error this package raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration: ``key`` is the option it is about
    (``coreweave_page_size``), or the file it is about (``/etc/shells``), or ""
    when it is neither (no bearer token anywhere); ``message`` is what the
    operator reads, naming the key itself."""

    key: str
    message: str


class ConfigError(CoreWeaveError, ValueError):
    """nsscache.conf (or the token file) is wrong; nothing was fetched.

    ``problems`` holds every (key, message) found. ``ConfigError.invalid(problems)``
    renders as ``invalid configuration: <message>; <message>``; ``ConfigError(message)``
    holds that one message under the key "" and renders it as given."""

    def __init__(self, problems: Union[str, Sequence[ConfigProblem]], heading: str = "") -> None:
        self.problems: Tuple[ConfigProblem, ...] = (
            (ConfigProblem("", problems),) if isinstance(problems, str) else tuple(problems)
        )
        self.heading = heading
        super().__init__(str(self))

    @classmethod
    def invalid(cls, problems: Sequence[ConfigProblem]) -> ConfigError:
        """The problems of a map's coreweave_* options, reported together."""
        return cls(problems, heading="invalid configuration")

    @property
    def keys(self) -> Tuple[str, ...]:
        """The key of each problem, in order."""
        return tuple(problem.key for problem in self.problems)

    def __str__(self) -> str:
        text = "; ".join(problem.message for problem in self.problems)
        return f"{self.heading}: {text}" if self.heading else text

    def __reduce__(self):  # a pickled copy keeps the fields, not only the rendered text
        return type(self), (self.problems, self.heading)


# --- fetching and listing: endpoint, page, reason, values --------------------

# Recurring verdicts, written once.
_PARTIAL = "refusing a partial listing"
_MALFORMED = "refusing a malformed listing"
_ENDLESS = "refusing an endless listing"
_TOO_MANY = "refusing to hold a larger listing"
_GO_ON = "refusing to go on"
_DEADLINE = "{where}: coreweave_deadline ({deadline:g} s) exceeded"


@dataclass(frozen=True)
class Failure:
    """What one attempt at a page got instead of the page: an HTTP status
    (with the server's SCIM error ``detail``, cleaned and without our token),
    or no HTTP answer at all (``error``: the transport error's type name)."""

    base_url: str
    status: Optional[int] = None  # None: no HTTP answer
    detail: str = ""
    error: str = ""  # e.g. "ReadTimeout", "ConnectionError"

    def __str__(self) -> str:
        if self.status is None:
            return f"{self.error} talking to {self.base_url}"
        detail = f" ({self.detail!r})" if self.detail else ""
        return f"HTTP {self.status} from {self.base_url}{detail}"


@unique
class FetchReason(Enum):
    """Why a page could not be fetched; each value is the message's template
    (``where``: "Users page 2"; the rest: the error's values)."""

    UNREACHABLE = "{where}: {failure} (after {attempts} attempts): is the network or the server down?"
    SERVER_FAILING = "{where}: {failure} (after {attempts} attempts): the server is failing, try later"
    NO_TIME_TO_RETRY = "{where}: {failure}: no time left to retry within coreweave_deadline ({deadline:g} s)"
    TOKEN_REFUSED = (
        "{where}: {failure}: the bearer token is missing, expired or lacks the SUNK/SCIM permissions: "
        "check coreweave_token_file or NSSCACHE_SCIM_AUTH_TOKEN"
    )
    STALE_CURSOR = "{where}: {failure}: the server expired our cursor; try later"
    NOT_RETRIED = "{where}: {failure}: not retried; check coreweave_base_url and the endpoints"
    REDIRECT = (
        "{where}: HTTP {status} redirect to {location}: refusing to follow it (the bearer token must not go "
        "anywhere else); set coreweave_base_url to the final URL"
    )
    REQUEST_FAILED = "{where}: request failed: {error}"
    DEADLINE = _DEADLINE + ": " + _GO_ON
    DEADLINE_WAITING = _DEADLINE + " waiting for the server: " + _GO_ON
    DEADLINE_READING = _DEADLINE + " while reading"
    DEADLINE_DECODING = _DEADLINE + " while decoding: " + _GO_ON


@unique
class ListingReason(Enum):
    """Why a listing was refused; each value is the message's template
    (``where``: "Users page 2", or "Users" for the listing as a whole)."""

    TOO_LARGE_RESPONSE = (
        "{where}: the response is larger than coreweave_max_page_bytes ({limit} bytes): refusing a runaway response"
    )
    NOT_JSON_TYPE = "{where}: the response is {content_type}, not JSON: " + _MALFORMED
    NOT_JSON = "{where}: the response is not JSON: " + _MALFORMED
    NOT_AN_OBJECT = "{where}: the response is not a JSON object: " + _MALFORMED
    NOT_A_LIST_RESPONSE = "{where}: the response is not a SCIM ListResponse (schemas {schemas})"
    RESOURCES_NOT_A_LIST = "{where}: 'Resources' is not a list: " + _MALFORMED
    RESOURCE_WITHOUT_ID = "{where}: a resource has no string 'id': " + _MALFORMED
    ITEMS_PER_PAGE = "{where} says itemsPerPage {said} but holds {held} resources: " + _PARTIAL
    BAD_TOTAL = "{where}: totalResults is {total!r}, not a non-negative integer: refusing a listing we cannot check"
    TOTAL_CHANGED = "{where} has totalResults {total}, page {first_page} said {first}: " + _PARTIAL
    NO_NEW_RESOURCES = (
        "{where} (startIndex {start}) brought no new resources after {collected} of {total}: " + _PARTIAL
    )
    BAD_NEXT_CURSOR = "{where}: nextCursor {cursor!r} is not a non-empty string"
    NO_PROGRESS = "{where} makes no progress (repeated cursor or no new resources): " + _ENDLESS
    CHANGED_DURING_LISTING = (
        "{where}: id {id!r} appears twice with different content: the directory changed during the listing, "
        "refusing it (the next run will retry)"
    )
    TOO_MANY_PAGES = "{where}: more than coreweave_max_pages ({max_pages}) pages: " + _ENDLESS
    COUNT_MISMATCH = "{where}: collected {collected} distinct resources but totalResults is {total}: " + _PARTIAL
    TOO_MANY_ANNOUNCED = "{where}: totalResults is {count}, more than {option} ({limit}): " + _TOO_MANY
    TOO_MANY_COLLECTED = "{where}: collected {count}, more than {option} ({limit}): " + _TOO_MANY
    NO_MEMBER_FETCH = ("{where}: {why}: coreweave_fetch = members refuses to list every user instead; set "
                       "coreweave_fetch = auto (falls back to the full listing) or full")


class _EndpointError(CoreWeaveError):
    """An error about listing one endpoint: ``kind`` ("Users", "Groups"),
    ``page`` (1-based; None: the listing as a whole), ``reason`` and the
    reason's ``values``; ``str()`` fills the reason's template with them."""

    reason: Enum

    def __init__(self, kind: str, page: Optional[int], reason: Enum, **values: Any) -> None:
        super().__init__(kind, page, reason)
        self.kind, self.page, self.reason, self.values = kind, page, reason, values

    @property
    def where(self) -> str:
        return self.kind if self.page is None else f"{self.kind} page {self.page}"

    def __str__(self) -> str:
        return str(self.reason.value).format(where=self.where, **self.values)

    def __repr__(self) -> str:
        values = "".join(f", {name}={value!r}" for name, value in self.values.items())
        return f"{type(self).__name__}({self.kind!r}, {self.page!r}, {self.reason}{values})"

    def __reduce__(self):  # a pickled copy (from a decoding worker) keeps the fields
        return functools.partial(type(self), **self.values), (self.kind, self.page, self.reason)


class FetchError(_EndpointError):
    """The directory could not be reached, refused us, or failed (transport,
    auth, 429/5xx after retries, deadline). The source maps it to
    SourceUnavailable. Values: ``failure`` (a :class:`Failure`) and what the
    reason's template names (``attempts``, ``deadline``, ``status``, ...)."""

    reason: FetchReason


class AuthError(FetchError):
    """HTTP 401/403: the token is missing, wrong, expired or lacks scope."""


class StaleCursorError(FetchError):
    """RFC 9865 invalidCursor/expiredCursor: the walk may restart once."""


class ListingError(_EndpointError):
    """The server answered, but not with a complete, well-formed listing
    (pagination anomaly, count mismatch, not JSON). The source maps it to
    InvalidMap: nsscache keeps the previous cache. Values: the numbers or
    the (shortened) text the reason's template names."""

    reason: ListingReason


_REFUSED_BUNDLE = "refusing the bundle, the caches are kept"


@unique
class BundleReason(Enum):
    """Why a node refused a published bundle (mirror mode); each value is the
    message's template (``where``: the bundle file, e.g. "bundle manifest.json")."""

    HTTP_STATUS = ("{where}: HTTP {status} from {url}: check coreweave_mirror_url and that the publisher has "
                   "published; " + _REFUSED_BUNDLE)
    TOO_LARGE = "{where}: larger than {limit} bytes: " + _REFUSED_BUNDLE
    BAD_SIGNATURE = ("{where}: the signature does not verify ({detail}): " + _REFUSED_BUNDLE
                     + "; is coreweave_mirror_public_key the publisher's key?")
    MALFORMED = "{where}: {detail}: " + _REFUSED_BUNDLE
    TAMPERED = ("{where}: {what} is {got}, the signed manifest says {expected}: a tampered or partly copied file; "
                + _REFUSED_BUNDLE)
    ROLLBACK = ("{where}: generation {generation} is older than generation {accepted}, the last one this node "
                "accepted: " + _REFUSED_BUNDLE + " (a rollback)")
    REUSED = ("{where}: generation {generation} differs from the generation of that number this node accepted: "
              + _REFUSED_BUNDLE)
    STALE = ("{where}: generation {generation} was published {age:.0f} s ago, more than coreweave_mirror_max_age "
             "({max_age:g} s): " + _REFUSED_BUNDLE + "; is the publisher running?")
    FUTURE = ("{where}: generation {generation} is dated {ahead:.0f} s in the future: " + _REFUSED_BUNDLE
              + "; check the clocks of the publisher and this node")


class BundleError(_EndpointError):
    """A published bundle the node does not accept (mirror.py): unsigned,
    tampered, rolled back, stale or malformed. The source maps it to
    InvalidMap: nsscache keeps the previous caches. ``kind`` names the bundle
    file; the values are what the reason's template names."""

    reason: BundleReason

    def __init__(self, kind: str, reason: BundleReason, **values: Any) -> None:
        super().__init__(kind, None, reason, **values)

    def __reduce__(self):
        return functools.partial(type(self), **self.values), (self.kind, self.reason)


# The shrink guard's refusals by the command they refuse: (more than max_shrink lost, all of it lost).
_SHRINK_REFUSALS = {
    "update": (
        "refusing to shrink {what} from {before} to {now} (-{share:.0%}, more than coreweave_max_shrink "
        "{max_shrink:.0%} of the last accepted run): the previous caches are kept. ",
        "refusing to remove all {before} {what} of the last accepted run: the previous caches are kept. ",
    ),
    "slurm-sync": (
        "refusing to remove {lost} of {before} {what} from every managed Slurm account (-{share:.0%}, more than "
        "coreweave_max_shrink {max_shrink:.0%}): nothing was changed. ",
        "refusing to remove all {before} {what} from every managed Slurm account: nothing was changed. ",
    ),
    "publish": (
        "refusing to shrink {what} from {before} to {now} (-{share:.0%}, more than coreweave_max_shrink "
        "{max_shrink:.0%} of the last publish): nothing was published. ",
        "refusing to remove all {before} {what} of the last publish: nothing was published. ",
    ),
}
# What an empty result with nothing to compare with leaves, by command.
_KEPT = {"publish": "nothing was published", "update": "the previous caches are kept",
         "slurm-sync": "nothing was changed"}


class GuardError(CoreWeaveError):
    """The shrink guard refused the run (shrink.py): ``what`` ("users",
    "groups") would go from ``before`` to ``now``, losing more than
    ``max_shrink`` of it or all of it; or, ``before`` None, the run is empty
    with no earlier accepted run to compare with (``allowed_groups``: None for
    every group). ``command`` ("update", "slurm-sync", "publish") is what the operator
    reruns with --accept-shrink. The source maps it to InvalidMap: nsscache
    keeps the previous cache."""

    ACCEPT_SHRINK_ENV = "NSSCACHE_COREWEAVE_ACCEPT_SHRINK"  # "1" accepts a shrink for one run

    def __init__(self, what: str, before: Optional[int], now: int, max_shrink: float, command: str,
                 allowed_groups: Optional[Tuple[str, ...]] = None) -> None:
        self.what, self.before, self.now, self.max_shrink = what, before, now, max_shrink
        self.command, self.allowed_groups = command, allowed_groups
        super().__init__(str(self))

    def __str__(self) -> str:
        return self._refusal() + (
            f"If this removal is intended, run `nsscache-coreweave {self.command} --accept-shrink` once "
            f"(or set {self.ACCEPT_SHRINK_ENV}=1 for one run)"
        )

    def _refusal(self) -> str:
        if self.before is None:
            groups = "*" if self.allowed_groups is None else ", ".join(self.allowed_groups)
            return (f"refusing an empty directory: no active member of coreweave_groups ({groups}) is left to "
                    f"write (no earlier accepted run to compare with); {_KEPT.get(self.command, _KEPT['update'])}. ")
        share = (self.before - self.now) / self.before if self.before else 0.0
        too_many, all_of_it = _SHRINK_REFUSALS[self.command]
        return (too_many if share > self.max_shrink else all_of_it).format(
            what=self.what, before=self.before, now=self.now, lost=self.before - self.now, share=share,
            max_shrink=self.max_shrink)

    def __reduce__(self):  # a pickled copy keeps the fields, not only the rendered text
        return type(self), (self.what, self.before, self.now, self.max_shrink, self.command, self.allowed_groups)


class PublishError(CoreWeaveError):
    """``publish`` could not write the bundle (``path``, the OS's ``reason``),
    or another publish holds the directory (``busy``); nodes still read the
    previous generation."""

    def __init__(self, path: str, reason: str, busy: bool = False):
        self.path, self.reason, self.busy = path, reason, busy
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.busy:
            return f"another publish into {self.path} is running: nothing was published; try again later"
        return f"cannot write the bundle into {self.path}: {self.reason}: nothing was published (nodes keep the " \
               "previous generation); check coreweave_publish_dir"

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.busy)


class InternalError(CoreWeaveError):
    """A bug of ours while deciding the run: every map fails the same way
    (InvalidMap), and the run is recorded as failed."""

    def __init__(self, kind: str):
        super().__init__(f"internal error ({kind}); the caches are kept")
        self.kind = kind  # the type of the exception that was raised
