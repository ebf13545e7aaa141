"""The nsscache Source ``coreweave``: a thin adapter over
config -> snapshot -> policy -> render.

nsscache builds a fresh Source for every map, so the process state lives
here, in ``_CACHE``: the snapshot (Users and Groups, listed once) and the Run
(the decided Directory, or the error that prevented it) for the life of the
process, so that ``nsscache update`` with four maps lists each endpoint once
and every map is cut from the same data. A failure is cached too: later maps
of the same run fail the same way instead of listing again.

A run is recorded (state file, metrics, the summary line) when the process
ends (``finish``, run at exit), because only then is it known which maps
nsscache actually wrote: nsscache calls ``GetModifyTimestamp()`` on a map it
was handed once it has committed it to disk (``FullUpdateFromMap``), and on
no other map.
"""

from __future__ import annotations

import atexit
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Tuple, Union

from nss_cache import error
from nss_cache.sources import source

from . import config as config_mod
from . import marker, policy, redact, render, report, scim, snapshot, state
from .errors import ConfigError, CoreWeaveError, FetchError, GuardError, ListingError

__all__ = ["CoreWeaveSource", "Run", "directory", "finish", "register", "log_directory", "guard", "state_scope"]

log = logging.getLogger("nss_cache_coreweave")
# nsscache leaves the root logger at WARNING unless run with -v, which would
# swallow the run's summary line and the dropped entries logged at INFO; our
# records still go through nsscache's own handlers (terminal or syslog).
if log.level == logging.NOTSET:
    log.setLevel(logging.INFO)
# The registration hook imports this module inside the stock nsscache before
# nsscache reads (and, with -d, logs) its configuration, inline coreweave_token
# included.
redact.guard_nsscache_config()


@dataclass
class Run:
    """One run in this process: what every map is cut from, and what nsscache did with the maps."""

    config: config_mod.Config
    id: str  # marker.new_run(): named on the first line of every cache it writes
    outcome: Union[policy.Directory, CoreWeaveError]
    report: report.RunReport  # as decided; finish() adds what nsscache wrote
    record: bool = False  # only runs that hand maps to nsscache are recorded (not Verify)
    served: List[str] = field(default_factory=list)  # maps handed to nsscache
    written: List[str] = field(default_factory=list)  # maps nsscache committed
    finished: bool = False


# ("snapshot", server, attributes, allow-list) -> Snapshot or its error; ("run", Config) -> Run.
_CACHE: Dict[Tuple, Union[snapshot.Snapshot, CoreWeaveError, Run]] = {}


def current_run(options: dict, *, record: bool = True) -> Run:
    """The Run for a map's nsscache options, fetched and decided at most once
    per process. :raises ConfigError:"""
    config = config_mod.parse(options)
    key = ("run", config)
    if key not in _CACHE:
        _CACHE[key] = _start(config)
    found = _CACHE[key]
    assert isinstance(found, Run)
    if record and not found.record:  # e.g. nsscache verified the source before the maps
        found.record = True
        atexit.unregister(finish)  # once per process
        atexit.register(finish)
    return found


def directory(options: dict, *, record: bool = True) -> policy.Directory:
    """The decided Directory for a map's nsscache options. :raises CoreWeaveError:"""
    outcome = current_run(options, record=record).outcome
    if isinstance(outcome, CoreWeaveError):
        raise outcome
    return outcome


