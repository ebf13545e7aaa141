"""The nsscache Source ``coreweave``: a thin adapter over
config -> snapshot -> policy -> render.

nsscache builds a fresh Source for every map, so the process state lives
here, in ``_CACHE``: the snapshot (Users and Groups, listed once) and the Run
(the decided Directory, or the error that prevented it) for the life of the
process, so that ``nsscache update`` with four maps lists each endpoint once
and every map is cut from the same data. A failure is cached too: later maps
of the same run fail the same way instead of listing again.

Every map of the process names one run id (marker.py), also when map
sections carry their own coreweave_* options. A run is recorded (state file,
metrics, the summary line) when the process ends (``finish``, run at exit),
because only then is it known which maps nsscache actually wrote: on a full
update nsscache calls ``GetModifyTimestamp()`` on a map it was handed once it
has committed it to disk (``FullUpdateFromMap``). nsscache never merges into
a cache here: asked for changes ``since`` a modify timestamp (one an earlier
source left), the source makes it fall back to a full rewrite.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import Dict, List, Tuple, Union

from nss_cache import error
from nss_cache.sources import source

from . import config as config_mod
from . import marker, policy, redact, render, report, scim, snapshot, state
from .errors import ConfigError, CoreWeaveError, FetchError, GuardError, InternalError, ListingError

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
    outcome: Union[policy.Directory, CoreWeaveError]
    report: report.RunReport  # as decided (its run id heads every cache); finish() adds what nsscache wrote
    record: bool = False  # only runs that hand maps to nsscache are recorded (not Verify)
    served: List[str] = field(default_factory=list)  # maps handed to nsscache
    written: List[str] = field(default_factory=list)  # maps nsscache committed
    finished: bool = False


# ("snapshot", server, attributes, allow-list) -> Snapshot or its error; ("run", Config) -> Run;
# ("run id",) -> the process's run id.
_CACHE: Dict[Tuple, Union[snapshot.Snapshot, CoreWeaveError, Run, str]] = {}


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
    except Exception as e:  # a bug of ours: every map fails the same way, and the run is recorded
        log.exception("coreweave: internal error deciding the run")
        outcome = InternalError(type(e).__name__)
    decided = outcome if isinstance(outcome, policy.Directory) else None
    run_id = _CACHE.setdefault(("run id",), marker.new_run(started))
    assert isinstance(run_id, str)
    run_report = report.RunReport(
        started=started,
        duration=round(time.monotonic() - start, 3),
        run=run_id,
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
    return Run(config, outcome, run_report)


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
    # Policy builds tens of thousands of small objects and no reference cycles: the
    # cyclic collector would only keep walking the snapshot (as while listing, scim.py).
    collecting = gc.isenabled()
    gc.disable()
    try:
        decided = policy.decide(snap, config)
    finally:
        if collecting:
            gc.enable()
    log_directory(config, decided)
    guard(config, decided, accept_shrink=os.environ.get(policy.ACCEPT_SHRINK_ENV) == "1")
    return decided


def finish() -> None:
    """Record every run of this process that is to be recorded and is not yet:
    what nsscache wrote, in the state file and the metrics file, and the
    summary line; one record per state scope. Runs at exit;
    ``nsscache-coreweave update`` calls it itself."""
    scopes: Dict[Tuple[str, str], List[Run]] = {}
    for run in [r for r in _CACHE.values() if isinstance(r, Run) and r.record and not r.finished]:
        run.finished = True
        scopes.setdefault((run.config.state_dir, state_scope(run.config)), []).append(run)
    for runs in scopes.values():
        _record(runs)


def _record(runs: List[Run]) -> None:
    """One scope's record: its maps may come from several runs (map sections
    with their own options), all of this process."""
    config, done = runs[0].config, _outcome(runs)
    log.log(logging.INFO if done.outcome == "ok" else logging.ERROR, "coreweave: %s", report.summary(done))
    try:
        entry = report.record(config.state_dir, state_scope(config), done)
    except (OSError, ValueError, TypeError) as e:
        log.warning(
            "coreweave: cannot record this run in %s (%s): the shrink guard will have nothing "
            "to compare with; set coreweave_state_dir", config.state_dir, getattr(e, "strerror", None) or e,
        )
        entry = {}
    if config.metrics_file:
        try:
            report.write_metrics(config.metrics_file, done, entry)
        except OSError as e:
            log.warning("coreweave: cannot write %s: %s", config.metrics_file, e.strerror)


def _outcome(runs: List[Run]) -> report.RunReport:
    """The scope's report: ok only when nsscache wrote every map it was handed
    and no cache this package wrote before is left from an earlier run."""
    first = runs[0]
    served = [m for r in runs for m in r.served]
    written = tuple(m for r in runs for m in r.served if m in r.written)
    if first.report.outcome != "decided":
        return first.report
    earlier = state.entry(first.config.state_dir, state_scope(first.config)).get("caches")
    left = [m for m in (earlier if isinstance(earlier, dict) else {}) if m not in served]
    not_written = tuple(m for m in served if m not in written) + tuple(left)
    done = replace(first.report, outcome="ok" if served and not not_written else "incomplete",
                   maps_written=written, maps_not_written=not_written)
    if done.outcome == "ok":
        return done
    return replace(done, error_kind="NotWritten", error=_not_written_text(served, not_written, left))


def _not_written_text(served: List[str], not_written: Tuple[str, ...], left: List[str]) -> str:
    if not served:
        return "no map was handed to nsscache (see its log)"
    parts = []
    if [m for m in not_written if m not in left]:
        parts.append(f"nsscache did not write {', '.join(m for m in not_written if m not in left)} (see its log)")
    if left:
        parts.append(f"{', '.join(left)} still from an earlier run (nsscache was asked for some maps only)")
    return "; ".join(parts) + (": the keys command serves no key until one run writes passwd and sshkey together")


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
    """Stands in for a map's GetModifyTimestamp on a full update: nsscache
    calls it only once the map is committed (its files written and renamed
    into place)."""

    def __init__(self, run: Run, map_name: str, original):
        self.run, self.map_name, self.original = run, map_name, original

    def __call__(self):
        if self.map_name not in self.run.written:
            self.run.written.append(self.map_name)
        return self.original()


class _NoMerge:
    """What the source hands nsscache when it asks for changes since a modify
    timestamp (a timestamp-<map>-modify file another source left): nsscache
    would merge it into the old cache, and its merge only adds, so removed
    users and keys would stay. The first thing nsscache does with it is len();
    EmptyMap there, before it has read the old cache, makes it fall back to a
    full rewrite ("Local cache is invalid, faulting to a full sync")."""

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

    def GetPasswdMap(self, since=None):
        return self._map("passwd", since)

    def GetGroupMap(self, since=None):
        return self._map("group", since)

    def GetShadowMap(self, since=None):
        return self._map("shadow", since)

    def GetSshkeyMap(self, since=None):
        return self._map("sshkey", since)

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

    def _map(self, map_name: str, since=None):
        # Never SetModifyTimestamp(): without a modify timestamp every run is
        # a full write, so removals land at once and nsscache never merges.
        try:
            run = current_run(self.conf)
            if isinstance(run.outcome, CoreWeaveError):
                raise run.outcome
            if since is not None:  # nsscache means to merge: make it rewrite instead
                return _NoMerge(map_name)
            nss_map = render.render(map_name, run.outcome, run.report.run)
        except FetchError as e:
            # Skips the remaining maps: they stay mutually consistent.
            raise error.SourceUnavailable(f"coreweave: {e}") from None
        except (ConfigError, ListingError, GuardError) as e:
            raise error.InvalidMap(f"coreweave: {e}") from None
        except InternalError as e:
            raise error.InvalidMap(f"coreweave: internal error ({e.kind}); the {map_name} cache is kept") from None
        except Exception as e:  # a bug of ours must not become a traceback
            log.exception("coreweave: internal error building the %s map", map_name)
            raise error.InvalidMap(
                f"coreweave: internal error ({type(e).__name__}); the {map_name} cache is kept"
            ) from None
        nss_map.GetModifyTimestamp = _Receipt(run, map_name, nss_map.GetModifyTimestamp)
        if map_name not in run.served:
            run.served.append(map_name)
        return nss_map


def register() -> None:
    """Register the source with nsscache's factory (idempotent)."""
    from nss_cache.sources import source_factory

    source_factory.RegisterImplementation(CoreWeaveSource)
