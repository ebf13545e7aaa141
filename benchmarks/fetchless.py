"""Fetching less (issue 16, item 5): the member-only fetch and attribute projection, measured.

At each N of the runner's ``--fetch-less-at`` (100,000 users by default, and
1,000,000 with ``--million``), after the table's runs (and the many-nodes part) at
that N, with the same server process and organisation, the server is switched to
its ``filtering`` capability (:mod:`benchmarks.server`: ``filter`` advertised in
``/ServiceProviderConfig`` with ``maxResults``, id filters on Users and
``attributes`` honoured), and:

* **full**: once, the stock ``nsscache update --full`` with ``coreweave_fetch = full``
  on a node of its own: the reference caches, and the requests of a whole listing
  (which must be the floor's URLs, attributes aside);
* **sync**: the stock ``nsscache update --full`` with ``coreweave_fetch = auto``
  written in its conf (so the part measures the member path whatever the package's
  default) on another node: discovery, the Groups listing, the members by id in
  batches, Users projected. Each run's record must say ``fetch: members``, its caches
  must equal the reference's byte for byte (the run marker line aside) and hold the
  organisation's expected line counts;
* **floor**: benchmarks/floor.py downloading and parsing the whole listing, as in the
  table;
* **lower bound**: benchmarks/replay.py on a third node: the stock ``nsscache update
  --full`` with a stand-in source (the package not even imported) that requests and
  parses exactly the sync's URLs, two at a time, then hands nsscache the sync's own
  caches as maps (nsscache's parser, all four held in memory). What the member path
  costs if this package's own work cost nothing; its requests must be the sync's and
  its caches the sync's byte for byte.

One warm-up of each of sync, floor and lower bound (the server renders the filtered pages on
first request and keeps them), then R alternating triples (the runner's ``--reps``,
``--large-reps`` from 1,000,000 users on). The server is switched back to ``plain``
at the end. The ``plain`` server's figures at the same N are the table's.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from .common import LARGE_N, MAPS, Run, write_conf
from .many import cache_entries

__all__ = ["FetchLessResult", "measure"]

# The package's warning when it lists every user after all (snapshot.py), and why.
FELL_BACK = re.compile(r"fetching only the members of coreweave_groups failed: (.*?)(?:; listing every user instead)?$",
                       re.MULTILINE)


@dataclass
class FetchLessResult:
    """One N of the fetch-less part."""

    users: int
    members: int
    expected_listing: int  # ⌈users/page⌉ + ⌈groups/page⌉: the whole listing's requests
    full: Run  # coreweave_fetch = full, once, on the filtering server: the reference caches
    sync: List[Run]  # coreweave_fetch = auto on the filtering server
    floor: List[Run]  # the whole listing, alternating with sync
    floor_is_full_run: bool  # the floor's URLs are the coreweave_fetch = full run's requests (attributes aside)
    full_listing_bytes: int  # the floor's body bytes: the whole listing
    fell_back: List[str] = field(default_factory=list)  # why syncs listed every user instead (their logs), distinct
    lower: List[Run] = field(default_factory=list)  # the lower bound (benchmarks/replay.py), alternating with sync


def _node(size, name: str, fetch: str) -> Path:
    node = size.workdir / name
    write_conf(node, size.server.base_url, size.settings, size.users, fetch=fetch)
    return node


def _compared(run: Run, node: Path, reference: Dict[str, bytes]) -> Run:
    run.same_caches = cache_entries(node / "cache") == reference
    return run


def _why_full(size, seen: List[str]) -> None:
    """Add to ``seen`` the reasons the last sync's log gives for listing every user."""
    text = size.last_log.read_text(errors="replace") if size.last_log else ""
    for found in FELL_BACK.finditer(text):
        if found.group(1).strip() not in seen:
            seen.append(found.group(1).strip())


def measure(size, expected_listing: int, say) -> FetchLessResult:
    """The part at ``size`` (the runner's _Size, its server up and its table measured)."""
    settings = size.settings
    reps = settings.large_reps if size.users >= LARGE_N else settings.reps
    size.server.capability("filtering")
    full_node, node = _node(size, "fetch-full", "full"), _node(size, "fetch-auto", "auto")
    full = size.sync(full_node)
    reference = cache_entries(full_node / "cache")
    syncs, floors, lower, fell_back = [], [], [], []
    for _ in range(max(1, settings.warmup)):
        _compared(size.sync(node), node, reference)
        _why_full(size, fell_back)
        size.floor()
        bound = _LowerBound.of(size, node)  # what that sync requested and wrote
        bound.run(size)
    for rep in range(reps):
        syncs.append(_compared(size.sync(node), node, reference))
        _why_full(size, fell_back)
        floors.append(size.floor())
        lower.append(bound.run(size))
        last = syncs[-1]
        say(f"  N={size.users:,} fetch-less rep {rep + 1}/{reps}: sync {last.wall:.2f} s (CPU {last.cpu:.2f} s, "
            f"{last.maxrss_kb / 1024:.0f} MiB, {last.listing_requests} listing requests, "
            f"{last.body_bytes / 1e6:.1f} MB, users fetched: {last.fetch}), floor {floors[-1].wall:.2f} s, "
            f"lower bound {lower[-1].wall:.2f} s ({lower[-1].maxrss_kb / 1024:.0f} MiB)")
    size.server.capability("plain")
    return FetchLessResult(
        users=size.users, members=settings.members_for(size.users), expected_listing=expected_listing, full=full,
        sync=syncs, floor=floors, floor_is_full_run=size.lists_whole(size.first_targets[full_node]),
        full_listing_bytes=floors[0].body_bytes, fell_back=fell_back, lower=lower,
    )


@dataclass(frozen=True)
class _LowerBound:
    """The lower bound's inputs (a sync's requests and caches) and the node it writes."""

    node: Path
    urls_file: Path
    caches: Path
    targets: List[str]

    @classmethod
    def of(cls, size, synced: Path) -> "_LowerBound":
        """From the last sync of ``synced`` (its caches) and its first (its requests: every sync's, any order)."""
        targets = size.first_targets[synced]
        urls_file, caches = size.workdir / "lower-bound-urls.json", size.workdir / "lower-bound-caches"
        urls_file.write_text(json.dumps([size.server.origin + t for t in targets]))
        shutil.rmtree(caches, ignore_errors=True)
        shutil.copytree(synced / "cache", caches)
        return cls(_node(size, "lower-bound", "auto"), urls_file, caches, targets)

    def run(self, size) -> Run:
        """One measured run; ``same_caches``: it wrote the sync's caches byte for byte."""
        run = size.lower_bound(self.node, self.urls_file, self.caches, self.targets)
        run.same_caches = all((self.node / "cache" / f"{name}.cache").read_bytes()
                              == (self.caches / f"{name}.cache").read_bytes() for name in MAPS)
        return run
