"""Tables, targets and docs/benchmarks.md from a runner result."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, List, Optional, Tuple

from . import fetchless_report, many_report
from .tables import Target, mb, md_table, med, text_table, yes

if TYPE_CHECKING:  # pragma: no cover
    from .runner import BenchResult, Run, SizeResult

__all__ = ["Target", "targets", "console", "markdown", "machine_line", "time_rows", "TARGET_N", "BASE_N"]

TARGET_N = 100_000
BASE_N = 10_000
MAX_RATIO = 1.5
MAX_GROWTH = 11.0
MAX_RSS_MB = 200.0  # MB = 10**6 bytes (ru_maxrss is in KiB)
MAX_DISCOVERY = 1


def ratio(size: "SizeResult", attr: str = "wall") -> float:
    return med(size.sync, attr) / med(size.floor, attr)


def _size(result: "BenchResult", users: int) -> Optional["SizeResult"]:
    return next((s for s in result.sizes if s.users == users), None)


def requests_ok(size: "SizeResult") -> bool:
    """Every sync's listing requests are the whole listing's (their number and their URLs, attributes aside), at
    most one discovery request besides."""
    return size.full_listing_requests and all(
        r.listing_requests == size.expected_requests and r.other_requests <= MAX_DISCOVERY for r in size.sync)


def lines_ok(size: "SizeResult") -> bool:
    expected = size.org["expected"]
    return all(all(r.lines.get(m) == expected[m] for m in ("passwd", "group", "shadow", "sshkey")) for r in size.sync)


def targets(result: "BenchResult") -> List[Target]:
    big, small = _size(result, TARGET_N), _size(result, BASE_N)
    out = []
    if big:
        r = ratio(big)
        out.append(Target(f"sync/floor ≤ {MAX_RATIO} at {TARGET_N:,} users (median wall time)",
                          f"{r:.2f} ({med(big.sync, 'wall'):.2f} s / {med(big.floor, 'wall'):.2f} s; "
                          f"CPU time: {ratio(big, 'cpu'):.2f})", r <= MAX_RATIO))
    else:
        out.append(Target(f"sync/floor ≤ {MAX_RATIO} at {TARGET_N:,} users", "N = 100,000 not run", None))
    if big and small:
        g = med(big.sync, "wall") / med(small.sync, "wall")
        gc = med(big.sync, "cpu") / med(small.sync, "cpu")
        out.append(Target(f"time from {BASE_N:,} to {TARGET_N:,} users grows ≤ {MAX_GROWTH:g}× (median sync wall)",
                          f"{g:.2f}× (CPU time: {gc:.2f}×)", g <= MAX_GROWTH))
    else:
        out.append(Target(f"growth {BASE_N:,} → {TARGET_N:,} ≤ {MAX_GROWTH:g}×", "both sizes not run", None))
    if big:
        peak = max(mb(r.maxrss_kb) for r in big.sync)
        out.append(Target(f"peak RSS ≤ {MAX_RSS_MB:g} MB at {TARGET_N:,} users (worst of the sync runs)",
                          f"{peak:.0f} MB", peak <= MAX_RSS_MB))
    else:
        out.append(Target(f"peak RSS ≤ {MAX_RSS_MB:g} MB at {TARGET_N:,} users", "N = 100,000 not run", None))
    bad = [s for s in result.sizes if not requests_ok(s)]
    detail = "; ".join(
        f"N={s.users:,}: {_requests_text(s)}" for s in result.sizes
    )
    out.append(Target("listing requests = the whole listing's, ⌈users/page⌉ + ⌈groups/page⌉ (+ ≤ 1 discovery), in "
                      "every sync run, every N", detail, not bad if result.sizes else None))
    return out


def _requests_text(size: "SizeResult") -> str:
    listing = sorted({r.listing_requests for r in size.sync})
    other = sorted({r.other_requests for r in size.sync})
    text = f"{'/'.join(map(str, listing))} (expected {size.expected_requests}"
    text += ")" if size.full_listing_requests else "; NOT the whole listing's URLs)"
    if any(other):
        text += f" + {'/'.join(map(str, other))} other"
    return text


def machine_line(machine: dict) -> str:
    return (f"machine: {machine['cpu']}, {machine['cores']}, {machine['ram']} RAM, {machine['os']}; "
            f"{machine['python']}; nsscache {machine['nsscache']}; {machine['package']}; load {machine['load_before']}")


def time_rows(result: "BenchResult") -> Tuple[List[str], List[List[str]]]:
    head = ["users", "groups", "members", "sync wall s", "sync CPU s", "floor wall s", "floor CPU s",
            "sync/floor wall", "sync/floor CPU"]
    rows = []
    for s in result.sizes:
        rows.append([
            f"{s.users:,}", f"{s.groups:,}", f"{s.members:,}",
            _spread(s.sync, "wall"), f"{med(s.sync, 'cpu'):.2f}",
            _spread(s.floor, "wall"), f"{med(s.floor, 'cpu'):.2f}",
            f"**{ratio(s):.2f}**", f"{ratio(s, 'cpu'):.2f}",
        ])
    return head, rows


def _spread(runs: List["Run"], attr: str) -> str:
    values = [getattr(r, attr) for r in runs]
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def resource_rows(result: "BenchResult") -> Tuple[List[str], List[List[str]]]:
    head = ["users", "sync peak RSS MB (max)", "floor peak RSS MB", "listing requests (expected)", "other requests",
            "connections", "MB per run", "bytes/user", "lines passwd/group/shadow/sshkey", "expected"]
    rows = []
    for s in result.sizes:
        first = s.sync[0]
        lines = sorted({tuple(r.lines.get(m, 0) for m in ("passwd", "group", "shadow", "sshkey")) for r in s.sync})
        exp = s.org["expected"]
        rows.append([
            f"{s.users:,}",
            f"{mb(med(s.sync, 'maxrss_kb')):.0f} ({max(mb(r.maxrss_kb) for r in s.sync):.0f})",
            f"{mb(med(s.floor, 'maxrss_kb')):.0f}",
            ("" if requests_ok(s) else "⚠ ") + _requests_text(s).split(" +")[0],
            "/".join(sorted({str(r.other_requests) for r in s.sync})),
            "/".join(sorted({str(r.connections) for r in s.sync})),
            f"{first.body_bytes / 1e6:.1f}",
            f"{s.page_bytes_per_user:,.0f}",
            ("" if lines_ok(s) else "⚠ ") + " | ".join("/".join(f"{x:,}" for x in t) for t in lines),
            "/".join(f"{exp[m]:,}" for m in ("passwd", "group", "shadow", "sshkey")),
        ])
    return head, rows


def growth_rows(result: "BenchResult") -> Tuple[List[str], List[List[str]]]:
    head = ["from → to", "users ×", "sync wall ×", "sync CPU ×", "floor wall ×", "sync peak RSS ×"]
    rows = []
    for a, b in zip(result.sizes, result.sizes[1:]):
        rows.append([
            f"{a.users:,} → {b.users:,}", f"{b.users / a.users:g}",
            f"**{med(b.sync, 'wall') / med(a.sync, 'wall'):.2f}**",
            f"{med(b.sync, 'cpu') / med(a.sync, 'cpu'):.2f}",
            f"{med(b.floor, 'wall') / med(a.floor, 'wall'):.2f}",
            f"{med(b.sync, 'maxrss_kb') / med(a.sync, 'maxrss_kb'):.2f}",
        ])
    return head, rows


def busy(machine: dict) -> Optional[str]:
    """A warning when other work was running (1-minute load above half the usable cores)."""
    try:
        load = max(float(machine[k].split()[0]) for k in ("load_before", "load_after") if k in machine)
        cores = int(machine["cores"].split()[0])
    except (ValueError, KeyError, IndexError):
        return None
    if load > cores / 2:
        return (f"the machine was busy (1-minute load average up to {load:.2f} on {cores} cores): wall times are "
                "inflated and noisy; CPU times are less affected; request, byte and RSS figures are not")
    return None


def checks(result: "BenchResult") -> List[str]:
    """Sanity checks of the measurement itself (not targets)."""
    out = []
    warning = busy(result.machine)
    if warning:
        out.append(f"WARNING: {warning}")
    for s in result.sizes:
        same_sync = all(r.targets_match for r in s.sync)
        same_floor = all(r.targets_match for r in s.floor)
        floor_requests = sorted({r.listing_requests + r.other_requests for r in s.floor})
        out.append(
            f"N={s.users:,}: every sync run requested the same {len(s.targets)} URLs: {yes(same_sync)}; "
            f"their listing requests are the whole listing's (attributes aside): {yes(s.full_listing_requests)}; "
            f"users fetched: {', '.join(sorted({r.fetch or '?' for r in s.sync}))}; "
            f"the floor requested exactly the whole listing's {len(s.listing_targets)} URLs: {yes(same_floor)} "
            f"({'/'.join(map(str, floor_requests))} requests); "
            f"cache line counts match the organisation's expected counts: {yes(lines_ok(s))}; "
            f"Accept-Encoding sent: {', '.join(repr(k) for k in s.accept_encoding) or 'none'}"
        )
    out.append(f"installed package: {result.machine['installed']}")
    return out


def console(result: "BenchResult") -> str:
    parts = [text_table(*time_rows(result)), "", text_table(*resource_rows(result))]
    if len(result.sizes) > 1:
        parts += ["", text_table(*growth_rows(result))]
    parts += ["", "targets (issue 5):"]
    parts += [f"  {t.mark:16} {t.name}: {t.measured}" for t in targets(result)]
    parts += ["", "checks:"] + [f"  {c}" for c in checks(result)]
    parts += many_report.console(result)
    parts += fetchless_report.console(result)
    return "\n".join(parts)


def markdown(result: "BenchResult") -> str:
    """docs/benchmarks.md: command, machine, issue 5's targets and results, the organisation, issue 15's many
    nodes, issue 16's fetching less, the profile."""
    out = _head(result) + _issue5(result) + _organisation(result)
    out += many_report.markdown(result)
    out += fetchless_report.markdown(result)
    profiles = [x for x in result.sizes if x.profile]
    if profiles:
        out += ["## Profile", ""]
        for x in profiles:
            out += ["```", x.profile.rstrip(), "```", ""]
    return "\n".join(out)


