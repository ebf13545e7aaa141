"""The "Fetching less (issue 16)" section of docs/benchmarks.md: targets, tables, checks."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, List, Optional

from .common import LARGE_N, MAPS
from .tables import Target, mb, md_table, med, text_table, yes

if TYPE_CHECKING:  # pragma: no cover
    from .common import Run
    from .fetchless import FetchLessResult
    from .runner import BenchResult, SizeResult

__all__ = ["targets", "console", "markdown", "rows", "MAX_WALL_SHARE", "MAX_BYTES_SHARE", "MAX_LISTING",
           "MAX_RSS_MB", "MAX_RATIO"]

MAX_WALL_SHARE = 0.5  # filtering server: sync wall / floor wall
MAX_BYTES_SHARE = 0.20  # filtering server: sync bytes / the whole listing's
MAX_LISTING = 300  # filtering server: listing requests (Groups pages + member batches)
MAX_RSS_MB = 200.0  # MB = 10**6 bytes
MAX_RATIO = 1.5  # plain server, and the filtering server from 1,000,000 users on: sync wall / floor wall
MAX_DISCOVERY = 1  # /ServiceProviderConfig
NOT_RUN = "not run (--no-fetch-less, or --fetch-less-at not among --sizes)"


def _plain(result: "BenchResult", users: int) -> Optional["SizeResult"]:
    return next((s for s in result.sizes if s.users == users), None)


def _peak(runs: List["Run"]) -> float:
    return max(mb(r.maxrss_kb) for r in runs)


def _bytes(runs: List["Run"]) -> float:
    return statistics.median(r.body_bytes for r in runs)


def members_ok(part: "FetchLessResult") -> bool:
    """Every measured sync fetched only the members and wrote the whole listing's caches, line counts included."""
    return all(r.fetch == "members" and r.same_caches is True and r.lines == part.full.lines for r in part.sync)


def _filtering(part: "FetchLessResult") -> List[Target]:
    at = f"at {part.users:,} users, filtering server"
    wall = med(part.sync, "wall") / med(part.floor, "wall")
    peak = _peak(part.sync)
    out = [Target(f"{at}: users fetched by id (`fetch: members`) and caches identical to a full listing's, every run",
                  f"fetch {'/'.join(sorted({r.fetch for r in part.sync}))}; same caches "
                  f"{yes(all(r.same_caches for r in part.sync))}", members_ok(part))]
    if part.users >= LARGE_N:
        out.append(Target(f"{at}: sync wall ≤ {MAX_RATIO} × the floor (medians)", _wall_text(part, wall),
                          wall <= MAX_RATIO))
    else:
        share = _bytes(part.sync) / part.full_listing_bytes
        listing = max(r.listing_requests for r in part.sync)
        out += [
            Target(f"{at}: sync wall ≤ {MAX_WALL_SHARE} × the floor (medians)", _wall_text(part, wall),
                   wall <= MAX_WALL_SHARE),
            Target(f"{at}: bytes ≤ {MAX_BYTES_SHARE:.0%} of the whole listing's",
                   f"{share:.1%} ({_bytes(part.sync) / 1e6:.1f} MB / {part.full_listing_bytes / 1e6:.1f} MB)",
                   share <= MAX_BYTES_SHARE),
            Target(f"{at}: ≤ {MAX_LISTING} listing requests (worst run)",
                   f"{listing} (+ {'/'.join(sorted({str(r.other_requests) for r in part.sync}))} other)",
                   listing <= MAX_LISTING),
        ]
    out.append(Target(f"{at}: peak RSS ≤ {MAX_RSS_MB:g} MB (worst run)", f"{peak:.0f} MB{_lower_rss(part)}",
                      peak <= MAX_RSS_MB))
    return out


def _wall_text(part: "FetchLessResult", wall: float) -> str:
    lower = (f"; lower bound {med(part.lower, 'wall') / med(part.floor, 'wall'):.2f} × "
             f"({med(part.lower, 'wall'):.2f} s)" if part.lower else "")
    return (f"{wall:.2f} ({med(part.sync, 'wall'):.2f} s / {med(part.floor, 'wall'):.2f} s; "
            f"CPU {med(part.sync, 'cpu'):.2f} s{lower})")


def _lower_rss(part: "FetchLessResult") -> str:
    return f" (lower bound {_peak(part.lower):.0f} MB)" if part.lower else ""


