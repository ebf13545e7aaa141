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
import os
import time
from typing import Dict, Tuple, Union

from nss_cache import error
from nss_cache.sources import source

from . import config as config_mod
from . import policy, render, report, scim, snapshot, state
from .errors import ConfigError, CoreWeaveError, FetchError, GuardError, ListingError

__all__ = ["CoreWeaveSource", "directory", "register", "log_directory"]

log = logging.getLogger("nss_cache_coreweave")
# nsscache leaves the root logger at WARNING unless run with -v, which would
# swallow the run's summary line and the dropped entries logged at INFO; our
# records still go through nsscache's own handlers (terminal or syslog).
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)

_Outcome = Union[snapshot.Snapshot, policy.Directory, CoreWeaveError]
# ("snapshot", server, attributes, allow-list) -> Snapshot; ("directory", Config) -> Directory
# (or, for either, the error that prevented it).
_CACHE: Dict[Tuple, _Outcome] = {}


def directory(options: dict, *, record: bool = True) -> policy.Directory:
    """The Directory for a map's nsscache options, fetched and decided at
    most once per process. The run is logged in one summary line and, with
    ``record``, kept in the state file and the metrics file.
    :raises CoreWeaveError:"""
    config = config_mod.parse(options)
    key = ("directory", config)
    if key not in _CACHE:
        _CACHE[key] = _run(config, record=record)
    outcome = _CACHE[key]
    if isinstance(outcome, CoreWeaveError):
        raise outcome
    return outcome


def _run(config: config_mod.Config, *, record: bool) -> Union[policy.Directory, CoreWeaveError]:
    started, start = time.time(), time.monotonic()
    stats = scim.Stats()
    try:
        outcome: Union[policy.Directory, CoreWeaveError] = _decide(config, stats)
    except CoreWeaveError as e:
        outcome = e
    decided = outcome if isinstance(outcome, policy.Directory) else None
    run = report.RunReport(
        started=started,
        duration=round(time.monotonic() - start, 3),
        outcome="ok" if decided else "refused" if isinstance(outcome, GuardError) else "failed",
        error_kind="" if decided else type(outcome).__name__,
        error="" if decided else str(outcome),
        users=len(decided.accounts) if decided else 0,
        groups=len(decided.groups) if decided else 0,
        keys=sum(len(a.keys) for a in decided.accounts) if decided else 0,
        drops=report.RunReport.count_drops(decided.drops) if decided else {},
        requests=report.RunReport.count_requests(stats),
        retries=stats.retries,
        bytes=stats.bytes,
    )
    log.log(logging.INFO if decided else logging.ERROR, "coreweave: %s", report.summary(run))
    if record:
        try:
            entry = report.record(config.state_dir, state_scope(config), run)
        except OSError as e:
            log.warning(
                "coreweave: cannot record this run's counts in %s (%s): the shrink guard will have nothing "
                "to compare with; set coreweave_state_dir", config.state_dir, e.strerror,
            )
            entry = {}
        if config.metrics_file:
            try:
                report.write_metrics(config.metrics_file, run, entry)
            except OSError as e:
                log.warning("coreweave: cannot write %s: %s", config.metrics_file, e.strerror)
    return outcome


def _decide(config: config_mod.Config, stats: scim.Stats) -> policy.Directory:
    # The allow-list is part of the key: the snapshot keeps only its members.
    fetch_key = ("snapshot", config.server, config.users, config.groups, config.allowed_groups)
    if fetch_key not in _CACHE:
        try:
            _CACHE[fetch_key] = snapshot.take(config, stats=stats)
        except CoreWeaveError as e:
            _CACHE[fetch_key] = e
    snap = _CACHE[fetch_key]
    if isinstance(snap, CoreWeaveError):
        raise snap
    decided = policy.decide(snap, config)
    log_directory(config, decided)
    guard(config, decided, accept_shrink=os.environ.get(policy.ACCEPT_SHRINK_ENV) == "1")
    return decided


def guard(config: config_mod.Config, decided: policy.Directory, *, accept_shrink: bool) -> None:
    """The whole-run guard: refuse a large shrink against the counts of the
    last accepted run (which _run records). :raises GuardError:"""
    previous = state.load(config.state_dir, state_scope(config))
    problem = policy.shrink_problem(decided, previous, config.max_shrink)
    if problem and not accept_shrink:
        raise GuardError(problem)
    if problem:
        log.warning("coreweave: shrink accepted by the operator (%s=1): %s", policy.ACCEPT_SHRINK_ENV, problem)


def state_scope(config: config_mod.Config) -> str:
    """Counts are kept per directory and allow-list."""
    groups = "*" if config.allowed_groups is None else ",".join(config.allowed_groups)
    return f"{config.server.base_url} groups={groups}"


def log_directory(config: config_mod.Config, decided: policy.Directory) -> None:
    """One line per warning and dropped entry (the summary follows the run)."""
    for warning in config.warnings:
        log.warning("coreweave: %s", warning)
    for name in decided.missing_groups:
        log.warning("coreweave: group %r listed in coreweave_groups does not exist in the directory", name)
    for drop in decided.drops:
        log.log(logging.INFO if drop.expected else logging.WARNING, "coreweave: %s", drop)


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
            directory(self.conf, record=False)  # verify writes no map: not a run to report
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
        except (ConfigError, ListingError, GuardError) as e:
            raise error.InvalidMap(f"coreweave: {e}") from None
        except Exception as e:  # a bug of ours must not become a traceback
            log.exception("coreweave: internal error building the %s map", map_name)
            raise error.InvalidMap(f"coreweave: internal error ({type(e).__name__}); the {map_name} cache is kept") from None


def register() -> None:
    """Register the source with nsscache's factory (idempotent)."""
    from nss_cache.sources import source_factory

    source_factory.RegisterImplementation(CoreWeaveSource)
