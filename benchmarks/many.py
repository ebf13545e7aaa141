"""Many nodes (issue 15, item 4): one publisher, nodes in mirror mode, one nginx.

At one organisation size (the runner's 100,000 users by default), with the runner's
SCIM server still up, after the direct syncs and floors of that size:

* **publish**: the real ``nsscache-coreweave -c CONF publish`` (CONF = the sync's
  nsscache.conf plus ``coreweave_publish_dir`` and ``coreweave_publish_key``, an
  ed25519 key from ``ssh-keygen``) under launch.py: wall, CPU, peak RSS, and the SCIM
  server's requests and bytes;
* **unchanged**: the stock ``nsscache -c NODECONF update --full`` on a node in mirror
  mode (``coreweave_mirror_url`` = a real nginx serving the publish directory,
  tests/support/nginx.py) right after that publish: the listing did not change, so
  the new generation names the same maps and the node fetches the new manifest and
  its signature only; nginx's access log gives its requests and bytes;
* **refresh**: the same node with its kept bundle (<state_dir>/coreweave-mirror)
  removed first, so that it fetches manifest.json, the signature and all four maps,
  as after a publish that changed every map (the cost the issue's goal is about);
* **idle**: the same node again with nothing new published: one conditional GET;
* **fleet**: F nodes (each its own nsscache.conf, caches and state) run the stock
  ``nsscache update --full`` as real processes, W at a time, against the same nginx:
  a round after one publish, then a round with nothing new published. The SCIM
  server counts what IAM saw in each round, nginx what the nodes fetched, each node's
  own run record (coreweave-state.json) what it asked for.

R repetitions of publish, unchanged, refresh, idle (medians); one fleet round of each kind.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import pty
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .common import MAPS, REPO, BenchError, launch, line_counts, tail, write_conf
from .org import SHELLS

__all__ = ["Served", "Measured", "Round", "ManyResult", "measure", "nginx_support", "node_conf", "new_key",
           "NODE_TIMEOUT", "MODE"]

STATE_FILE = "coreweave-state.json"
MIRROR_STORE = "coreweave-mirror"  # a node's kept bundle, under its state directory
NODE_TIMEOUT = 600  # seconds, one node's update
MODE = "real `nsscache update --full` processes"
REFRESH_FILES = ("manifest.json", "manifest.json.sig", *MAPS)  # what a node fetches after a publish


def nginx_support():
    """tests/support/nginx.py from this checkout: a real nginx on loopback, stopped by pid."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("support.nginx")


# --- results ------------------------------------------------------------------------------


@dataclass
class Served:
    """What nginx logged for some requests (its access log)."""

    requests: int
    statuses: Dict[str, int]  # "200" -> count
    bytes_sent: int  # status lines, headers and bodies
    body_bytes: int
    paths: List[str] = field(default_factory=list)  # in order (not kept for a fleet round)


@dataclass
class Measured:
    """One measured process (a publish or a node's update) and what the servers saw meanwhile."""

    wall: float
    user: float
    sys: float
    maxrss_kb: int
    iam_requests: Dict[str, int]  # the SCIM server's counter: "Users", "Groups", "other"
    iam_bytes: int
    nginx: Optional[Served] = None  # node updates only
    node_requests: Dict[str, int] = field(default_factory=dict)  # the node's own record: "mirror/2xx" -> count
    node_bytes: int = 0  # the response bodies the node counted (its own record)
    lines: Dict[str, int] = field(default_factory=dict)
    same_as_direct: Optional[bool] = None  # the node's caches equal the direct sync's (marker line aside)

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def iam_total(self) -> int:
        return sum(self.iam_requests.values())


@dataclass
class Round:
    """F nodes updating from the mirror, W at a time."""

    name: str  # "after a publish" / "nothing new"
    nodes: int
    workers: int
    wall: float  # the first node's start to the last node's exit
    node_walls: List[float]
    node_cpu: float  # user + sys of every node process
    nginx_cpu: float  # nginx's master and workers in the round
    failures: int  # nodes that exited non-zero
    iam_requests: Dict[str, int]  # the SCIM server's counter over the round (with its publish)
    iam_bytes: int
    nginx: Served
    per_node: Dict[str, int]  # a node's own request counts ("mirror/2xx=6") -> nodes
    publish: Optional[Measured] = None

    @property
    def iam_total(self) -> int:
        return sum(self.iam_requests.values())