def _head(result: "BenchResult") -> List[str]:
    m = result.machine
    out = [
        "# Benchmarks",
        "",
        "Written by the benchmark runner (`benchmarks/`, issues 5, 15 and 16); do not edit by hand, rerun it. "
        f"Run started {result.started}, took {result.seconds / 60:.1f} min.",
        "",
        "## Command",
        "",
        "```sh",
        result.command or "python -m benchmarks",
        "```",
        "",
        "`make bench` runs `.venv/bin/python -m benchmarks $(BENCH_ARGS)` after `make install`; "
        "`--million` adds N = 1,000,000; `--profile` adds a cProfile of one sync per N; the many-nodes part "
        "(issue 15) runs by default at 100,000 users (`--no-many-nodes` skips it); the fetch-less part (issue 16) "
        "at 100,000 users, and 1,000,000 with `--million` (`--no-fetch-less` skips it).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']}",
        f"- RAM: {m['ram']}",
        f"- OS: {m['os']}",
        f"- Python: {m['python']}",
        f"- nsscache: {m['nsscache']}",
        f"- package: {m['package']}; {m['installed']}",
        f"- load average before / after: {m['load_before']} / {m.get('load_after', '?')}",
        "",
    ]
    warning = busy(m)
    if warning:
        out += [f"**Warning:** {warning}. Rerun on an idle machine before quoting wall times.", ""]
    return out


