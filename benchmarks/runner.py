"""The benchmark runner (issue 5, item 3): ``python -m benchmarks`` / ``make bench``.

For each organisation size N (default 10,000 and 100,000; 1,000,000 with
``--million``) it starts the benchmark SCIM server (:mod:`benchmarks.server`, its own
process, capability ``plain``: a server that supports neither ``filter`` nor
``attributes``) with a synthetic organisation (:mod:`benchmarks.org`: N users, G
groups, M = ``--members-share`` x N members of the five configured groups), writes an
``nsscache.conf`` (no ``coreweave_fetch``: the package's default) into a temporary
directory and then, after one warm-up of each, alternates R times:

* **sync**: the real ``nsscache -c CONF update --full`` (passwd, group, shadow,
  sshkey; stdin a pty so nsscache logs to stderr, which goes to a file);
* **floor**: :mod:`benchmarks.floor` in a fresh interpreter, fetching the whole
  listing's URLs (Users and Groups pages, no filter, no attributes, as a
  ``coreweave_fetch = full`` run requests them), computed from N, G, the page size and
  the pagination by :func:`benchmarks.server.listing_targets` (not recorded from the
  sync, which may ask for less), with one ``requests.Session`` and ``json.loads`` of
  every page, nothing else. The fetch-less part checks the computed URLs against a
  ``coreweave_fetch = full`` run's requests.

Both run under :mod:`benchmarks.launch`, which measures the process alone: wall time
(including interpreter start-up), CPU time (user + sys, ``os.wait4``) and peak RSS
(``ru_maxrss``). The server's counters give requests, body bytes and connections per
run; the caches' line counts are compared with what the organisation says the policy
must accept. Medians over R runs are reported, with the sync/floor ratio per N, the
growth from one N to the next, and the issue's targets marked pass/fail; the report is
printed and written to ``docs/benchmarks.md`` (``--output``).

At ``--many-nodes-at`` users (100,000; on unless ``--no-many-nodes``), with the same
server, the many-nodes part of issue 15 follows (:mod:`benchmarks.many`): publish, a
node's refresh from a real nginx serving the bundle, an idle refresh, and a fleet of
``--fleet-nodes`` nodes.

At ``--fetch-less-at`` users (100,000; and 1,000,000 with ``--million``; on unless
``--no-fetch-less``), last, the same server switched to the ``filtering`` capability,
issue 16's part follows (:mod:`benchmarks.fetchless`): the sync with
``coreweave_fetch = auto`` (members by id, attributes projected) against the floor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from . import fetchless, fetchless_report, many_report, report
from . import many as many_mod
from .common import (
    HERE,
    LARGE_N,
    MAPS,
    REPO,
    TOKEN,
    BenchError,
    Run,
    child_env,
    launch,
    line_counts,
    listing_requests,
    tail,
    write_conf,
)
from .org import CONFIGURED_GROUPS
from .server import listing_targets

__all__ = ["Settings", "Run", "SizeResult", "BenchResult", "run", "main", "MAPS"]

DEFAULT_SIZES = (10_000, 100_000)
MILLION = 1_000_000
READY_TIMEOUT = 900.0  # seconds: the first run computes the RSA key pool
MANY_AT = 100_000  # users: where the many-nodes part runs (issue 15)
FETCH_LESS_AT = 100_000  # users: where the fetch-less part runs (issue 16), and at MILLION with --million
FLEET_NODES = 200


@dataclass
class Settings:
    sizes: List[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    groups: int = 2_000
    members_share: float = 0.10
    members: Optional[int] = None  # absolute M for every N (overrides members_share)
    reps: int = 5
    large_reps: int = 3  # for N >= 1,000,000
    warmup: int = 1
    page_size: int = 1_000
    pagination: str = "index"
    seed: int = 1
    invalid: Optional[int] = None
    key_pool: Optional[int] = None
    gzip: bool = False
    bin_dir: Path = REPO / ".venv" / "bin"
    cache_dir: Optional[Path] = None
    work_dir: Optional[Path] = None
    keep: bool = False
    profile: bool = False
    quiet: bool = False
    many_nodes: bool = True  # the many-nodes part (issue 15) at many_at users
    many_at: int = MANY_AT
    fleet_nodes: int = FLEET_NODES
    fleet_workers: Optional[int] = None  # default: 2 x the usable cores
    fetch_less: bool = True  # the fetch-less part (issue 16) at fetch_less_sizes
    fetch_less_sizes: List[int] = field(default_factory=lambda: [FETCH_LESS_AT])

    def members_for(self, users: int) -> int:
        if self.members is not None:
            return min(self.members, users)
        return max(1, min(users, round(users * self.members_share)))


@dataclass
class SizeResult:
    users: int
    groups: int
    members: int
    page_size: int
    org: dict  # the server's summary: expected lines, invalid records, key pool ...
    sync: List[Run]
    floor: List[Run]
    targets: List[str]  # what the warm-up sync requested, in order
    accept_encoding: Dict[str, int]
    page_bytes_per_user: float
    server_render_seconds: float
    profile: Optional[str] = None
    listing_targets: List[str] = field(default_factory=list)  # the whole listing's, which the floor fetches
    full_listing_requests: bool = False  # the sync's listing requests are the whole listing's (attributes aside)

    @property
    def expected_requests(self) -> int:
        return math.ceil(self.users / self.page_size) + math.ceil(self.groups / self.page_size)

    @staticmethod
    def median(runs: List[Run], attribute: str) -> float:
        return statistics.median(getattr(r, attribute) for r in runs)


@dataclass
class BenchResult:
    settings: Settings
    sizes: List[SizeResult]
    machine: Dict[str, str]
    command: str
    started: str
    seconds: float
    many: Optional[many_mod.ManyResult] = None  # issue 15's many-nodes part
    fetch_less: List[fetchless.FetchLessResult] = field(default_factory=list)  # issue 16's part, per N


# --- measuring ------------------------------------------------------------------------


class _Server:
    """The benchmark SCIM server as a separate process."""

    def __init__(self, settings: Settings, users: int, workdir: Path, token_file: Path):
        self.ready = workdir / "server.ready.json"
        self.log = workdir / "server.log"
        args = [
            sys.executable, "-m", "benchmarks.server",
            "--users", str(users), "--groups", str(settings.groups), "--members", str(settings.members_for(users)),
            "--seed", str(settings.seed), "--token-file", str(token_file), "--ready-file", str(self.ready),
            "--prerender", str(settings.page_size), "--pagination", settings.pagination, "--capability", "plain",
        ]
        if settings.invalid is not None:
            args += ["--invalid", str(settings.invalid)]
        if settings.key_pool:
            args += ["--key-pool", str(settings.key_pool)]
        if settings.cache_dir:
            args += ["--cache-dir", str(settings.cache_dir)]
        if settings.gzip:
            args.append("--gzip")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise BenchError(f"the benchmark server exited ({self.proc.returncode}):\n{tail(self.log)}")
            if time.monotonic() > deadline:
                self.close()
                raise BenchError(f"the benchmark server did not start within {READY_TIMEOUT:g} s")
            time.sleep(0.05)
        info = json.loads(self.ready.read_text())
        self.base_url: str = info["base_url"]
        self.origin = f"http://127.0.0.1:{info['port']}"
        self.summary: dict = info["summary"]

    def stats(self, reset: bool = True) -> dict:
        url = f"{self.origin}/_bench/stats" + ("?reset=1" if reset else "")
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())

    def capability(self, name: str) -> None:
        """Switch the server to ``plain`` or ``filtering`` (filtering builds its id index first: seconds at 1M)."""
        url = f"{self.origin}/_bench/capability?set={name}"
        with urllib.request.urlopen(url, timeout=READY_TIMEOUT) as response:
            if json.loads(response.read()).get("capability") != name:
                raise BenchError(f"the benchmark server did not switch to {name}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()



class _Size:
    """Everything for one N: server, node directory, measured runs."""

    def __init__(self, settings: Settings, users: int, workdir: Path, say):
        self.settings, self.users, self.workdir, self.say = settings, users, workdir, say
        self.node = workdir / "node"
        self.node.mkdir(parents=True)
        self.server = _Server(settings, users, workdir, self._token_file())
        self.conf = write_conf(self.node, self.server.base_url, settings, users)
        self.bin = settings.bin_dir
        self.python = str(self.bin / "python")
        self.env = child_env()
        self.floor_env = dict(self.env, BENCH_TOKEN=TOKEN)
        self.prefix = urlsplit(self.server.base_url).path
        self.listing = listing_targets(self.prefix, {"Users": users, "Groups": settings.groups}, settings.page_size,
                                       settings.pagination)
        self.urls_file = workdir / "floor-urls.json"
        self.urls_file.write_text(json.dumps([self.server.origin + t for t in self.listing]))
        self.first_targets: Dict[Path, List[str]] = {}  # per node: what its first sync requested, in order
        self.accept_encoding: Optional[Dict[str, int]] = None  # the table's first sync's
        self.users_bytes = 0
        self.counter = 0
        self.last_log: Optional[Path] = None  # the last measured process's output

    @property
    def targets(self) -> Optional[List[str]]:
        """What the first sync of the table's node requested."""
        return self.first_targets.get(self.node)

    def _token_file(self) -> Path:
        path = self.workdir / "server-token"
        path.write_text(TOKEN + "\n")
        path.chmod(0o600)
        return path

    def _log(self, what: str) -> Path:
        self.counter += 1
        self.last_log = self.workdir / f"{self.counter:02d}-{what}.log"
        return self.last_log

    def _measured(self, what: str, command: List[str], env: Dict[str, str], cwd: Path) -> Tuple[dict, dict]:
        """One process under launch.py and what the server saw of it: (measurement, server stats).
        :raises BenchError: it exited non-zero"""
        self.server.stats(reset=True)
        log = self._log(what)
        m = launch(self.python, command, log, env, cwd)
        stats = self.server.stats(reset=True)
        if m["exit"] != 0:
            raise BenchError(f"{what} exited {m['exit']} at N={self.users}; log {log}:\n{tail(log)}")
        return m, stats

    @staticmethod
    def _run(m: dict, stats: dict, **more) -> Run:
        return Run(wall=m["wall"], user=m["user"], sys=m["sys"], maxrss_kb=m["maxrss_kb"], exit=m["exit"],
                   requests=stats["requests"], body_bytes=stats["body_bytes"], connections=stats["connections"],
                   **more)

    def sync(self, node: Optional[Path] = None) -> Run:
        """One measured ``nsscache update --full`` of ``node`` (default: the table's node, its conf inside)."""
        node = node or self.node
        m, stats = self._measured("sync", [str(self.bin / "nsscache"), "-c", str(node / "nsscache.conf"), "update",
                                           "--full"], self.env, node)
        if node not in self.first_targets:
            self.first_targets[node] = stats["targets"]
        if node == self.node and self.accept_encoding is None:
            self.accept_encoding = stats["accept_encodings"]
            self.users_bytes = stats["bytes_by_endpoint"].get("Users", 0)
        return self._run(
            m, stats, lines=line_counts(node / "cache"),
            # In any order: a member-only fetch has two batches on the wire at once (memberfetch.IN_FLIGHT).
            targets_match=sorted(stats["targets"]) == sorted(self.first_targets[node]),
            fetch=str(many_mod.node_record(node).get("fetch", "")),
        )

    def floor(self) -> Run:
        """One measured floor: the whole listing's pages (self.listing) downloaded and parsed."""
        m, stats = self._measured("floor", [self.python, str(HERE / "floor.py"), str(self.urls_file)],
                                  self.floor_env, self.node)
        return self._run(m, stats, targets_match=stats["targets"] == self.listing)

    def lower_bound(self, node: Path, urls_file: Path, cache_dir: Path, sync_targets: List[str]) -> Run:
        """One measured lower bound (benchmarks/replay.py): a sync's requests, then its caches handed to
        the stock nsscache as they are; ``targets_match``: the requests were ``sync_targets``."""
        command = [self.python, str(HERE / "replay.py"), str(urls_file), str(cache_dir), str(node / "token"),
                   "-c", str(node / "nsscache.conf"), "update", "--full"]
        m, stats = self._measured("lower-bound", command, dict(self.env, NSS_CACHE_COREWEAVE_DISABLE_HOOK="1"), node)
        return self._run(m, stats, lines=line_counts(node / "cache"),
                         targets_match=sorted(stats["targets"]) == sorted(sync_targets))

    def lists_whole(self, targets: List[str]) -> bool:
        """Whether ``targets`` hold exactly the whole listing's requests (attributes aside; discovery apart)."""
        return listing_requests(targets, self.prefix) == listing_requests(self.listing, self.prefix)

    def profile(self) -> str:
        """One more sync under cProfile; the top functions as text."""
        import io
        import pstats

        out = self.workdir / "sync.prof"
        m, _ = self._measured("profile", [self.python, "-m", "cProfile", "-o", str(out), str(self.bin / "nsscache"),
                                          "-c", str(self.conf), "update", "--full"], self.env, self.node)
        text = io.StringIO()
        stats = pstats.Stats(str(out), stream=text)
        stats.strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        body = "\n".join(line for line in text.getvalue().splitlines()
                         if line.strip() and not line.lstrip().startswith(str(out)[:20]) and "sync.prof" not in line)
        where = f"; {out}" if self.settings.keep else ""
        return (f"cProfile of one sync at N={self.users:,} (wall {m['wall']:.2f} s, CPU {m['user'] + m['sys']:.2f} s "
                f"under the profiler{where}):\n{body}")

    def measure(self) -> SizeResult:
        s = self.settings
        for _ in range(max(1, s.warmup)):
            self.sync()  # the first sync's targets: every later one must request the same
            self.floor()
        syncs, floors = [], []
        reps = s.large_reps if self.users >= LARGE_N else s.reps
        for rep in range(reps):
            syncs.append(self.sync())
            floors.append(self.floor())
            self.say(f"  N={self.users:,} rep {rep + 1}/{reps}: sync {syncs[-1].wall:.2f} s "
                     f"(CPU {syncs[-1].cpu:.2f} s, {syncs[-1].maxrss_kb / 1024:.0f} MiB), "
                     f"floor {floors[-1].wall:.2f} s (CPU {floors[-1].cpu:.2f} s, "
                     f"{floors[-1].maxrss_kb / 1024:.0f} MiB)")
        profile = self.profile() if s.profile else None
        stats = self.server.stats(reset=False)
        return SizeResult(
            users=self.users, groups=s.groups, members=s.members_for(self.users), page_size=s.page_size,
            org=self.server.summary, sync=syncs, floor=floors, targets=list(self.targets),
            accept_encoding=self.accept_encoding or {},
            page_bytes_per_user=self.users_bytes / self.users,
            server_render_seconds=stats.get("render_seconds", 0.0), profile=profile,
            listing_targets=list(self.listing), full_listing_requests=self.lists_whole(self.targets or []),
        )

    def close(self) -> None:
        self.server.close()


