"""``nsscache-coreweave publish``: list IAM once, decide as a node sync does
(policy, shrink guard, all or nothing), and write a signed bundle (bundle.py)
into ``coreweave_publish_dir`` for nodes in mirror mode (mirror.py).

Readers never see a mix of generations: a generation's directory is written
whole under a temporary name and renamed into place before ``manifest.json``
is replaced; ``coreweave_publish_keep`` older generations stay for nodes that
read the previous manifest a moment ago. One publish at a time (a lock file).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterator, Mapping, Optional, Tuple

from . import bundle, marker, policy, render, report, run, scim, shrink, sshsig, state
from .bundle import MANIFEST, SIGNATURE, FileEntry, Manifest
from .config import Config
from .errors import ConfigError, CoreWeaveError, PublishError
from .state import RunReport

__all__ = ["Change", "Result", "publish", "scope"]

log = logging.getLogger("nss_cache_coreweave")

LOCK = ".publish.lock"
GENERATIONS = "generations"


@dataclass(frozen=True)
class Change:
    """What a publish changes in one map, compared with the current generation."""

    map_name: str
    added: int  # lines (the marker line not counted)
    removed: int


@dataclass(frozen=True)
class Result:
    manifest: Manifest
    changes: Tuple[Change, ...]
    written: bool  # False for --dry-run
    pruned: Tuple[int, ...] = ()  # generations removed


def scope(config: Config) -> str:
    """The publisher's state scope (its own shrink-guard counts, apart from a node sync's)."""
    return "publish " + run.state_scope(config)


def publish(config: Config, *, dry_run: bool = False, accept_shrink: bool = False,
            stats: Optional[scim.Stats] = None, now: Optional[float] = None) -> Result:
    """List, decide, guard, then (unless ``dry_run``) write and sign the next
    generation, and record the run (state file, metrics file) as a node's
    runs are. :raises CoreWeaveError: nothing was written"""
    started, start = time.time(), time.monotonic()
    stats = stats or scim.Stats()
    try:
        result, decided = _publish(config, dry_run, accept_shrink, stats, started if now is None else now)
    except CoreWeaveError as e:
        busy = isinstance(e, PublishError) and e.busy  # the running publish records its own run
        if not dry_run and not busy and not isinstance(e, ConfigError):
            failed = run.report_of(e, run="", started=started, duration=round(time.monotonic() - start, 3),
                                   stats=stats)
            _record(config, _still_published(config, failed))
        raise
    if result.written:
        done = run.report_of(decided, run=result.manifest.run, started=started,
                             duration=round(time.monotonic() - start, 3), stats=stats)
        _record(config, replace(done, outcome="ok", generation=result.manifest.generation,
                                published=result.manifest.created))
    return result


def _publish(config: Config, dry_run: bool, accept_shrink: bool, stats: scim.Stats,
             now: float) -> Tuple[Result, policy.Directory]:
    directory = _publish_dir(config)
    key = None if dry_run else _private_key(config)
    with _locked(directory, dry_run):  # before listing: a publish that cannot run costs IAM nothing
        decided = run.fetch_and_decide(config, stats)
        shrink.enforce(policy.shrink_problem(decided, state.read(config.state_dir, scope(config)).accepted,
                                             config.max_shrink, config.allowed_groups, "publish"),
                       accept=accept_shrink)
        try:
            return _next_generation(config, directory, decided, key, now), decided
        except OSError as e:
            raise PublishError(directory, e.strerror or type(e).__name__) from None


def _next_generation(config: Config, directory: str, decided: policy.Directory, key, now: float) -> Result:
    """Write and sign the next generation (``key`` None: a dry run, nothing written)."""
    current = _current(directory)
    if key is not None:
        _clear_leftovers(directory, current)
    recorded = state.read(config.state_dir, scope(config)).last_run
    generation = max(current.generation + 1 if current else 1, _highest(directory) + 1,
                     (recorded.generation if recorded else 0) + 1, int(now))
    old = _maps_of(directory, current)
    maps = _rendered(config, decided, marker.new_run(now))
    changes = _changes(old, maps)
    if old and not any(c.added or c.removed for c in changes):
        maps = old  # the same files: nodes fetch the new manifest and nothing else
    manifest = _manifest(decided, generation, now, maps)
    if key is None:
        return Result(manifest, changes, written=False)
    _write(directory, manifest, maps, sshsig.sign(bundle.manifest_bytes(manifest), key))
    # Published: what follows only tidies up, and fails the publish no more.
    try:
        _fsync_dir(directory)
        pruned = _prune(directory, generation, config.publish.keep)
    except OSError as e:
        log.warning("coreweave: generation %d is published, but tidying %s failed: %s", generation, directory,
                    e.strerror or e)
        pruned = ()
    return Result(manifest, changes, written=True, pruned=pruned)


def _still_published(config: Config, failed: RunReport) -> RunReport:
    """A failed run's report naming the generation still published (the next
    publish numbers past it, also when the directory is lost)."""
    last = state.read(config.state_dir, scope(config)).last_run
    return replace(failed, generation=last.generation, published=last.published) if last else failed


def _publish_dir(config: Config) -> str:
    if config.mirror is not None:
        raise ConfigError("publish reads IAM: remove coreweave_mirror_url from the publisher's configuration")
    if not config.publish.directory:
        raise ConfigError("publish needs coreweave_publish_dir: the directory the bundle is written to")
    return config.publish.directory


def _private_key(config: Config):
    if not config.publish.key_file:
        raise ConfigError("publish needs coreweave_publish_key: the publisher's ed25519 private key "
                          "(ssh-keygen -t ed25519)")
    try:
        return sshsig.load_private_key(config.publish.key_file)
    except sshsig.KeyFileError as e:
        raise ConfigError(f"coreweave_publish_key: {e}") from None


@contextlib.contextmanager
def _locked(directory: str, dry_run: bool) -> Iterator[None]:
    """One publish at a time (a dry run reads only, and takes no lock). The
    directories it creates are 0755 whatever the umask: the web server reads them."""
    if dry_run:
        yield
        return
    try:
        for path in (directory, os.path.join(directory, GENERATIONS)):
            if not os.path.isdir(path):
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o755)
        lock = open(os.path.join(directory, LOCK), "a")
    except OSError as e:
        raise PublishError(directory, e.strerror or type(e).__name__) from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PublishError(directory, "locked", busy=True) from None
        yield


def _current(directory: str) -> Optional[Manifest]:
    """The published manifest; None for a new directory, or a manifest that is not one
    (published afresh, numbered past every generation present). :raises OSError: unreadable"""
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            return bundle.parse_manifest(f.read())
    except FileNotFoundError:
        return None
    except bundle.BundleError as e:
        log.warning("coreweave: %s is not a manifest (%s): publishing afresh", os.path.join(directory, MANIFEST), e)
        return None


def _generations(directory: str) -> Dict[int, str]:
    """The generation directories by number (their names exactly the number's digits)."""
    try:
        names = os.listdir(os.path.join(directory, GENERATIONS))
    except FileNotFoundError:  # a dry run before the first publish
        return {}
    return {int(n): n for n in names if n.isascii() and n.isdigit() and str(int(n)) == n}


def _highest(directory: str) -> int:
    return max(_generations(directory), default=0)


def _clear_leftovers(directory: str, current: Optional[Manifest]) -> None:
    """What a publish that died left (the lock is ours): temporary directories, and
    generations newer than the manifest, which no node ever read."""
    root = os.path.join(directory, GENERATIONS)
    newer = [n for g, n in _generations(directory).items() if current is not None and g > current.generation]
    for name in [n for n in os.listdir(root) if ".tmp" in n] + newer:
        log.warning("coreweave: removing %s, left by a publish that did not finish", os.path.join(root, name))
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _rendered(config: Config, decided: policy.Directory, run_id: str) -> Dict[str, bytes]:
    return {name: bundle.map_bytes(name, render.render(name, decided, run_id, config.shadow))
            for name in bundle.MAPS}


def _manifest(decided: policy.Directory, generation: int, now: float, maps: Mapping[str, bytes]) -> Manifest:
    files = {name: FileEntry(f"{bundle.generation_dir(generation)}/{name}", bundle.sha256(data), len(data))
             for name, data in maps.items()}
    run_id = marker.run_of(maps["passwd"].split(b"\n", 1)[0])
    assert run_id is not None
    return Manifest(generation, round(now, 3), run_id, len(decided.accounts), len(decided.groups),
                    sum(len(a.keys) for a in decided.accounts), files)


def _maps_of(directory: str, current: Optional[Manifest]) -> Dict[str, bytes]:
    """The current generation's maps as published ({} when there is none or a file is not as signed)."""
    if current is None:
        return {}
    maps = {}
    for name, entry in current.files.items():
        try:
            with open(os.path.join(directory, entry.path), "rb") as f:
                maps[name] = f.read()
        except OSError:
            return {}
        first = maps[name].split(b"\n", 1)[0]
        if bundle.sha256(maps[name]) != entry.sha256 or marker.run_of(first) != current.run:
            return {}
    return maps


def _changes(old: Mapping[str, bytes], maps: Mapping[str, bytes]) -> Tuple[Change, ...]:
    changes = []
    for name, data in maps.items():
        before, after = set(_entries(old.get(name, b""))), set(_entries(data))
        changes.append(Change(name, len(after - before), len(before - after)))
    return tuple(changes)


def _entries(data: bytes):
    return data.split(b"\n")[1:-1]  # without the marker line and the final newline


def _write(directory: str, manifest: Manifest, maps: Mapping[str, bytes], signature: bytes) -> None:
    """generations/<N> whole under a temporary name, renamed into place; then the latest manifest's copies."""
    final = os.path.join(directory, bundle.generation_dir(manifest.generation))
    # A name of its own: where the lock does not hold (NFS without locking), two publishes
    # never mix their files; the second rename then fails instead.
    temporary = tempfile.mkdtemp(prefix=f"{manifest.generation}.tmp.", dir=os.path.dirname(final))
    manifest_text = bundle.manifest_bytes(manifest)
    for name, data in {**maps, MANIFEST: manifest_text, SIGNATURE: signature}.items():
        state.write_atomically(os.path.join(temporary, name), data, 0o644)
    os.chmod(temporary, 0o755)
    os.rename(temporary, final)
    _fsync_dir(os.path.dirname(final))
    # The signature first: a reader of manifest.json then finds its signature in place (nodes
    # read the one in generations/<N>, which never changes).
    state.write_atomically(os.path.join(directory, SIGNATURE), signature, 0o644)
    state.write_atomically(os.path.join(directory, MANIFEST), manifest_text, 0o644,
                           mtime=_next_mtime(os.path.join(directory, MANIFEST)))


def _next_mtime(path: str) -> float:
    """A modification time a whole second past the old manifest's: nginx's ETag is
    mtime (in seconds) and size, so a manifest of the same size replaced within
    the same second would keep its ETag, and nodes would be told 304."""
    now = time.time()
    try:
        return max(now, os.stat(path).st_mtime + 1)
    except OSError:
        return now


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(directory: str, current: int, keep: int) -> Tuple[int, ...]:
    """Remove the generations older than the ``keep`` newest before ``current``
    (only real ones: _clear_leftovers removed what no manifest named)."""
    found = _generations(directory)
    older = sorted((g for g in found if g < current), reverse=True)
    removed = tuple(older[keep:])
    for generation in removed:
        shutil.rmtree(os.path.join(directory, GENERATIONS, found[generation]), ignore_errors=True)
    return removed


def _record(config: Config, done: RunReport) -> None:
    """The published counts are what the next publish's shrink guard compares
    with; the metrics file (if set) has the usual last-run and last-success gauges."""
    try:
        saved = report.record(config.state_dir, scope(config), done)
    except OSError as e:
        log.warning("coreweave: cannot record the publish in %s (%s): the next publish's shrink guard has "
                    "nothing to compare with", config.state_dir, e.strerror)
        return
    if config.metrics_file:
        try:
            report.write_metrics(config.metrics_file, done, saved)
        except OSError as e:
            log.warning("coreweave: cannot write %s: %s", config.metrics_file, e.strerror)
