"""Benchmark: ``nsscache-coreweave slurm-sync`` with 10,000 members in 5 accounts
against a real slurmdbd (MariaDB at its default durability, munge), started as in
the tests (support.slurm_harness.SlurmStack). Not collected by pytest; run it by hand from
the checkout, with tests/ on the path for the helpers (tests/support):

    make install
    PYTHONPATH=tests .venv/bin/python tests/slurm/bench_sync.py [--members 10000] [--accounts 5] [--leavers 20]

It times, each as the wall time of the whole command (IAM listing included):

1. the first sync (every account, user and association created);
2. a second sync (nothing to do: reads only);
3. a sync after ``--leavers`` members left their group (associations removed);

and counts the sacctmgr calls of each (a recording wrapper), printing one
Markdown table. Members are spread round-robin over the accounts (2,000 each).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

try:
    from support.fakeiam import FakeIAM
    from support.slurm_harness import SlurmStack, which
    from support.slurm_site import TOKEN, Site, make_org
except ModuleNotFoundError as missing:
    if missing.name != "support":
        raise
    sys.exit("tests/support is not on the path: PYTHONPATH=tests .venv/bin/python tests/slurm/bench_sync.py")

WRAPPER = """#!/bin/sh
printf '%s\n' "$1" >> "{log}"
exec "{sacctmgr}" "$@"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--leavers", type=int, default=20)
    args = parser.parse_args()

    names = [f"u{i:05d}" for i in range(args.members)]
    groups = {f"team{k}": names[k::args.accounts] for k in range(args.accounts)}
    stack = SlurmStack(fast_storage=False)
    rows = []
    try:
        stack.start()
        stack.start_dbd()
        with FakeIAM(make_org(groups), token=TOKEN) as iam, tempfile.TemporaryDirectory() as tmp:
            site = Site(Path(tmp) / "site", iam, stack, list(groups), extra="coreweave_page_size = 1000\n")
            log = Path(tmp) / "calls.log"
            wrapper = Path(tmp) / "sacctmgr"
            wrapper.write_text(WRAPPER.format(log=log, sacctmgr=which("sacctmgr")))
            wrapper.chmod(0o755)
            site.configure(site.extra + f"coreweave_slurm_sacctmgr = {wrapper}\n")

            def run(label: str, *extra: str) -> None:
                log.write_text("")
                started = time.monotonic()
                result = site.sync(*extra, timeout=3600)
                elapsed = time.monotonic() - started
                if result.returncode != 0:
                    raise SystemExit(f"{label}: exit {result.returncode}\n{result.stderr[-3000:]}")
                calls = log.read_text().split()
                rows.append((label, elapsed, len(calls), sum(1 for c in calls if c == "-i")))
                print(f"{label}: {elapsed:.1f} s, {len(calls)} sacctmgr calls", file=sys.stderr)

            run(f"first sync: {args.members:,} members, {args.accounts} accounts")
            assoc = stack.associations()
            assert all(assoc[g] == set(m) for g, m in groups.items()), "associations differ from IAM"
            run("second sync (nothing to do)")
            leavers = set(names[: args.leavers])
            iam.set_org(make_org({g: [m for m in ms if m not in leavers] for g, ms in groups.items()},
                                 extra_users=sorted(leavers)))
            run(f"{args.leavers} members leave their group", "--accept-shrink")
    finally:
        stack.close()

    load = os.getloadavg()
    print(f"Machine: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    print()
    print("| run | wall time | sacctmgr calls | of which modifying |")
    print("|---|---|---|---|")
    for label, elapsed, calls, writes in rows:
        print(f"| {label} | {elapsed:.1f} s | {calls} | {writes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