@dataclass
class ManyResult:
    users: int
    members: int
    expected_listing: int  # ⌈users/page⌉ + ⌈groups/page⌉
    bundle: Dict[str, int]  # the files a node fetches after a publish -> bytes (the last generation)
    publish: List[Measured]
    refresh: List[Measured]  # every map fetched
    idle: List[Measured]  # nothing new published
    rounds: List[Round]
    unchanged: List[Measured] = field(default_factory=list)  # a new generation naming the same maps
    mode: str = MODE


# --- set-up ---------------------------------------------------------------------------------


def new_key(path: Path) -> Path:
    """A fresh unencrypted ed25519 key pair (``ssh-keygen -t ed25519``) at ``path`` and ``path``.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench-publisher", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    path.chmod(0o600)
    return path


def node_conf(node: Path, url: str, public_key: Path, local: Path) -> Path:
    """A node in mirror mode: the direct sync's node-local rules (shells, empty local files, shrink guard), every
    published group, no IAM URL and no token."""
    for sub in ("cache", "state"):
        (node / sub).mkdir(parents=True, exist_ok=True)
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
        f"coreweave_mirror_url = {url}\n"
        f"coreweave_mirror_public_key = {public_key}\n"
        f"coreweave_state_dir = {node / 'state'}\n"
        f"coreweave_allowed_shells = {', '.join(SHELLS)}\n"
        f"coreweave_local_passwd = {local}\n"
        f"coreweave_local_group = {local}\n"
        "coreweave_max_shrink = 1\n"
    )
    return conf


def publisher_conf(directory: Path, size, publish_dir: Path, key: Path) -> Path:
    """The sync's nsscache.conf (its own directories) plus the publish directory and key."""
    conf = write_conf(directory, size.server.base_url, size.settings, size.users)
    with open(conf, "a") as f:
        f.write(f"coreweave_publish_dir = {publish_dir}\ncoreweave_publish_key = {key}\n")
    return conf


def node_record(node: Path) -> dict:
    """The node's last run as it recorded it (its one scope in coreweave-state.json)."""
    data = json.loads((node / "state" / STATE_FILE).read_text())
    (entry,) = data["scopes"].values()
    return entry["last_run"]


def served(logged) -> Served:
    """nginx's access-log lines (support.nginx.Request) summed up."""
    return Served(len(logged), dict(Counter(str(r.status) for r in logged)), sum(r.bytes_sent for r in logged),
                  sum(r.body_bytes_sent for r in logged), [r.path for r in logged])