def _plain_targets(size: "SizeResult") -> List[Target]:
    at = f"at {size.users:,} users, plain server (the table's runs)"
    wall = med(size.sync, "wall") / med(size.floor, "wall")
    listing = sorted({r.listing_requests for r in size.sync})
    other = sorted({r.other_requests for r in size.sync})
    exact = (size.full_listing_requests and listing == [size.expected_requests]
             and all(n <= MAX_DISCOVERY for n in other))
    return [
        Target(f"{at}: sync wall ≤ {MAX_RATIO} × the floor (medians)",
               f"{wall:.2f} ({med(size.sync, 'wall'):.2f} s / {med(size.floor, 'wall'):.2f} s)", wall <= MAX_RATIO),
        Target(f"{at}: listing requests exactly the whole listing's (+ ≤ {MAX_DISCOVERY} discovery)",
               f"{'/'.join(map(str, listing))} (the whole listing: {size.expected_requests}; same URLs, attributes "
               f"aside: {yes(size.full_listing_requests)}) + {'/'.join(map(str, other))} other", exact),
    ]


def targets(result: "BenchResult") -> List[Target]:
    if not result.fetch_less:
        return [Target("fetching less (issue 16)", NOT_RUN, None)]
    out = []
    for part in result.fetch_less:
        out += _filtering(part)
        plain = _plain(result, part.users)
        if plain is not None and part.users < LARGE_N:
            out += _plain_targets(plain)
    return out


def _spread(runs: List["Run"], attr: str) -> str:
    values = [getattr(r, attr) for r in runs]
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _row(users: int, what: str, runs: List["Run"], floor_wall: float, whole: float) -> List[str]:
    return [
        f"{users:,}", what, _spread(runs, "wall"), f"{med(runs, 'cpu'):.2f}",
        f"{mb(med(runs, 'maxrss_kb')):.0f} ({_peak(runs):.0f})",
        "/".join(sorted({str(r.listing_requests) for r in runs})),
        "/".join(sorted({str(r.other_requests) for r in runs})),
        f"{_bytes(runs) / 1e6:.1f}", f"**{med(runs, 'wall') / floor_wall:.2f}**", f"{_bytes(runs) / whole:.1%}",
        "/".join(sorted({r.fetch or "—" for r in runs})),
    ]


def rows(result: "BenchResult"):
    head = ["users", "server: client", "wall s", "CPU s", "peak RSS MB (max)", "listing requests", "other requests",
            "MB", "wall / floor", "bytes / whole listing", "users fetched"]
    out = []
    for part in result.fetch_less:
        floor_wall, whole = med(part.floor, "wall"), part.full_listing_bytes
        out.append(_row(part.users, "filtering: `coreweave_fetch = auto`", part.sync, floor_wall, whole))
        plain = _plain(result, part.users)
        if plain is not None:
            out.append(_row(part.users, "plain: default `coreweave_fetch` (the table's runs)", plain.sync,
                            med(plain.floor, "wall"), plain.floor[0].body_bytes))
        out.append(_row(part.users, "filtering: `coreweave_fetch = full` (1 run, the reference)", [part.full],
                        floor_wall, whole))
        out.append(_row(part.users, "floor: the whole listing", part.floor, floor_wall, whole))
        if part.lower:
            out.append(_row(part.users, "lower bound: the sync's requests, its caches replayed", part.lower,
                            floor_wall, whole))
    return head, out


def checks(result: "BenchResult") -> List[str]:
    out = []
    for part in result.fetch_less:
        expected = _plain(result, part.users).org["expected"] if _plain(result, part.users) else None
        lines_ok = expected is not None and all(all(r.lines.get(m) == expected[m] for m in MAPS)
                                                for r in [part.full, *part.sync])
        out.append(
            f"N={part.users:,}: the `coreweave_fetch = full` run requested exactly the floor's URLs (attributes "
            f"aside): {yes(part.floor_is_full_run)}; every floor requested those URLs: "
            f"{yes(all(r.targets_match for r in part.floor))}; every sync requested the same URLs: "
            f"{yes(all(r.targets_match for r in part.sync))}; users fetched: "
            f"{', '.join(sorted({r.fetch for r in part.sync}))}; caches identical to the full run's (run marker "
            f"aside) in every run: {yes(all(r.same_caches for r in part.sync))}; cache line counts match the "
            f"organisation's expected counts: {yes(lines_ok)}"
            + (f"; every lower bound requested the sync's URLs (and as many bytes) and wrote its caches byte for "
               f"byte: {yes(_bound_ok(part))}" if part.lower else "")
            + "".join(f"; a sync listed every user instead: {why}" for why in part.fell_back)
        )
    return out


