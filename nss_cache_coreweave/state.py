"""What the package remembers between runs: one ``ScopeRecord`` per scope
(directory and allow-list) with the counts of the last accepted run (for the
shrink guard), the report of the last run, what nsscache last wrote into each
cache, when a run last succeeded and how many runs the shrink guard refused
(for ``status`` and the metrics file).

One JSON file in ``coreweave_state_dir``, ``coreweave-state.json``
(``{"scopes": {scope: record}}``), written atomically (temporary file, fsync,
rename), readable by root only. A record is read field by field: a missing or
malformed field reads as nothing recorded, never as a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple, Union

__all__ = ["STATE_FILE", "Counts", "RunReport", "CacheRecord", "ScopeRecord", "read", "write", "write_atomically"]

STATE_FILE = "coreweave-state.json"


@dataclass(frozen=True)
class Counts:
    """The counts of an accepted run: what the shrink guard compares with."""

    users: int
    groups: int
    time: float  # when they were accepted (time.time())


@dataclass(frozen=True)
class RunReport:
    """What one run did, as ``status``, the summary line and the metrics read it."""

    started: float  # time.time()
    duration: float  # seconds (listing and policy)
    outcome: str  # "ok" (nsscache wrote every map it asked for), "incomplete" (it did not write
    # maps_not_written), "failed", "refused" (a whole-run guard said no); "decided" until then
    run: str = ""  # the run id, named on the first line of every cache this run wrote
    error_kind: str = ""  # e.g. "FetchError"
    error: str = ""  # the message (never holds the token)
    users: int = 0  # accepted by policy (handed to nsscache)
    groups: int = 0
    keys: int = 0
    maps_written: Tuple[str, ...] = ()
    maps_not_written: Tuple[str, ...] = ()
    drops: Dict[str, int] = field(default_factory=dict)  # "kind/code" -> count
    requests: Dict[str, int] = field(default_factory=dict)  # "Users/2xx" -> count
    retries: int = 0
    bytes: int = 0
    mirror: str = ""  # mirror mode: the mirror's URL
    generation: int = 0  # mirror mode: the bundle's generation (0: none accepted)
    published: float = 0.0  # mirror mode: when that bundle was published (time.time())
    fetch: str = ""  # which users were fetched: "members" (by id) or "full" (every user); "": not listed

    @classmethod
    def from_dict(cls, data: object) -> Optional[RunReport]:
        """The report as the state file keeps it, or None when ``data`` is not one."""
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                started=float(data["started"]), duration=float(data.get("duration", 0.0)),
                outcome=str(data["outcome"]), run=str(data.get("run", "")),
                error_kind=str(data.get("error_kind", "")), error=str(data.get("error", "")),
                users=int(data.get("users", 0)), groups=int(data.get("groups", 0)), keys=int(data.get("keys", 0)),
                # A record of an earlier version of this package names no maps.
                maps_written=_names(data.get("maps_written")), maps_not_written=_names(data.get("maps_not_written")),
                drops=_counted(data.get("drops")), requests=_counted(data.get("requests")),
                retries=int(data.get("retries", 0)), bytes=int(data.get("bytes", 0)),
                mirror=str(data.get("mirror", "")), generation=int(data.get("generation", 0)),
                published=float(_number(data.get("published")) or 0.0), fetch=str(data.get("fetch", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError):
            return None

    def to_dict(self) -> dict:
        """The report as the state file keeps it (JSON: lists for tuples)."""
        data = {**asdict(self), "maps_written": list(self.maps_written),
                "maps_not_written": list(self.maps_not_written)}
        for name in ("mirror", "generation", "published", "fetch"):  # left out when unset
            if not data[name]:
                del data[name]
        return data


@dataclass(frozen=True)
class CacheRecord:
    """What nsscache last wrote into one cache: the run named on its first line, when, how many entries."""

    run: str
    time: float
    count: int  # users (passwd, shadow), groups (group) or keys (sshkey)


@dataclass(frozen=True)
class ScopeRecord:
    """Everything kept for one scope. The file keeps ``accepted`` as the
    record's own ``users``, ``groups`` and ``time``; a field at its default
    is left out."""

    accepted: Optional[Counts] = None  # the last accepted run's counts
    last_run: Optional[RunReport] = None
    caches: Dict[str, CacheRecord] = field(default_factory=dict)  # map name -> what nsscache last wrote
    last_success: Optional[float] = None  # when a run last wrote every map it was handed
    shrink_refusals: int = 0  # runs the shrink guard refused

    @classmethod
    def from_dict(cls, data: object) -> ScopeRecord:
        if not isinstance(data, dict):
            return cls()
        return cls(
            accepted=_counts(data),
            last_run=RunReport.from_dict(data.get("last_run")),
            caches=_caches(data.get("caches")),
            last_success=_number(data.get("last_success")),
            shrink_refusals=int(_number(data.get("shrink_refusals")) or 0),
        )

    def to_dict(self) -> dict:
        data: dict = {}
        if self.accepted is not None:
            data.update(asdict(self.accepted))
        if self.last_run is not None:
            data["last_run"] = self.last_run.to_dict()
        if self.caches:
            data["caches"] = {name: asdict(cache) for name, cache in self.caches.items()}
        if self.last_success is not None:
            data["last_success"] = self.last_success
        if self.shrink_refusals:
            data["shrink_refusals"] = self.shrink_refusals
        return data


def read(state_dir: str, scope: str) -> ScopeRecord:
    """The record of ``scope``; an empty one when there is none (first run, or
    an unreadable file: the guard then has nothing to compare with)."""
    scopes = _read(state_dir).get("scopes")
    return ScopeRecord.from_dict(scopes.get(scope) if isinstance(scopes, dict) else None)


def write(state_dir: str, scope: str, record: ScopeRecord) -> None:
    """Replace the record of ``scope``, keeping the other scopes and the fields
    this version does not know (a later version's), in one atomic write
    (creating ``state_dir``). :raises OSError:"""
    data = _read(state_dir)
    if not isinstance(data.get("scopes"), dict):
        data = {"scopes": {}}
    old = data["scopes"].get(scope)
    unknown = {k: v for k, v in old.items() if k not in _KNOWN_FIELDS} if isinstance(old, dict) else {}
    data["scopes"][scope] = {**unknown, **record.to_dict()}
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    write_atomically(os.path.join(state_dir, STATE_FILE), json.dumps(data, indent=1, sort_keys=True), 0o600)


# What ScopeRecord.to_dict may write (a field at its default is left out).
_KNOWN_FIELDS = frozenset({"users", "groups", "time", "last_run", "caches", "last_success", "shrink_refusals"})


def write_atomically(path: str, text: Union[str, bytes], mode: int, mtime: Optional[float] = None) -> None:
    """Readers see the old file or the new one, never a part; ``mtime`` sets
    the new file's modification time before it appears. :raises OSError:"""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read(state_dir: str) -> dict:
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _counts(data: dict) -> Optional[Counts]:
    try:
        return Counts(int(data["users"]), int(data["groups"]), float(data["time"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _caches(value: object) -> Dict[str, CacheRecord]:
    caches = {}
    for name, data in value.items() if isinstance(value, dict) else ():
        try:
            caches[str(name)] = CacheRecord(str(data["run"]), float(data["time"]), int(data["count"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            pass  # not a cache record: as if nsscache had not written it
    return caches


def _number(value: object) -> Optional[float]:
    """A finite number (JSON allows NaN and Infinity, which no count or time is), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _names(value: object) -> Tuple[str, ...]:
    return tuple(str(name) for name in value) if isinstance(value, list) else ()


def _counted(value: object) -> Dict[str, int]:
    return {str(key): int(n) for key, n in value.items()} if isinstance(value, dict) else {}