def run(settings: Settings, say=print) -> BenchResult:
    """Measure every size in ``settings``; nothing is written."""
    started = time.time()
    nsscache = settings.bin_dir / "nsscache"
    if not nsscache.exists():
        raise BenchError(f"{nsscache} does not exist: run `make install` (or pass --bin-dir)")
    machine = machine_description(settings.bin_dir)
    say(report.machine_line(machine))
    results, many, fetch_less = [], None, []
    base = Path(tempfile.mkdtemp(prefix="nss-bench-", dir=settings.work_dir))
    try:
        for users in settings.sizes:
            found, many_here, less = _measure_size(settings, users, base / f"n{users}", say)
            results.append(found)
            many = many_here or many
            fetch_less += [less] if less else []
    finally:
        if settings.keep:
            say(f"work files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    machine["load_after"] = _loadavg()
    after = machine_description(settings.bin_dir)
    if after["installed_files"] != machine["installed_files"]:
        before, now = json.loads(machine["installed_files"]), json.loads(after["installed_files"])
        changed = sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))
        machine["installed"] = (f"WARNING: the installed package changed during the run ({', '.join(changed)}; someone "
                                "ran `make install`?): the figures may mix two versions; rerun")
        machine["installed_matches"] = "no"
    return BenchResult(settings=settings, sizes=results, machine=machine, command="", started=time.strftime(
        "%Y-%m-%d %H:%M:%S %Z", time.localtime(started)), seconds=time.time() - started, many=many,
        fetch_less=fetch_less)