def _issue5(result: "BenchResult") -> List[str]:
    s = result.settings
    out = [
        "## Targets (issue 5)",
        "",
        md_table(["target", "measured", "result"], [[t.name, t.measured, t.mark] for t in targets(result)]),
        "",
        "## Results",
        "",
        f"Medians of {s.reps} runs each (min–max in brackets; {s.large_reps} from 1,000,000 users on), after "
        f"{s.warmup} unmeasured warm-up run of each; sync and floor runs alternate.",
        "",
        md_table(*time_rows(result)),
        "",
        md_table(*resource_rows(result)),
        "",
    ]
    if len(result.sizes) > 1:
        out += ["Growth:", "", md_table(*growth_rows(result)), ""]
    out += ["Checks of the measurement itself:", ""] + [f"- {c}" for c in checks(result)] + [""]
    return out + _measured(s)


def _measured(s) -> List[str]:
    return [
        "## What is measured",
        "",
        "- **sync**: the stock `nsscache -c nsscache.conf update --full` with `maps = passwd, group, shadow, sshkey`, "
        "`source = coreweave`, run from the venv above (the package installed non-editably, found through its `.pth` "
        "hook), stdin a pty so that nsscache logs to stderr (to a file). The caches are written to a temporary "
        "`files_dir` and are kept between runs, as on a node. Configuration: the five groups in `coreweave_groups`, "
        f"`coreweave_page_size = {s.page_size}`, `coreweave_pagination = {s.pagination}`, "
        "`coreweave_allowed_shells` = the organisation's shells, empty "
        "`coreweave_local_passwd`/`coreweave_local_group`, "
        "`coreweave_max_shrink = 1`, state in the temporary directory; from 1,000,000 users on also "
        "`coreweave_deadline = 1800` (the default 300 s is tight on a busy 2-core machine). No `coreweave_fetch`: "
        "the package's default, against a server that supports neither `filter` nor `attributes` (below).",
        "- **floor**: a fresh `python benchmarks/floor.py` (same interpreter) downloading and parsing the whole "
        "listing: every Users and Groups page, no filter, no attributes, as a `coreweave_fetch = full` run asks for "
        "them (the URLs are computed from N, G, the page size and the pagination), with one `requests.Session` "
        "(same `Authorization` and `Accept` headers) and `json.loads` of every page, nothing else. The sync's "
        "listing requests are checked to be the same URLs (any `attributes` aside, which this server ignores): "
        "the ratio measures the client's own work beyond downloading and parsing.",
        "- **wall**: fork to exit of the measured process, interpreter start-up included. **CPU**: its user + system "
        "time (`os.wait4`). **Peak RSS**: its `ru_maxrss` (MB = 10⁶ bytes). Both are measured through "
        "`benchmarks/launch.py`, a tiny launcher, because Linux reports a child's `ru_maxrss` as at least the "
        "resident size of the process that forked it.",
        "- **requests, bytes, connections**: counted by the server per run (response bodies; `connections` = TCP "
        "connections that carried requests). Expected listing requests: ⌈users/page⌉ + ⌈groups/page⌉.",
        "- **server**: `benchmarks/server.py` in its own process (its CPU is not the client's) on 127.0.0.1, HTTP/1.1 "
        "keep-alive, every page rendered once and then served from memory; honours `count`, index and cursor "
        "pagination. Capability `plain`, a server that does neither: `/ServiceProviderConfig` says "
        "`filter.supported: false`, and `filter`, `attributes` and `excludedAttributes` are ignored (every page "
        "holds whole resources). "
        f"gzip: {'on for clients that accept it' if s.gzip else 'off'}.",
        "",
    ]


