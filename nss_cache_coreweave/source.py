"""The nsscache Source ``coreweave``: nsscache's calls in, nsscache's errors
out. nsscache builds a fresh Source for every map; the run they are all cut
from (fetched, decided, guarded and recorded once per process) is run.py's."""

from __future__ import annotations

import logging
from functools import partialmethod

from nss_cache import error
from nss_cache.sources import source

from . import redact, render, run
from .errors import BundleError, ConfigError, CoreWeaveError, FetchError, GuardError, InternalError, ListingError

__all__ = ["CoreWeaveSource", "register"]

log = logging.getLogger("nss_cache_coreweave")
# nsscache leaves the root logger at WARNING unless run with -v, which would swallow the
# summary line and the drops logged at INFO; our records still go through its handlers.
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)
# The registration hook imports this module inside the stock nsscache before nsscache
# reads (and, with -d, logs) its configuration, inline coreweave_token included.
redact.guard_nsscache_config()


class _NoMerge:
    """Handed to nsscache asking for changes since a modify timestamp (another
    source's): its merge only adds, so removed users and keys would stay.
    EmptyMap at its first len(), before it reads the old cache, makes it fall
    back to a full rewrite ("Local cache is invalid, faulting to a full sync")."""

    def __init__(self, map_name: str):
        self.map_name = map_name

    def __len__(self) -> int:
        log.warning("coreweave: nsscache asked to merge into the %s cache (a timestamp-%s-modify file, left by "
                    "another source, is in its timestamp_dir; delete it): rewriting it whole instead",
                    self.map_name, self.map_name)
        raise error.EmptyMap(f"coreweave: the {self.map_name} cache is rewritten whole, never merged into")


class CoreWeaveSource(source.Source):
    """CoreWeave IAM over SCIM 2.0. The constructor is cheap: no I/O."""

    name = "coreweave"

    def Verify(self) -> int:
        # nsscache adds this up (retval += source.Verify()): an int, always.
        try:
            run.directory(self.conf, record=False)  # verify writes no map: not a run to report
        except CoreWeaveError as e:
            log.error("coreweave: %s", e)
            return 1
        except Exception:
            log.exception("coreweave: internal error while verifying the source")
            return 1
        return 0

    def _map(self, map_name: str, since=None):
        # Never SetModifyTimestamp(): without a modify timestamp every run is
        # a full write, so removals land at once and nsscache never merges.
        try:
            current = run.current_run(self.conf)
            decided = current.directory()
            if since is not None:  # nsscache means to merge: make it rewrite instead
                return _NoMerge(map_name)
            nss_map = render.render(map_name, decided, current.report.run, current.shadow)
            return current.hand_out(map_name, nss_map)
        except FetchError as e:  # skips the remaining maps: they stay mutually consistent
            raise error.SourceUnavailable(f"coreweave: {e}") from None
        except (ConfigError, ListingError, BundleError, GuardError) as e:
            raise error.InvalidMap(f"coreweave: {e}") from None
        except InternalError as e:  # logged while deciding the run
            raise error.InvalidMap(f"coreweave: internal error ({e.kind}); the {map_name} cache is kept") from None
        except Exception as e:  # a bug of ours must not become a traceback
            log.exception("coreweave: internal error building the %s map", map_name)
            raise error.InvalidMap(
                f"coreweave: internal error ({type(e).__name__}); the {map_name} cache is kept") from None

    GetPasswdMap = partialmethod(_map, "passwd")
    GetGroupMap = partialmethod(_map, "group")
    GetShadowMap = partialmethod(_map, "shadow")
    GetSshkeyMap = partialmethod(_map, "sshkey")


def register() -> None:
    """Register the source with nsscache's factory (idempotent)."""
    from nss_cache.sources import source_factory

    source_factory.RegisterImplementation(CoreWeaveSource)