def fleet_workers(settings: Settings) -> int:
    if settings.fleet_workers:
        return settings.fleet_workers
    try:
        return 2 * len(os.sched_getaffinity(0))
    except AttributeError:
        return 2 * (os.cpu_count() or 1)


def _measure_size(settings: Settings, users: int, workdir: Path, say) -> Tuple[
        SizeResult, Optional[many_mod.ManyResult], Optional[fetchless.FetchLessResult]]:
    """One N: the syncs and floors, then (at ``many_at`` users) the many-nodes part and (at
    ``fetch_less_sizes``) the fetch-less part, with the same server."""
    say(f"N={users:,}: {settings.groups:,} groups, {settings.members_for(users):,} members of the "
        f"{len(CONFIGURED_GROUPS)} configured groups; starting the server ...")
    size = _Size(settings, users, workdir, say)
    many = less = None
    try:
        found = size.measure()
        if found.profile:
            say(found.profile)
        if settings.many_nodes and users == settings.many_at:
            workers = fleet_workers(settings)
            say(f"N={users:,}: many nodes: a publisher, one nginx, a node in mirror mode, a fleet of "
                f"{settings.fleet_nodes} nodes ({workers} at a time) ...")
            many = many_mod.measure(size, found.expected_requests, settings.reps, settings.fleet_nodes, workers,
                                    say, keep=settings.keep)
        if settings.fetch_less and users in settings.fetch_less_sizes:
            say(f"N={users:,}: fetching less: the server filters and projects; coreweave_fetch = auto against "
                "the floor ...")
            less = fetchless.measure(size, found.expected_requests, say)
    finally:
        size.close()
    return found, many, less


