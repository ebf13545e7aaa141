"""What the package remembers between runs, per scope (directory and
allow-list): the counts of the last accepted run (for the shrink guard) and
the record of the last run (for ``status`` and the metrics file).

One JSON file in ``coreweave_state_dir``, ``coreweave-state.json``,
written atomically (temporary file, fsync, rename), readable by root only.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

__all__ = ["STATE_FILE", "Counts", "load", "save", "accept", "entry", "update"]

STATE_FILE = "coreweave-state.json"


@dataclass(frozen=True)
class Counts:
    users: int
    groups: int
    time: float  # when they were accepted (time.time())


def load(state_dir: str, scope: str) -> Optional[Counts]:
    """The counts last accepted for ``scope``, or None when there are none
    (first run, or an unreadable file: the guard then has nothing to compare with)."""
    try:
        saved = entry(state_dir, scope)
        return Counts(int(saved["users"]), int(saved["groups"]), float(saved["time"]))
    except (KeyError, TypeError, ValueError):
        return None


def save(state_dir: str, scope: str, users: int, groups: int) -> None:
    """Record accepted counts. :raises OSError: when the directory is not writable."""
    update(state_dir, scope, lambda e: accept(e, users, groups))


def accept(entry: dict, users: int, groups: int) -> None:
    """Put accepted counts in a scope's entry (see load)."""
    entry.update(users=users, groups=groups, time=time.time())


def entry(state_dir: str, scope: str) -> dict:
    """Everything recorded for ``scope`` ({} when nothing is)."""
    scopes = _read(state_dir).get("scopes")
    found = scopes.get(scope) if isinstance(scopes, dict) else None
    return found if isinstance(found, dict) else {}


def update(state_dir: str, scope: str, change: Callable[[dict], None]) -> None:
    """Apply ``change`` to the scope's entry and write the file atomically.
    :raises OSError:"""
    data = _read(state_dir)
    if not isinstance(data.get("scopes"), dict):
        data = {"scopes": {}}
    scoped = data["scopes"].get(scope)
    if not isinstance(scoped, dict):
        scoped = data["scopes"][scope] = {}
    change(scoped)
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    write_atomically(os.path.join(state_dir, STATE_FILE), json.dumps(data, indent=1, sort_keys=True), 0o600)


def write_atomically(path: str, text: str, mode: int) -> None:
    """Readers see the old file or the new one, never a part."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read(state_dir: str) -> dict:
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