def process_cpu(pid: int) -> float:
    """CPU seconds (user + sys) of ``pid`` and its children so far (nginx: the master and its workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def cache_entries(cache: Path) -> Dict[str, bytes]:
    """The four caches without their first line (the run marker)."""
    out = {}
    for name in MAPS:
        data = (cache / f"{name}.cache").read_bytes()
        out[name] = data.split(b"\n", 1)[1] if data.startswith(b"nsscache-coreweave:") else data
    return out


# --- measuring --------------------------------------------------------------------------------


class _Many:
    """The publisher, nginx and the nodes for one size (``size``: the runner's _Size, its server up)."""

    def __init__(self, size, web, work: Path):
        self.size, self.web, self.work = size, web, work
        self.publish_dir = Path(web.root)
        self.key = new_key(work / "publisher.key")
        self.public_key = Path(f"{self.key}.pub")
        self.publisher = publisher_conf(work / "publisher", size, self.publish_dir, self.key)
        self.local = work / "local-empty"
        self.local.write_text("")
        self.node = work / "node"
        node_conf(self.node, web.base_url, self.public_key, self.local)
        self.direct = cache_entries(size.node / "cache")  # the direct syncs' caches
        self.logs = work / "logs"
        self.logs.mkdir()
        self.runs = 0

    def _log(self, what: str) -> Path:
        self.runs += 1
        return self.logs / f"{self.runs:03d}-{what}.log"

    def _launch(self, what: str, command: List[str], cwd: Path) -> dict:
        log = self._log(what)
        m = launch(self.size.python, command, log, self.size.env, cwd)
        if m["exit"] != 0:
            raise BenchError(f"{what} exited {m['exit']} at N={self.size.users}; log {log}:\n{tail(log)}")
        return m

    def publish(self) -> Measured:
        """One ``nsscache-coreweave publish``, measured, with what the SCIM server saw."""
        self.size.server.stats(reset=True)
        m = self._launch("publish", [str(self.size.bin / "nsscache-coreweave"), "-c", str(self.publisher),
                                     "publish"], self.work)
        stats = self.size.server.stats(reset=True)
        return Measured(m["wall"], m["user"], m["sys"], m["maxrss_kb"], stats["requests"], stats["body_bytes"])

    def update(self) -> Measured:
        """The bench node's stock ``nsscache update --full`` from the mirror, measured, with what nginx and the
        SCIM server saw."""
        self.size.server.stats(reset=True)
        m = self._launch("update", [str(self.size.bin / "nsscache"), "-c", str(self.node / "nsscache.conf"),
                                    "update", "--full"], self.node)
        record = node_record(self.node)
        own = dict(record.get("requests", {}))
        logged = self.web.requests(sum(own.values()))  # waits for lines nginx writes just after answering
        self.web.reset_log()
        stats = self.size.server.stats(reset=True)
        return Measured(m["wall"], m["user"], m["sys"], m["maxrss_kb"], stats["requests"], stats["body_bytes"],
                        served(logged), own, int(record.get("bytes", 0)), line_counts(self.node / "cache"),
                        cache_entries(self.node / "cache") == self.direct)

    def forget(self) -> None:
        """Remove the node's kept bundle: its next update fetches every map (its caches stay)."""
        shutil.rmtree(self.node / "state" / MIRROR_STORE)

    def bundle(self) -> Dict[str, int]:
        """The bytes of the files a node fetches after the last publish."""
        manifest = json.loads((self.publish_dir / "manifest.json").read_text())
        signature = self.publish_dir / "generations" / str(manifest["generation"]) / "manifest.json.sig"
        sizes = {"manifest.json": (self.publish_dir / "manifest.json").stat().st_size,
                 "manifest.json.sig": signature.stat().st_size}
        sizes.update({name: manifest["files"][name]["bytes"] for name in MAPS})
        return sizes

    # --- the fleet ---------------------------------------------------------------------------

    def fleet(self, nodes: int, workers: int, say) -> List[Round]:
        """A round after one publish, then one with nothing new published; F fresh nodes."""
        dirs = [self.work / "fleet" / f"node{i:04d}" for i in range(nodes)]
        for d in dirs:
            node_conf(d, self.web.base_url, self.public_key, self.local)
        publish = self.publish()
        first = self.round("after a publish", dirs, workers, publish)
        say(f"  fleet of {nodes} nodes, {workers} at a time, after a publish: {first.wall:.1f} s, "
            f"{first.nginx.requests} nginx requests, {first.nginx.bytes_sent / 1e6:.1f} MB, IAM {first.iam_total}")
        second = self.round("nothing new", dirs, workers, None)
        say(f"  the same {nodes} nodes, nothing new: {second.wall:.1f} s, {second.nginx.requests} nginx requests "
            f"({second.nginx.statuses}), IAM {second.iam_total}")
        return [first, second]

    def round(self, name: str, dirs: List[Path], workers: int, publish: Optional[Measured]) -> Round:
        self.size.server.stats(reset=True)
        children, nginx_cpu = resource.getrusage(resource.RUSAGE_CHILDREN), process_cpu(self.web.pid)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(self._node_update, dirs))
        wall = time.perf_counter() - started
        after, nginx_after = resource.getrusage(resource.RUSAGE_CHILDREN), process_cpu(self.web.pid)
        stats = self.size.server.stats(reset=True)
        own = [_own_requests(d) for d in dirs]
        logged = self.web.requests(sum(sum(o.values()) for o in own))
        self.web.reset_log()
        summed = served(logged)
        summed.paths = []  # thousands of them: the counts say enough
        iam = Counter(stats["requests"]) + Counter(publish.iam_requests if publish else {})
        return Round(
            name=name, nodes=len(dirs), workers=workers, wall=wall, node_walls=[w for w, _ in outcomes],
            node_cpu=(after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime),
            nginx_cpu=nginx_after - nginx_cpu, failures=sum(1 for _, code in outcomes if code != 0),
            iam_requests=dict(iam), iam_bytes=stats["body_bytes"] + (publish.iam_bytes if publish else 0),
            nginx=summed, per_node=dict(Counter(_requests_key(o) for o in own)), publish=publish,
        )

    def _node_update(self, node: Path) -> Tuple[float, int]:
        """One node's stock ``nsscache update --full`` (stdin a pty: nsscache logs to stderr, into a file)."""
        primary, secondary = pty.openpty()
        try:
            with open(node / "update.log", "wb") as log:
                started = time.perf_counter()
                done = subprocess.run([str(self.size.bin / "nsscache"), "-c", str(node / "nsscache.conf"), "update",
                                       "--full"], stdin=secondary, stdout=log, stderr=subprocess.STDOUT,
                                      env=self.size.env, cwd=node, timeout=NODE_TIMEOUT)
                return time.perf_counter() - started, done.returncode
        finally:
            os.close(primary)
            os.close(secondary)


