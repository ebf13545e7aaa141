"""What the package remembers between runs: the counts of the last accepted
run, for the shrink guard. One JSON file in ``coreweave_state_dir``, written
atomically, readable by root only."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

__all__ = ["STATE_FILE", "Counts", "load", "save"]

STATE_FILE = "coreweave-state.json"


@dataclass(frozen=True)
class Counts:
    users: int
    groups: int
    time: float  # when they were accepted (time.time())


def load(state_dir: str, scope: str) -> Optional[Counts]:
    """The counts last saved for ``scope`` (base URL and allowed groups), or
    None when there are none (first run, or an unreadable file: the guard
    then has nothing to compare with and says so)."""
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as f:
            entry = json.load(f)["scopes"][scope]
        return Counts(int(entry["users"]), int(entry["groups"]), float(entry["time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save(state_dir: str, scope: str, users: int, groups: int) -> None:
    """Record accepted counts. :raises OSError: when the directory is not writable."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data.get("scopes"), dict):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        data = {"scopes": {}}
    data["scopes"][scope] = {"users": users, "groups": groups, "time": time.time()}
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".coreweave-state-", dir=state_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