def _bound_ok(part: "FetchLessResult") -> bool:
    return all(r.targets_match and r.same_caches and r.body_bytes == s.body_bytes
               for r, s in zip(part.lower, part.sync))


def console(result: "BenchResult") -> List[str]:
    parts = ["", "fetching less (issue 16):"]
    if result.fetch_less:
        parts += [text_table(*rows(result)), ""]
    parts += [f"  {t.mark:16} {t.name}: {t.measured}" for t in targets(result)]
    parts += [f"  {c}" for c in checks(result)]
    return parts


def markdown(result: "BenchResult") -> List[str]:
    out = ["## Fetching less (issue 16)", ""]
    out += [md_table(["target", "measured", "result"], [[t.name, t.measured, t.mark] for t in targets(result)]), ""]
    if not result.fetch_less:
        return out
    s = result.settings
    out += [
        "The same organisation and server process as the table above, switched from `plain` (a server that "
        "supports neither `filter` nor `attributes`: the table's runs) to `filtering`. Medians of "
        f"{s.reps} runs ({s.large_reps} from 1,000,000 users on; min–max in brackets) after one unmeasured warm-up "
        "of each; sync, floor and lower bound alternate. The plain row's wall / floor uses the table's floor.",
        "",
        md_table(*rows(result)),
        "",
        "Checks of the measurement itself:",
        "",
    ] + [f"- {c}" for c in checks(result)] + [""] + _described(s)
    return out


def _described(settings) -> List[str]:
    sizes = ", ".join(f"{n:,}" for n in settings.fetch_less_sizes)
    return [
        "What is measured:",
        "",
        "- **server**: `benchmarks/server.py`, capability `filtering`: `/ServiceProviderConfig` advertises `filter` "
        "(`maxResults` 200); `filter=id eq \"…\" or id eq \"…\"` on Users is honoured (each value a JSON string, ids "
        "compared exactly, found through a dict; anything else is a 400 `invalidFilter`), the matching users in "
        "listing order, `totalResults` the number matched, `count` capped at 200; `attributes` / "
        "`excludedAttributes` honoured. Filtered pages are rendered on first request (the warm-up) and kept. "
        "Capability `plain` answers `filter.supported: false` and ignores `filter`, `attributes` and "
        "`excludedAttributes`.",
        "- **sync (filtering)**: the stock `nsscache update --full` with the table's configuration plus "
        "`coreweave_fetch = auto`, on a node of its own: one discovery request (counted as other), the Groups "
        "listing, the members of the configured groups by id in batches. Its run record's `fetch` is shown (users "
        "fetched); its caches are compared byte for byte, the run marker line aside, with those of one "
        "`coreweave_fetch = full` run on another node against the same server (the reference, shown as one run).",
        "- **floor**: as in the table: the whole listing (Users and Groups pages, no filter, no attributes), "
        "downloaded and parsed; its URLs are computed, and checked against the `coreweave_fetch = full` run's.",
        "- **lower bound**: `benchmarks/replay.py`, the stock `nsscache update --full` on a third node with a "
        "stand-in source (the package's hook off, the package never imported): it requests and parses exactly a "
        "sync's URLs, two at a time as the sync's member batches (one `requests.Session` per thread, `json.loads` "
        "as the floor), then hands nsscache that sync's four caches as maps (nsscache's own parser; all four held "
        "in memory, as a source whose maps agree holds what they are cut from). The interpreter, requests and "
        "nsscache's building, writing and verifying of the maps are a sync's; this package's imports, policy, "
        "rendering and checks are left out. A sync making the same requests cannot be faster or smaller than "
        "this row by anything this package's code does.",
        "- **bytes / whole listing**: the response bodies of a run against the floor's (the whole listing's).",
        f"- `make bench` runs this part by default at N = {sizes} (`--fetch-less-at`, default 100,000; "
        "1,000,000 too with `--million`); `--no-fetch-less` skips it.",
        "",
    ]
