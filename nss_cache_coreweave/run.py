"""The run: fetch -> decide -> guard -> record.

nsscache builds a fresh Source for every map (source.py), so the process
state lives here, in ``_CACHE``: the snapshot (Users and Groups, listed once)
and the Run (the decided Directory, or the error that prevented it) for the
life of the process, so that ``nsscache update`` with four maps lists each
endpoint once and every map is cut from the same data. A failure is cached
too: later maps of the same run fail the same way instead of listing again.

Every map of the process names one run id (marker.py), also when map
sections carry their own coreweave_* options. A run is recorded (state file,
metrics, the summary line) when the process ends (``finish``, run at exit),
because only then is it known which maps nsscache actually wrote: on a full
update nsscache calls ``GetModifyTimestamp()`` on a map it was handed once it
has committed it to disk (``FullUpdateFromMap``).

The operator's commands (cli.py) take the same steps: ``slurm-sync`` calls
``fetch_and_decide``, ``check`` and ``preview`` ``decide``, ``check`` asks
``shrink_problem``, and ``status`` reads what ``finish`` recorded under
``state_scope``.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Tuple, Union

from . import config as config_mod
from . import marker, mirror, policy, report, scim, shrink, snapshot, state
from .errors import CoreWeaveError, GuardError, InternalError
from .state import CacheRecord, RunReport

__all__ = [
    "Run", "current_run", "directory", "finish", "fetch_and_decide", "decide", "narrow", "report_of", "with_mirror",
    "scope_outcome", "shrink_problem", "state_scope",
]

log = logging.getLogger("nss_cache_coreweave")


@dataclass
class Run:
    """One run in this process: what every map is cut from, and what nsscache did with the maps."""

    config: config_mod.Config
    outcome: Union[policy.Directory, CoreWeaveError]
    report: RunReport  # as decided (its run id heads every cache); finish() adds what nsscache wrote
    accepted: Optional[mirror.Accepted] = None  # mirror mode: the bundle the Directory was read from
    record: bool = False  # only runs that hand maps to nsscache are recorded (not Verify)
    served: List[str] = field(default_factory=list)  # maps handed to nsscache
    written: List[str] = field(default_factory=list)  # maps nsscache committed
    finished: bool = False

    def directory(self) -> policy.Directory:
        """The decided Directory. :raises CoreWeaveError: the one that prevented it"""
        if isinstance(self.outcome, CoreWeaveError):
            raise self.outcome
        return self.outcome

    @property
    def shadow(self) -> config_mod.ShadowDefaults:
        """The shadow fields of every account: the configured ones, or in mirror mode the bundle's."""
        return self.config.shadow if self.accepted is None else self.accepted.published.shadow

    def hand_out(self, map_name: str, nss_map):
        """``nss_map`` as handed to nsscache, noting when nsscache has written it."""
        nss_map.GetModifyTimestamp = _Receipt(self, map_name, nss_map.GetModifyTimestamp)
        if map_name not in self.served:
            self.served.append(map_name)
        return nss_map


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
    return current_run(options, record=record).directory()


def _start(config: config_mod.Config) -> Run:
    started, start = time.time(), time.monotonic()
    stats = scim.Stats()
    outcome, accepted = _outcome(config, stats)
    run_id = _CACHE.setdefault(("run id",), marker.new_run(started))
    assert isinstance(run_id, str)
    duration = round(time.monotonic() - start, 3)
    decided = report_of(outcome, run=run_id, started=started, duration=duration, stats=stats)
    return Run(config, outcome, with_mirror(decided, config, accepted), accepted)


def _outcome(config: config_mod.Config, stats: scim.Stats) -> Tuple[Union[policy.Directory, CoreWeaveError],
                                                                   Optional[mirror.Accepted]]:
    """fetch -> decide -> guard (in mirror mode: the bundle -> the node's rules
    -> guard -> keep it); the error that stops it is the run's outcome, with no
    bundle (one the run refused, e.g. by the shrink guard, is not what the caches hold)."""
    accepted = None
    try:
        if config.mirror is None:
            decided = fetch_and_decide(config, stats)
        else:
            accepted = mirror.take(config, stats)
            decided = narrow(config, accepted)
        shrink.enforce(shrink_problem(config, decided), accept=shrink.accepted())
        if accepted is not None:
            _keep(config, accepted)
    except CoreWeaveError as e:
        return e, None
    except Exception as e:  # a bug of ours: every map fails the same way, and the run is recorded
        log.exception("coreweave: internal error deciding the run")
        return InternalError(type(e).__name__), None
    return decided, accepted


def _keep(config: config_mod.Config, accepted: mirror.Accepted) -> None:
    """Keep the accepted bundle; failing to only costs the next run a full fetch (and its rollback
    baseline), while failing the run would leave removed users on the node."""
    try:
        mirror.keep(config, accepted)
    except OSError as e:
        log.warning("coreweave: cannot keep the accepted bundle in %s (%s): the next run fetches it whole and "
                    "cannot tell a rollback; set coreweave_state_dir", mirror.store_dir(config), e.strerror or e)


def narrow(config: config_mod.Config, accepted: mirror.Accepted) -> policy.Directory:
    """A bundle's Directory under this node's rules, each drop logged."""
    decided = policy.narrow(accepted.published.directory, config)
    log_directory(config, decided)
    return decided