# --- the machine -------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


_PROBE = r"""
import hashlib, json, pathlib, platform, sys
import nss_cache, nss_cache_coreweave
pkg = pathlib.Path(nss_cache_coreweave.__file__).parent
files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(pkg.glob("*.py"))}
print(json.dumps({"python": platform.python_version(), "implementation": platform.python_implementation(),
                  "nsscache": nss_cache.__version__, "package": nss_cache_coreweave.__version__,
                  "package_dir": str(pkg), "files": files}))
"""


def machine_description(bin_dir: Path) -> Dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal")), 0)
    os_name = next((line.split("=", 1)[1].strip().strip('"') for line in _read("/etc/os-release").splitlines()
                    if line.startswith("PRETTY_NAME=")), platform.system())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    # Not from the checkout: "-c" puts the working directory first on sys.path.
    probe = subprocess.run([str(bin_dir / "python"), "-c", _PROBE], capture_output=True, text=True, env=child_env(),
                           cwd=tempfile.gettempdir())
    if probe.returncode != 0:
        raise BenchError(f"cannot import nss_cache / nss_cache_coreweave with {bin_dir / 'python'}: "
                         f"{probe.stderr[-1500:]}")
    info = json.loads(probe.stdout)
    source = REPO / "nss_cache_coreweave"
    import hashlib

    tree = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(source.glob("*.py"))}
    differs = sorted(set(tree) ^ set(info["files"]) | {n for n in tree if info["files"].get(n) not in (None, tree[n])})
    commit = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", "nss_cache_coreweave", "_nss_cache_coreweave_hook.py", "setup.cfg",
                 "setup.py")
    nsscache_version = info["nsscache"]
    if nsscache_version == "0.48":
        nsscache_version = "0.49 (Debian's orig tarball via scripts/install-nsscache; its __version__ still says 0.48)"
    return {
        "cpu": cpu,
        "cores": f"{usable} usable (os.cpu_count() = {os.cpu_count()})",
        "ram": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, Linux {platform.release()} {platform.machine()}",
        "python": f"{info['implementation']} {info['python']} ({bin_dir / 'python'})",
        "nsscache": nsscache_version,
        "package": f"nss-cache-coreweave {info['package']}, git {commit}"
                   + (" with uncommitted changes to the package" if dirty else ""),
        "installed": (f"the installed copy ({info['package_dir']}) matches the working tree"
                      if not differs else
                      f"WARNING: the installed copy ({info['package_dir']}) differs from the working tree in "
                      f"{', '.join(differs)}: run `make install`"),
        "installed_matches": "yes" if not differs else "no",
        "installed_files": json.dumps(info["files"], sort_keys=True),
        "load_before": _loadavg(),
    }