def _start(config: config_mod.Config) -> Run:
    started, start = time.time(), time.monotonic()
    stats = scim.Stats()
    try:
        outcome: Union[policy.Directory, CoreWeaveError] = _decide(config, stats)
    except CoreWeaveError as e:
        outcome = e
    decided = outcome if isinstance(outcome, policy.Directory) else None
    run_report = report.RunReport(
        started=started,
        duration=round(time.monotonic() - start, 3),
        run=marker.new_run(started),
        outcome="decided" if decided else "refused" if isinstance(outcome, GuardError) else "failed",
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
    return Run(config, run_report.run, outcome, run_report)


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
    assert isinstance(snap, snapshot.Snapshot)
    decided = policy.decide(snap, config)
    log_directory(config, decided)
    guard(config, decided, accept_shrink=os.environ.get(policy.ACCEPT_SHRINK_ENV) == "1")
    return decided


def finish() -> None:
    """Record every run of this process that is to be recorded and is not yet:
    what nsscache wrote, in the state file and the metrics file, and the
    summary line. Runs at exit; ``nsscache-coreweave update`` calls it itself."""
    for run in [r for r in _CACHE.values() if isinstance(r, Run) and r.record and not r.finished]:
        run.finished = True
        _record(run)


def _record(run: Run) -> None:
    written = tuple(m for m in run.served if m in run.written)
    not_written = tuple(m for m in run.served if m not in run.written)
    outcome = run.report.outcome
    if outcome == "decided":
        outcome = "ok" if run.served and not not_written else "incomplete"
    done = replace(run.report, outcome=outcome, maps_written=written, maps_not_written=not_written)
    if outcome == "incomplete":
        done = replace(done, error_kind="NotWritten", error=_not_written_text(run.served, not_written))
    log.log(logging.INFO if outcome == "ok" else logging.ERROR, "coreweave: %s", report.summary(done))
    config = run.config
    try:
        entry = report.record(config.state_dir, state_scope(config), done)
    except OSError as e:
        log.warning(
            "coreweave: cannot record this run in %s (%s): the shrink guard will have nothing "
            "to compare with; set coreweave_state_dir", config.state_dir, e.strerror,
        )
        entry = {}
    if config.metrics_file:
        try:
            report.write_metrics(config.metrics_file, done, entry)
        except OSError as e:
            log.warning("coreweave: cannot write %s: %s", config.metrics_file, e.strerror)


def _not_written_text(served: List[str], not_written: Tuple[str, ...]) -> str:
    if not served:
        return "nsscache asked for no map"
    return (f"nsscache did not write {', '.join(not_written)} (see its log): those caches are from an earlier "
            "run, and the keys command serves no key until a run writes passwd and sshkey together")


def guard(config: config_mod.Config, decided: policy.Directory, *, accept_shrink: bool) -> None:
    """The whole-run guard: refuse a large shrink against the counts of the
    last accepted run, or an empty result. :raises GuardError:"""
    previous = state.load(config.state_dir, state_scope(config))
    problem = policy.shrink_problem(decided, previous, config.max_shrink, config.allowed_groups)
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


class _Receipt:
    """Stands in for a map's GetModifyTimestamp: nsscache calls it only once
    the map is committed (its files written and renamed into place)."""

    def __init__(self, run: Run, map_name: str, original):
        self.run, self.map_name, self.original = run, map_name, original

    def __call__(self):
        if self.map_name not in self.run.written:
            self.run.written.append(self.map_name)
        return self.original()


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
            run = current_run(self.conf)
            if isinstance(run.outcome, CoreWeaveError):
                raise run.outcome
            nss_map = render.render(map_name, run.outcome, run.id)
        except FetchError as e:
            # Skips the remaining maps: they stay mutually consistent.
            raise error.SourceUnavailable(f"coreweave: {e}") from None
        except (ConfigError, ListingError, GuardError) as e:
            raise error.InvalidMap(f"coreweave: {e}") from None
        except Exception as e:  # a bug of ours must not become a traceback
            log.exception("coreweave: internal error building the %s map", map_name)
            raise error.InvalidMap(f"coreweave: internal error ({type(e).__name__}); the {map_name} cache is kept") from None
        nss_map.GetModifyTimestamp = _Receipt(run, map_name, nss_map.GetModifyTimestamp)
        if map_name not in run.served:
            run.served.append(map_name)
        return nss_map


def register() -> None:
    """Register the source with nsscache's factory (idempotent)."""
    from nss_cache.sources import source_factory

    source_factory.RegisterImplementation(CoreWeaveSource)