def _organisation(result: "BenchResult") -> List[str]:
    s = result.settings
    first = result.sizes[0] if result.sizes else None
    org = first.org if first else {}
    key_types = ", ".join(f"{n} {k}" for k, n in org.get("key_types", {}).items())
    members = (f"M = {s.members:,} for every N" if s.members is not None
               else f"M = {s.members_share:.0%} of N")
    out = [
        "## Organisation",
        "",
        f"Synthetic and deterministic (`benchmarks/org.py`, seed {s.seed}): N users, G = {s.groups:,} flat groups, "
        f"{members} distinct users in the five configured groups "
        f"({', '.join(org.get('configured_groups', []))}; about 20 % of them in two), the other groups hold 0–40 "
        "members each. Users carry core attributes, the enterprise extension and the CoreWeave extension "
        f"(POSIX name, uid, gid, usually home and shell, 0–3 SSH keys: 15 % none, 50 % one, 25 % two, 10 % three) "
        f"— about {first.page_bytes_per_user if first else 0:,.0f} bytes of JSON per user in the listing. "
        f"SSH keys are drawn from a pool of {org.get('key_pool', '?')} distinct real keys ({key_types}), each with "
        "a per-user comment, so many users share a key body: a validation cache keyed on the key would be "
        "unrealistically effective here. Invalid records: 0.3 % of N by default "
        f"({', '.join(str(x.org.get('invalid')) for x in result.sizes)}), 80 % of them among the configured groups' "
        "members: bad names (upper case, e-mail, too long, digits), uid 0, 65534, 999 or not a number, gid missing "
        "or 0, no CoreWeave extension, relative home, duplicated names and uids (both parties dropped), inactive, "
        "an unlisted shell (replaced) and broken SSH keys (dropped); each configured group also lists two ids that "
        "resolve to nothing, and one a nested group.",
        "",
    ]
    for x in result.sizes:
        kinds = x.org.get("expected", {}).get("invalid_kinds_among_members", {})
        partners = x.org.get("expected", {}).get("duplicate_partners", 0)
        sizes = x.org.get("configured_group_sizes", {})
        out += [f"- N = {x.users:,}: {x.org.get('invalid')} invalid records, {sum(kinds.values())} among the members "
                f"({', '.join(f'{k} {v}' for k, v in kinds.items())}); "
                f"{partners} valid members dropped as duplicate partners; "
                f"configured group sizes {', '.join(f'{k} {v:,}' for k, v in sizes.items())}"]
    out.append("")
    return out
