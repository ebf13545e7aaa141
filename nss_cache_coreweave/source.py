"""The nsscache Source ``coreweave``: a thin adapter over
config -> snapshot -> policy -> render.

nsscache builds a fresh Source for every map, so the one piece of process
state lives here: ``_CACHE``, which keeps the snapshot (Users and Groups,
listed once) and the decided Directory for the life of the process, so that
``nsscache update`` with four maps lists each endpoint once and every map is
cut from the same data. A failure is cached too: later maps of the same run
fail the same way instead of listing again.
"""

from __future__ import annotations

import logging
from typing import Dict, Tuple, Union

from nss_cache import error
from nss_cache.sources import source

from . import config as config_mod
from . import policy, render, snapshot
from .errors import ConfigError, CoreWeaveError, FetchError, ListingError

__all__ = ["CoreWeaveSource", "directory", "register", "log_directory"]

log = logging.getLogger("nss_cache_coreweave")

_Outcome = Union[snapshot.Snapshot, policy.Directory, CoreWeaveError]
_CACHE: Dict[Tuple, _Outcome] = {}


def directory(options: dict) -> policy.Directory:
    """The Directory for a map's nsscache options, fetched at most once per
    process. :raises CoreWeaveError:"""
    config = config_mod.parse(options)
    decided = _CACHE.get(("directory", config))
    if decided is None:
        fetch_key = ("snapshot", config.server, config.users, config.groups)
        snap = _CACHE.get(fetch_key)
        if snap is None:
            try:
                snap = snapshot.take(config)
            except CoreWeaveError as e:
                snap = e
            _CACHE[fetch_key] = snap
        if isinstance(snap, CoreWeaveError):
            raise snap
        decided = policy.decide(snap, config)
        _CACHE[("directory", config)] = decided
        log_directory(config, decided)
    return decided


def log_directory(config: config_mod.Config, decided: policy.Directory) -> None:
    """One line per dropped entry and warning, then one summary line."""
    for warning in config.warnings:
        log.warning("coreweave: %s", warning)
    for name in decided.missing_groups:
        log.warning("coreweave: group %r listed in coreweave_groups does not exist in the directory", name)
    for drop in decided.drops:
        log.log(logging.INFO if drop.expected else logging.WARNING, "coreweave: %s", drop)
    log.info(
        "coreweave: %d users, %d groups, %d SSH keys accepted; %d entries dropped",
        len(decided.accounts),
        len(decided.groups),
        sum(len(a.keys) for a in decided.accounts),
        len(decided.drops),
    )


class CoreWeaveSource(source.Source):
    """CoreWeave IAM over SCIM 2.0. The constructor is cheap: no I/O."""

    name = "coreweave"

    def GetPasswdMap(self, since=None):
        return self._map("passwd")

    def GetGroupMap(self, since=None):
        return self._map("group")

    def GetShadowMap(self, since=None):
        return self._map("shadow")

    def GetSshkeyMap(self, since=None):
        return self._map("sshkey")

    def Verify(self) -> int:
        # nsscache adds this up (retval += source.Verify()): an int, always.
        try:
            directory(self.conf)
        except CoreWeaveError as e:
            log.error("coreweave: %s", e)
            return 1
        except Exception:
            log.exception("coreweave: internal error while verifying the source")
            return 1
        return 0

    def _map(self, map_name: str):
        # Never SetModifyTimestamp(): without a modify timestamp every run is
        # a full write, so removals land at once and nsscache never merges.
        try:
            return render.render(map_name, directory(self.conf))
        except FetchError as e:
            # Skips the remaining maps: they stay mutually consistent.
            raise error.SourceUnavailable(f"coreweave: {e}") from None
        except (ConfigError, ListingError) as e:
            raise error.InvalidMap(f"coreweave: {e}") from None
        except Exception as e:  # a bug of ours must not become a traceback
            log.exception("coreweave: internal error building the %s map", map_name)
            raise error.InvalidMap(f"coreweave: internal error ({type(e).__name__}); the {map_name} cache is kept") from None


def register() -> None:
    """Register the source with nsscache's factory (idempotent)."""
    from nss_cache.sources import source_factory

    source_factory.RegisterImplementation(CoreWeaveSource)
