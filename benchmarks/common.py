"""What the runner (runner.py), the many-nodes part (many.py) and the fetch-less part
(fetchless.py) share: paths, the token, measuring one process under launch.py, a measured
run, a node's nsscache.conf, cache line counts, request targets compared."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import parse_qsl, urlsplit

from .org import CONFIGURED_GROUPS, SHELLS

__all__ = ["BenchError", "Run", "REPO", "HERE", "MAPS", "TOKEN", "LARGE_DEADLINE", "LARGE_N", "launch", "tail",
           "write_conf", "child_env", "line_counts", "listing_requests"]

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MAPS = ("passwd", "group", "shadow", "sshkey")
TOKEN = "bench-token-5d2e8c"


class BenchError(RuntimeError):
    """The benchmark could not be run as asked (a failing sync, a dead server ...)."""


@dataclass
class Run:
    """One measured process (sync or floor) and what the server saw."""

    wall: float
    user: float
    sys: float
    maxrss_kb: int
    exit: int
    requests: Dict[str, int]
    body_bytes: int
    connections: int
    lines: Dict[str, int] = field(default_factory=dict)
    targets_match: bool = True
    fetch: str = ""  # a sync's run record: which users it fetched ("members", "full")
    # A sync: its caches equal a full-listing run's (run marker aside); a lower bound: they are the caches it
    # replays, byte for byte. None: not compared.
    same_caches: Optional[bool] = None

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def listing_requests(self) -> int:
        return self.requests.get("Users", 0) + self.requests.get("Groups", 0)

    @property
    def other_requests(self) -> int:
        return self.requests.get("other", 0)


def launch(python: str, command: List[str], log: Path, env: Dict[str, str], cwd: Path) -> dict:
    """Run ``command`` under benchmarks/launch.py with a pty as stdin, in ``cwd``; its measurement."""
    result_file = log.with_suffix(".result.json")
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [python, "-S", str(HERE / "launch.py"), str(result_file), str(log), "--", *command],
            stdin=secondary, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd, timeout=3600,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    if done.returncode != 0:
        raise BenchError(f"launch.py failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(result_file.read_text())


def tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""



LARGE_DEADLINE = 1800  # seconds, coreweave_deadline from LARGE_N users on (the default 300 s is tight at 1M)
LARGE_N = 1_000_000


def write_conf(node: Path, base_url: str, settings, users: int = 0, fetch: Optional[str] = None) -> Path:
    """The node's nsscache.conf; ``coreweave_fetch`` only when ``fetch`` is given (else the package's default)."""
    for sub in ("cache", "state"):
        (node / sub).mkdir(parents=True, exist_ok=True)
    token = node / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    (node / "local-passwd").write_text("")
    (node / "local-group").write_text("")
    conf = node / "nsscache.conf"
    conf.write_text(
        "[DEFAULT]\n"
        "source = coreweave\n"
        "cache = files\n"
        f"maps = {', '.join(MAPS)}\n"
        f"timestamp_dir = {node / 'state'}\n"
        f"lockfile = {node / 'nsscache.lock'}\n"
        f"files_dir = {node / 'cache'}\n"
        "files_cache_filename_suffix = cache\n"
        f"coreweave_base_url = {base_url}\n"
        f"coreweave_token_file = {token}\n"
        f"coreweave_groups = {', '.join(name for name, _, _ in CONFIGURED_GROUPS)}\n"
        f"coreweave_state_dir = {node / 'state'}\n"
        f"coreweave_allowed_shells = {', '.join(SHELLS)}\n"
        f"coreweave_local_passwd = {node / 'local-passwd'}\n"
        f"coreweave_local_group = {node / 'local-group'}\n"
        "coreweave_max_shrink = 1\n"
        f"coreweave_page_size = {settings.page_size}\n"
        f"coreweave_pagination = {settings.pagination}\n"
        + (f"coreweave_deadline = {LARGE_DEADLINE}\n" if users >= LARGE_N else "")
        + (f"coreweave_fetch = {fetch}\n" if fetch else "")
    )
    return conf


def child_env() -> Dict[str, str]:
    scrub = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONPROFILEIMPORTTIME")
    return {k: v for k, v in os.environ.items() if not k.startswith("NSSCACHE_") and k not in scrub}


def line_counts(cache: Path) -> Dict[str, int]:
    """Entries per cache: its lines, less the run marker on the first."""
    counts = {}
    for name in MAPS:
        try:
            data = (cache / f"{name}.cache").read_bytes()
        except FileNotFoundError:
            counts[name] = 0
            continue
        counts[name] = data.count(b"\n") - data.startswith(b"nsscache-coreweave:")
    return counts


def listing_requests(targets: List[str], prefix: str) -> Counter:
    """The Users and Groups requests among ``targets``, each as (path, its parameters but ``attributes`` and
    ``excludedAttributes``, sorted): what a listing asked for, whatever it asked to leave out."""
    found: Counter = Counter()
    for target in targets:
        split = urlsplit(target)
        if split.path.rstrip("/") not in (f"{prefix}/Users", f"{prefix}/Groups"):
            continue
        params = tuple(sorted((k, v) for k, v in parse_qsl(split.query, keep_blank_values=True)
                              if k not in ("attributes", "excludedAttributes")))
        found[(split.path, params)] += 1
    return found

