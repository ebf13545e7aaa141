"""One exception tree. Every message says what failed and what to do, and never
contains the bearer token."""

__all__ = [
    "CoreWeaveError",
    "ConfigError",
    "FetchError",
    "AuthError",
    "StaleCursorError",
    "ListingError",
    "GuardError",
    "InternalError",
]


class CoreWeaveError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(CoreWeaveError, ValueError):
    """nsscache.conf (or the token file) is wrong; nothing was fetched."""


class FetchError(CoreWeaveError):
    """The directory could not be reached, refused us, or failed (transport,
    auth, 429/5xx after retries). The source maps it to SourceUnavailable."""


class AuthError(FetchError):
    """HTTP 401/403: the token is missing, wrong, expired or lacks scope."""


class StaleCursorError(FetchError):
    """RFC 9865 invalidCursor/expiredCursor: the walk may restart once."""


class ListingError(CoreWeaveError):
    """The server answered, but not with a complete, well-formed listing
    (pagination anomaly, count mismatch, not JSON). The source maps it to
    InvalidMap: nsscache keeps the previous cache."""


class GuardError(CoreWeaveError):
    """A whole-run guard refused the result (e.g. too large a shrink). The
    source maps it to InvalidMap: nsscache keeps the previous cache."""


class InternalError(CoreWeaveError):
    """A bug of ours while deciding the run: every map fails the same way
    (InvalidMap), and the run is recorded as failed."""

    def __init__(self, kind: str):
        super().__init__(f"internal error ({kind}); the caches are kept")
        self.kind = kind  # the type of the exception that was raised
