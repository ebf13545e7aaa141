"""The "Many nodes (issue 15)" section of docs/benchmarks.md: targets, tables, checks."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, List, Optional, Tuple

from .tables import Target, mb, md_table, med, text_table, yes

if TYPE_CHECKING:  # pragma: no cover
    from .many import ManyResult, Measured, Round
    from .runner import BenchResult, SizeResult

__all__ = ["targets", "console", "markdown", "MAX_SHARE"]

MAX_SHARE = 0.1  # a node's refresh from the mirror against a direct sync: wall time and bytes
MAX_DISCOVERY = 1
REFRESH_REQUESTS = 6  # manifest.json, the generation's signature, four maps
UNCHANGED_REQUESTS = 2  # manifest.json, the generation's signature (the maps are the node's already)


def _parts(result: "BenchResult") -> Tuple[Optional["ManyResult"], Optional["SizeResult"]]:
    many = result.many
    if many is None:
        return None, None
    return many, next((s for s in result.sizes if s.users == many.users), None)


def _bytes_med(runs: List["Measured"]) -> float:
    return statistics.median(r.nginx.bytes_sent for r in runs if r.nginx)


def _listing(requests: dict) -> int:
    return requests.get("Users", 0) + requests.get("Groups", 0)


def one_listing(requests: dict, expected: int) -> bool:
    """The publisher's one listing: ⌈users/page⌉ + ⌈groups/page⌉, at most one discovery request besides."""
    return _listing(requests) == expected and requests.get("other", 0) <= MAX_DISCOVERY


def idle_ok(run: "Measured") -> bool:
    return run.nginx is not None and run.nginx.requests == 1 and run.nginx.statuses == {"304": 1}


def _nodes_iam(r: "Round") -> int:
    return r.iam_total - (r.publish.iam_total if r.publish else 0)


def targets(result: "BenchResult") -> List[Target]:
    many, size = _parts(result)
    if many is None or size is None:
        return [Target("many nodes (issue 15)", "not run (--no-many-nodes, or --many-nodes-at not among --sizes)",
                       None)]
    wall = med(many.refresh, "wall") / med(size.sync, "wall")
    direct_bytes = statistics.median(r.body_bytes for r in size.sync)
    share = _bytes_med(many.refresh) / direct_bytes
    first, second = many.rounds[0], many.rounds[1]
    idle = many.idle[0].nginx
    nodes_iam = sum(r.iam_total for r in many.refresh + many.idle) + sum(_nodes_iam(r) for r in many.rounds)
    at = f"at {many.users:,} users"
    return [
        Target(f"a node's refresh from the mirror fetching every map / a direct sync ≤ {MAX_SHARE:g} {at} "
               "(median wall time)",
               f"{wall:.3f} ({med(many.refresh, 'wall'):.2f} s / {med(size.sync, 'wall'):.2f} s)", wall <= MAX_SHARE),
        Target(f"its bytes / a direct sync's ≤ {MAX_SHARE:g} (nginx's bytes_sent, headers included, / the SCIM "
               "server's response bodies)", f"{share:.3f} ({_bytes_med(many.refresh) / 1e6:.2f} MB / "
               f"{direct_bytes / 1e6:.1f} MB)", share <= MAX_SHARE),
        Target("an idle refresh (nothing new published): exactly one request, a 304, in every run",
               f"{_statuses(many.idle)}, {idle.bytes_sent if idle else 0} bytes (headers only)",
               all(idle_ok(r) for r in many.idle)),
        Target(f"IAM requests per fleet round of {first.nodes} nodes = one listing, the publisher's",
               f"after a publish: {first.iam_total} ({_listing(first.iam_requests)} listing, expected "
               f"{many.expected_listing}); nothing new: {second.iam_total}",
               one_listing(first.iam_requests, many.expected_listing) and second.iam_total == 0),
        Target("no IAM request from any node (single refreshes, idle refreshes, both fleet rounds)",
               f"{nodes_iam}", nodes_iam == 0),
        Target(f"fleet round with nothing new: every one of {second.nodes} nodes sends one request, a 304",
               f"{_statuses([second])}; {_per_node(second)}",
               second.per_node == {"mirror/3xx 1": second.nodes} and second.nginx.statuses == {"304": second.nodes}
               and second.failures == 0),
    ]