# --- command line -------------------------------------------------------------------------


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated user counts N")
    p.add_argument("--million", action="store_true", help="also run N = 1,000,000")
    p.add_argument("--groups", type=int, default=2_000, help="groups G (flat)")
    p.add_argument("--members-share", type=float, default=0.10,
                   help="M, the distinct members of the 5 configured groups, as a share of N")
    p.add_argument("--members", type=int, default=None, help="M as an absolute number for every N")
    p.add_argument("--reps", type=int, default=5, help="measured runs of each of sync and floor per N (median)")
    p.add_argument("--large-reps", type=int, default=3, help="measured runs per N from 1,000,000 users on")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured sync+floor pairs first")
    p.add_argument("--page-size", type=int, default=1_000, help="coreweave_page_size")
    p.add_argument("--pagination", choices=("index", "cursor"), default="index", help="coreweave_pagination")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--invalid", type=int, default=None, help="invalid records (default 0.3%% of N)")
    p.add_argument("--key-pool", type=int, default=None, help="distinct SSH keys in the pool (default 384)")
    p.add_argument("--gzip", action="store_true", help="the server gzips pages for clients that accept it")
    p.add_argument("--bin-dir", type=Path, default=REPO / ".venv" / "bin",
                   help="where nsscache and the python with the installed package are")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="key pool cache (default ~/.cache/nss-cache-coreweave/benchmarks)")
    p.add_argument("--work-dir", type=Path, default=None, help="parent of the temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, caches, conf)")
    p.add_argument("--profile", action="store_true",
                   help="also run one sync per N under cProfile and print the top functions")
    p.add_argument("--no-many-nodes", action="store_true",
                   help="skip the many-nodes part (issue 15: publish, a node in mirror mode, a fleet)")
    p.add_argument("--many-nodes-at", type=int, default=MANY_AT,
                   help="the N (one of --sizes) at which the many-nodes part runs")
    p.add_argument("--fleet-nodes", type=_positive, default=FLEET_NODES, help="nodes in the simulated fleet")
    p.add_argument("--fleet-workers", type=int, default=None,
                   help="fleet nodes updating at a time (default: 2 x the usable cores)")
    p.add_argument("--no-fetch-less", action="store_true",
                   help="skip the fetch-less part (issue 16: members by id and projection on a filtering server)")
    p.add_argument("--fetch-less-at", type=int, default=FETCH_LESS_AT,
                   help="the N (one of --sizes) at which the fetch-less part runs (also at 1,000,000 with --million)")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md", help="the Markdown report")
    p.add_argument("--no-write", action="store_true", help="print the report only")
    p.add_argument("--json", type=Path, default=None, help="also write the raw measurements as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target of the issue is missed")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
    if args.million and MILLION not in sizes:
        sizes.append(MILLION)
    fetch_less_sizes = sorted({args.fetch_less_at} | ({MILLION} if args.million else set()))
    if args.reps < 1 or args.large_reps < 1:
        raise SystemExit("--reps and --large-reps must be at least 1")
    settings = Settings(
        sizes=sizes, groups=args.groups, members_share=args.members_share, members=args.members, reps=args.reps,
        large_reps=args.large_reps, warmup=args.warmup, page_size=args.page_size, pagination=args.pagination,
        seed=args.seed, invalid=args.invalid, key_pool=args.key_pool, gzip=args.gzip, bin_dir=args.bin_dir.absolute(),
        cache_dir=args.cache_dir, work_dir=args.work_dir, keep=args.keep, profile=args.profile,
        many_nodes=not args.no_many_nodes, many_at=args.many_nodes_at, fleet_nodes=args.fleet_nodes,
        fleet_workers=args.fleet_workers, fetch_less=not args.no_fetch_less, fetch_less_sizes=fetch_less_sizes,
    )
    try:
        result = run(settings, say=lambda text: print(text, flush=True))
    except BenchError as e:
        print(f"benchmarks: {e}", file=sys.stderr)
        return 2
    result.command = command_line(argv)
    print()
    print(report.console(result))
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report.markdown(result))
        print(f"\nwritten: {args.output}")
    if args.json:
        args.json.write_text(json.dumps(_as_json(result), indent=1, default=str))
    every = report.targets(result) + many_report.targets(result) + fetchless_report.targets(result)
    if args.strict and not all(t.passed for t in every if t.passed is not None):
        return 1
    return 0


def command_line(argv: List[str]) -> str:
    python = sys.executable
    try:
        python = os.path.relpath(python, Path.cwd())
    except ValueError:
        pass
    return " ".join(shlex.quote(x) for x in [python, "-m", "benchmarks", *argv])


def _as_json(result: BenchResult) -> dict:
    data = asdict(result)
    for size in data["sizes"]:
        size.pop("targets", None)
        size.pop("listing_targets", None)
    return data