def with_mirror(report: RunReport, config: config_mod.Config, accepted: Optional[mirror.Accepted]) -> RunReport:
    """The report naming the mirror and the generation it served (mirror mode)."""
    if config.mirror is None:
        return report
    if accepted is None:
        return replace(report, mirror=config.mirror.url)
    return replace(report, mirror=config.mirror.url, generation=accepted.manifest.generation,
                   published=accepted.manifest.created)


def report_of(outcome: Union[policy.Directory, CoreWeaveError], *, run: str, started: float, duration: float,
              stats: scim.Stats) -> RunReport:
    """The report of a run as decided: what the Directory holds, or the error
    that prevented it (a GuardError refuses the run, any other error fails it)."""
    requests = {f"{endpoint}/{status}": n for (endpoint, status), n in sorted(stats.requests.items())}
    decided = RunReport(started=started, duration=duration, outcome="decided", run=run,
                        requests=requests, retries=stats.retries, bytes=stats.bytes, fetch=stats.fetch)
    if isinstance(outcome, CoreWeaveError):
        return replace(decided, outcome="refused" if isinstance(outcome, GuardError) else "failed",
                       error_kind=type(outcome).__name__, error=str(outcome))
    return replace(decided, users=len(outcome.accounts), groups=len(outcome.groups),
                   keys=sum(len(a.keys) for a in outcome.accounts), drops=count_drops(outcome.drops))


def count_drops(drops) -> Dict[str, int]:
    """Dropped entries by "kind/code", as the run record and the metrics count them."""
    return dict(sorted(Counter(f"{d.kind}/{d.code}" for d in drops).items()))


def fetch_and_decide(config: config_mod.Config, stats: Optional[scim.Stats] = None) -> policy.Directory:
    """The listing (once per process and allow-list, a failure too), the
    policy, and a log line per warning and dropped entry. :raises CoreWeaveError:"""
    decided = decide(config, _snapshot(config, stats or scim.Stats()))
    log_directory(config, decided)
    return decided


def _snapshot(config: config_mod.Config, stats: scim.Stats) -> snapshot.Snapshot:
    # The allow-list is part of the key: the snapshot keeps only its members.
    key = ("snapshot", config.server, config.users, config.groups, config.allowed_groups)
    if key not in _CACHE:
        try:
            _CACHE[key] = snapshot.take(config, stats=stats)
        except CoreWeaveError as e:
            _CACHE[key] = e
    found = _CACHE[key]
    if isinstance(found, CoreWeaveError):
        raise found
    assert isinstance(found, snapshot.Snapshot)
    return found


def decide(config: config_mod.Config, snap: snapshot.Snapshot) -> policy.Directory:
    """policy.decide, with the cyclic garbage collector paused: policy builds
    tens of thousands of small objects and no reference cycles, so the
    collector would only keep walking the snapshot (as while listing, scim.py)."""
    with scim.COLLECTOR_PAUSED:
        return policy.decide(snap, config)


def shrink_problem(config: config_mod.Config, decided: policy.Directory) -> Optional[GuardError]:
    """The shrink guard's refusal of ``decided`` against the counts of its
    scope's last accepted run (or of an empty result), or None."""
    accepted = state.read(config.state_dir, state_scope(config)).accepted
    return policy.shrink_problem(decided, accepted, config.max_shrink, config.allowed_groups)


def state_scope(config: config_mod.Config) -> str:
    """Counts are kept per directory (or mirror) and allow-list."""
    groups = "*" if config.allowed_groups is None else ",".join(config.allowed_groups)
    where = config.server.base_url if config.mirror is None else f"mirror {config.mirror.url}"
    return f"{where} groups={groups}"


def log_directory(config: config_mod.Config, decided: policy.Directory) -> None:
    """One line per warning and dropped entry (the summary follows the run)."""
    for warning in config.warnings:
        log.warning("coreweave: %s", warning)
    for name in decided.missing_groups:
        log.warning("coreweave: group %r listed in coreweave_groups does not exist in the directory", name)
    for warning in decided.warnings:
        log.warning("coreweave: %s", warning)
    for drop in decided.drops:
        log.log(logging.INFO if drop.expected else logging.WARNING, "coreweave: %s", drop)


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
    config, scope = runs[0].config, state_scope(runs[0].config)
    done = scope_outcome(runs, state.read(config.state_dir, scope).caches)
    log.log(logging.INFO if done.outcome == "ok" else logging.ERROR, "coreweave: %s", report.summary(done))
    try:
        saved = report.record(config.state_dir, scope, done)
    except (OSError, ValueError, TypeError) as e:
        log.warning(
            "coreweave: cannot record this run in %s (%s): the shrink guard will have nothing "
            "to compare with; set coreweave_state_dir", config.state_dir, getattr(e, "strerror", None) or e,
        )
        saved = state.ScopeRecord()
    if config.metrics_file:
        try:
            report.write_metrics(config.metrics_file, done, saved)
        except OSError as e:
            log.warning("coreweave: cannot write %s: %s", config.metrics_file, e.strerror)


def scope_outcome(runs: List[Run], earlier: Mapping[str, CacheRecord]) -> RunReport:
    """The scope's report: ok only when nsscache wrote every map it was handed
    and no cache this package wrote before (``earlier``) is left from an
    earlier run."""
    first = runs[0]
    if first.report.outcome != "decided":
        return first.report
    served = [m for r in runs for m in r.served]
    written = tuple(m for r in runs for m in r.served if m in r.written)
    left = [m for m in earlier if m not in served]
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