def _own_requests(node: Path) -> Dict[str, int]:
    try:
        return dict(node_record(node).get("requests", {}))
    except (OSError, ValueError, KeyError):
        return {}


def _requests_key(requests: Dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(requests.items())) or "none recorded"


def measure(size, expected_listing: int, reps: int, nodes: int, workers: int, say, keep: bool = False) -> ManyResult:
    """Publish, refresh and idle refresh ``reps`` times, then the fleet's two rounds. The work files stay in
    ``size.workdir``/many for the runner to remove (the fleet's F copies of the caches at once unless ``keep``)."""
    nginx = nginx_support()
    work = size.workdir / "many"
    (work / "published").mkdir(parents=True)
    try:
        with nginx.serve(work / "published", work / "nginx") as web:
            many = _Many(size, web, work)
            publishes, unchanged, refreshes, idles = _repeat(many, reps, say)
            rounds = many.fleet(nodes, workers, say)
            bundle = many.bundle()
    except (nginx.NginxMissing, nginx.NginxError, subprocess.CalledProcessError) as e:
        raise BenchError(f"the many-nodes part: {e}") from None
    finally:
        if not keep:
            shutil.rmtree(work / "fleet", ignore_errors=True)  # gigabytes at 100,000 users
    return ManyResult(users=size.users, members=size.settings.members_for(size.users),
                      expected_listing=expected_listing, bundle=bundle, publish=publishes, refresh=refreshes,
                      idle=idles, rounds=rounds, unchanged=unchanged)


def _repeat(many: _Many, reps: int, say) -> Tuple[List[Measured], ...]:
    """After a warm-up pair, ``reps`` times: publish; the node's refresh (it holds the previous
    generation); its refresh without its kept bundle (every map); its idle refresh."""
    many.publish()  # the node then holds a generation, as a node in service does
    many.update()
    publishes: List[Measured] = []
    unchanged: List[Measured] = []
    refreshes: List[Measured] = []
    idles: List[Measured] = []
    for rep in range(reps):
        publishes.append(many.publish())
        unchanged.append(many.update())
        many.forget()
        refreshes.append(many.update())
        idles.append(many.update())
        p, u, r, i = publishes[-1], unchanged[-1], refreshes[-1], idles[-1]
        say(f"  mirror rep {rep + 1}/{reps}: publish {p.wall:.2f} s (CPU {p.cpu:.2f} s, {p.maxrss_kb / 1024:.0f} MiB), "
            f"node refresh {u.wall:.2f} s ({u.nginx.requests} requests, {u.nginx.bytes_sent:,} bytes), "
            f"every map {r.wall:.2f} s ({r.nginx.requests} requests, {r.nginx.bytes_sent / 1e6:.2f} MB), "
            f"idle {i.wall:.2f} s ({i.nginx.requests} requests: {i.nginx.statuses})")
    return publishes, unchanged, refreshes, idles