def _spread(values: List[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _run_row(name: str, runs: List, requests: str, transferred: float) -> List[str]:
    return [name, _spread([r.wall for r in runs]), f"{med(runs, 'cpu'):.2f}",
            f"{max(mb(r.maxrss_kb) for r in runs):.0f}", requests, f"{transferred:,.0f}"]


def _per_node(r: "Round") -> str:
    return "; ".join(f"{k} ({v:,} nodes)" for k, v in sorted(r.per_node.items()))


def _statuses(runs: list) -> str:
    """Requests and their statuses, e.g. "6 (200 × 6)", of Measured runs or Rounds."""
    shapes = sorted({(r.nginx.requests, tuple(sorted(r.nginx.statuses.items()))) for r in runs if r.nginx})
    return " / ".join(f"{n} ({', '.join(f'{s} × {c}' for s, c in statuses)})" for n, statuses in shapes)


def run_rows(many: "ManyResult", size: "SizeResult") -> Tuple[List[str], List[List[str]]]:
    head = ["run", "wall s", "CPU s", "peak RSS MB (max)", "requests", "bytes transferred"]
    direct = f"{'/'.join(sorted({str(r.listing_requests + r.other_requests) for r in size.sync}))} to IAM"
    return head, [
        _run_row("direct sync (`nsscache update --full`, IAM)", size.sync, direct, med(size.sync, "body_bytes")),
        _run_row("floor (download and parse the same pages)", size.floor, direct, med(size.floor, "body_bytes")),
        _run_row("publish (`nsscache-coreweave publish`, IAM)", many.publish,
                 f"{'/'.join(sorted({str(r.iam_total) for r in many.publish}))} to IAM",
                 statistics.median(r.iam_bytes for r in many.publish)),
        _run_row("node refresh after a publish of an unchanged listing (mirror, nginx)", many.unchanged,
                 _statuses(many.unchanged), _bytes_med(many.unchanged)),
        _run_row("node refresh fetching every map (mirror, nginx)", many.refresh, _statuses(many.refresh),
                 _bytes_med(many.refresh)),
        _run_row("node refresh, nothing new (mirror, nginx)", many.idle, _statuses(many.idle),
                 _bytes_med(many.idle)),
    ]


def _med_ratio(runs: list, base: list, attr: str) -> float:
    return med(runs, attr) / med(base, attr)


def ratio_rows(many: "ManyResult", size: "SizeResult") -> Tuple[List[str], List[List[str]]]:
    head = ["ratio", "wall", "CPU", "bytes"]
    sync_bytes = med(size.sync, "body_bytes")
    refresh_wall, refresh_bytes = med(many.refresh, "wall") / med(size.sync, "wall"), _bytes_med(many.refresh)
    return head, [
        ["publish / floor", f"**{med(many.publish, 'wall') / med(size.floor, 'wall'):.2f}**",
         f"{med(many.publish, 'cpu') / med(size.floor, 'cpu'):.2f}",
         f"{statistics.median(r.iam_bytes for r in many.publish) / med(size.floor, 'body_bytes'):.2f}"],
        ["publish / direct sync", f"{med(many.publish, 'wall') / med(size.sync, 'wall'):.2f}",
         f"{med(many.publish, 'cpu') / med(size.sync, 'cpu'):.2f}",
         f"{statistics.median(r.iam_bytes for r in many.publish) / sync_bytes:.2f}"],
        ["node refresh, unchanged listing / direct sync", f"{_med_ratio(many.unchanged, size.sync, 'wall'):.3f}",
         f"{_med_ratio(many.unchanged, size.sync, 'cpu'):.3f}", f"{_bytes_med(many.unchanged) / sync_bytes:.5f}"],
        ["node refresh fetching every map / direct sync", f"**{refresh_wall:.3f}**",
         f"{med(many.refresh, 'cpu') / med(size.sync, 'cpu'):.3f}", f"**{refresh_bytes / sync_bytes:.4f}**"],
        ["idle node refresh / direct sync", f"{med(many.idle, 'wall') / med(size.sync, 'wall'):.3f}",
         f"{med(many.idle, 'cpu') / med(size.sync, 'cpu'):.3f}", f"{_bytes_med(many.idle) / sync_bytes:.7f}"],
    ]


def fleet_rows(many: "ManyResult") -> Tuple[List[str], List[List[str]]]:
    head = ["round", "nodes", "at a time", "round wall s", "node wall s median (max)", "node CPU s total (per node)",
            "nginx CPU s", "IAM requests", "nginx requests", "nginx bytes (per node)", "each node asked", "failed"]
    rows = []
    for r in many.rounds:
        rows.append([
            r.name + (f" (publish {r.publish.wall:.2f} s first)" if r.publish else ""), f"{r.nodes:,}",
            str(r.workers), f"**{r.wall:.1f}**", f"{statistics.median(r.node_walls):.2f} ({max(r.node_walls):.2f})",
            f"{r.node_cpu:.1f} ({r.node_cpu / r.nodes:.2f})", f"{r.nginx_cpu:.2f}",
            f"**{r.iam_total}**" + (" (the publisher's)" if r.publish else ""),
            f"{r.nginx.requests:,} ({', '.join(f'{s} × {c:,}' for s, c in sorted(r.nginx.statuses.items()))})",
            f"{r.nginx.bytes_sent:,} ({r.nginx.bytes_sent / r.nodes:,.0f})", _per_node(r), str(r.failures),
        ])
    return head, rows


def checks(many: "ManyResult", size: "SizeResult") -> List[str]:
    expected = size.org["expected"]
    nodes = many.unchanged + many.refresh + many.idle
    first = many.rounds[0]
    bundle = sum(many.bundle.values())
    whole = all(r.nginx and r.nginx.requests == REFRESH_REQUESTS and r.nginx.statuses == {"200": REFRESH_REQUESTS}
                for r in many.refresh)
    fleet = first.nginx.requests == first.nodes * REFRESH_REQUESTS and first.nginx.body_bytes == first.nodes * bundle
    only_manifest = all(r.nginx and r.nginx.requests == UNCHANGED_REQUESTS
                        and r.nginx.statuses == {"200": UNCHANGED_REQUESTS} for r in many.unchanged)
    return [
        f"after a publish of an unchanged listing, the node fetched the new manifest and its signature only: "
        f"{yes(only_manifest)}",
        f"without its kept bundle, the node fetched manifest.json, the generation's signature and the four maps, "
        f"each once: {yes(whole)}",
        f"the node's caches equal the direct sync's (first line, the run marker, aside) after every refresh: "
        f"{yes(all(r.same_as_direct for r in nodes))}; line counts "
        f"{'/'.join(str(nodes[0].lines.get(m, 0)) for m in ('passwd', 'group', 'shadow', 'sshkey'))} "
        f"(expected {'/'.join(str(expected[m]) for m in ('passwd', 'group', 'shadow', 'sshkey'))})",
        f"nginx's body bytes equal what each node counted: "
        f"{yes(all(r.nginx and r.nginx.body_bytes == r.node_bytes for r in nodes))}",
        f"fleet after a publish: {first.nodes} nodes × {REFRESH_REQUESTS} requests, {bundle:,} body bytes each "
        f"(the bundle: {', '.join(f'{k} {v:,}' for k, v in many.bundle.items())}): "
        f"{yes(fleet)}"
        f"; every node exited 0 in both rounds: {yes(all(r.failures == 0 for r in many.rounds))}",
    ]


def console(result: "BenchResult") -> List[str]:
    many, size = _parts(result)
    out = ["", "many nodes (issue 15):"]
    if many and size:
        out += [text_table(*run_rows(many, size)), "", text_table(*ratio_rows(many, size)), "",
                text_table(*fleet_rows(many)), ""]
        out += [f"  {c}" for c in checks(many, size)]
    out += ["targets (issue 15):"] + [f"  {t.mark:16} {t.name}: {t.measured}" for t in targets(result)]
    return out


def markdown(result: "BenchResult") -> List[str]:
    many, size = _parts(result)
    out = ["## Many nodes (issue 15)", ""]
    out += [md_table(["target", "measured", "result"], [[t.name, t.measured, t.mark] for t in targets(result)]), ""]
    if many is None or size is None:
        return out
    s = result.settings
    out += [
        f"At {many.users:,} users ({many.members:,} members of the configured groups), the same server and "
        f"organisation as the direct syncs above; medians of {len(many.publish)} runs each (min–max in brackets), "
        "after one unmeasured publish and node refresh; then, in turn, a publish, the node's refresh, its refresh "
        "without its kept bundle and its idle refresh.",
        "",
        md_table(*run_rows(many, size)),
        "",
        md_table(*ratio_rows(many, size)),
        "",
        f"A fleet of {many.rounds[0].nodes} nodes on this machine, {many.mode}, {many.rounds[0].workers} at a time, "
        "from one nginx (2 workers):",
        "",
        md_table(*fleet_rows(many)),
        "",
        "Checks of the measurement itself:",
        "",
    ] + [f"- {c}" for c in checks(many, size)] + [""] + _described(s)
    return out


def _described(settings) -> List[str]:
    return [
        "What is measured:",
        "",
        "- **publish**: `nsscache-coreweave -c publisher.conf publish`, the direct sync's nsscache.conf (its own "
        "state directory) plus `coreweave_publish_dir` and `coreweave_publish_key` (a fresh key from "
        "`ssh-keygen -t ed25519`), under `benchmarks/launch.py` as the sync; requests and bytes are the SCIM "
        "server's. The organisation does not change between publishes: each publish writes a new generation whose "
        "manifest names the same map contents (the publisher re-uses the files when no entry changed).",
        "- **node refresh**: the stock `nsscache -c node.conf update --full` on a node in mirror mode "
        "(`coreweave_mirror_url` = a real nginx, Debian's, started by `tests/support/nginx.py` on 127.0.0.1 and "
        "serving the publish directory; `coreweave_mirror_public_key` = the publisher's `.pub`; the direct sync's "
        "node-local rules: its shells, empty local files, `coreweave_max_shrink = 1`; every published group) right "
        "after a publish: it holds the previous generation, sends a conditional GET of `manifest.json`, gets a 200, "
        "fetches the generation's signature and, since the maps are the same, nothing else. Then, with its kept "
        "bundle (`<state_dir>/coreweave-mirror`) removed, again: it fetches `manifest.json`, the signature and all "
        "four maps, as after a publish that changed every map (every map's first line names the run that wrote it, "
        "so any change in IAM changes all four): the goal's case. Requests and bytes "
        "come from nginx's access log (`$bytes_sent`: status line, headers and body), compared with the response "
        "bodies of one direct sync (the SCIM server's count; headers not counted there: the ratio is pessimistic).",
        "- **idle refresh**: the same command with nothing new published: one conditional GET, a 304; the node "
        "re-uses its kept bundle, applies its rules and hands nsscache the same maps.",
        "- **fleet**: F fresh nodes (each its own nsscache.conf, caches, state and lockfile), each the stock "
        "`nsscache update --full` in its own process (stdin a pty), W at a time from a thread pool, after one "
        "publish and then with nothing new; IAM requests are the SCIM server's counter over the round (the "
        "round after a publish includes it), node CPU the runner's `RUSAGE_CHILDREN` over the round, nginx CPU "
        "its master's and workers' `/proc/<pid>/stat`. A fresh node sends the same requests as one holding the "
        "previous generation (its first GET is not conditional, and is answered 200 either way). "
        "The fleet shares the machine with nginx and the SCIM server: wall times grow with F / cores, not with "
        "anything on the network side.",
        f"- `make bench` runs this part by default, at N = {settings.many_at:,} here (`--many-nodes-at`, default "
        "100,000), with a fleet of `--fleet-nodes` (default 200), `--fleet-workers` at a time (default 2 × the usable "
        "cores); `--no-many-nodes` skips it.",
        "",
    ]
