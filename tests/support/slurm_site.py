"""The slurm-sync site around a real slurmdbd (support.slurm_harness), for tests/slurm and
tests/slurm/bench_sync.py. The fixtures built on it (``stack``, ``dbd``, ``org``, ``iam``,
``site``) are in tests/slurm/conftest.py.

:func:`make_org`  a SCIM organisation from group -> member names.
:class:`Site`     a FakeIAM organisation and an nsscache.conf for it; ``site.sync(...)`` runs the
                  installed ``nsscache-coreweave slurm-sync`` as a subprocess.
:func:`wrap`      points the site's ``coreweave_slurm_sacctmgr`` at a wrapper recording every
                  sacctmgr call; :func:`calls` and :func:`writes` read its log back.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from support.fakeiam import FakeIAM
from support.slurm_harness import SlurmStack, which

EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
TOKEN = "cw-slurm-test-token"
CLI = Path(sys.executable).parent / "nsscache-coreweave"


def make_org(groups: Dict[str, Sequence[str]], extra_users: Sequence[str] = ()) -> dict:
    """A SCIM organisation: every named user active with a POSIX name/uid/gid, each
    group with its POSIX name, gid and members (by id)."""
    names = sorted({u for members in groups.values() for u in members} | set(extra_users))
    users = []
    for number, name in enumerate(names):
        users.append({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", EXT],
            "id": f"id-{name}",
            "userName": f"{name}@example.com",
            "displayName": name.title(),
            "active": True,
            EXT: {"sunkPosixUsername": name, "sunkPosixUid": 20000 + number, "sunkPosixGid": 20000 + number},
        })
    group_list = []
    for number, (group, members) in enumerate(groups.items()):
        group_list.append({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": f"gid-{group}",
            "displayName": group,
            "sunkPosixGroupName": group,
            "sunkPosixGid": 30000 + number,
            "members": [{"value": f"id-{m}", "type": "User"} for m in members],
        })
    return {"Users": users, "Groups": group_list}


@dataclass
class Site:
    root: Path
    iam: FakeIAM
    stack: SlurmStack
    groups: Sequence[str]
    extra: str = ""
    env: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        token = self.root / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        for name in ("passwd", "group"):
            (self.root / name).write_text("")
        self.configure()

    @property
    def conf(self) -> Path:
        return self.root / "nsscache.conf"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def configure(self, extra: Optional[str] = None, groups: Optional[Sequence[str]] = None) -> None:
        if extra is not None:
            self.extra = extra
        if groups is not None:
            self.groups = groups
        self.conf.write_text(
            "[DEFAULT]\n"
            "source = coreweave\n"
            "cache = files\n"
            "maps = passwd, group\n"
            f"timestamp_dir = {self.root / 'state'}\n"
            f"files_dir = {self.root}\n"
            "files_cache_filename_suffix = cache\n"
            f"coreweave_base_url = {self.iam.base_url}\n"
            f"coreweave_token_file = {self.root / 'token'}\n"
            f"coreweave_groups = {', '.join(self.groups)}\n"
            f"coreweave_state_dir = {self.state_dir}\n"
            f"coreweave_local_passwd = {self.root / 'passwd'}\n"
            f"coreweave_local_group = {self.root / 'group'}\n"
            "coreweave_allowed_shells = /bin/bash\n"
            "coreweave_retries = 0\n"
            + self.extra
        )

    def sync(self, *args: str, env: Optional[Dict[str, str]] = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        """``nsscache-coreweave -c <conf> slurm-sync ARGS`` as a subprocess, like cron would."""
        run_env = {k: v for k, v in self.stack.env.items() if not k.startswith("NSSCACHE_")}
        run_env.update(env or {})
        return subprocess.run([str(CLI), "-c", str(self.conf), "slurm-sync", *args], capture_output=True,
                              text=True, env=run_env, timeout=timeout, stdin=subprocess.DEVNULL)


# --- recording sacctmgr calls ----------------------------------------------------------------

MARKER = "nsscache-coreweave"
WRAPPER = """#!/bin/sh
# Records argv (one line, fields separated by US), then runs the real sacctmgr.
for a in "$@"; do printf '%s\\037' "$a"; done >> "{log}"
echo >> "{log}"
# sacctmgr runs with a cleaned environment: the failure to inject is read from a file.
fail_on=$(cat "{log}.fail-on" 2>/dev/null)
if [ -n "$fail_on" ]; then
    case "$*" in *"$fail_on"*)
        echo "sacctmgr: error: injected failure" >&2; exit 1;;
    esac
fi
exec {prefix}"{sacctmgr}" "$@"
"""


def wrap(site, prefix: str = "") -> Path:
    """Point coreweave_slurm_sacctmgr at a recording wrapper; returns its log."""
    log = site.root / "sacctmgr.log"
    script = site.root / ("sacctmgr-as-nobody" if prefix else "sacctmgr-recording")
    script.write_text(WRAPPER.format(log=log, prefix=prefix, sacctmgr=which("sacctmgr")))
    script.chmod(0o755)
    site.configure(site.extra + f"coreweave_slurm_sacctmgr = {script}\n")
    return log


def calls(log: Path) -> List[List[str]]:
    if not log.exists():
        return []
    return [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines() if line]


def writes(log: Path) -> List[List[str]]:
    return [c for c in calls(log) if c[:1] == ["-i"]]


def transactions(stack) -> int:
    """Rows in slurmdbd's transaction log: every modification adds some."""
    return int(stack.mysql(f"SELECT COUNT(*) FROM slurm_acct_{stack.dbd_count}.txn_table").strip())


def managed_view(stack):
    """account -> users, for the accounts carrying the marker."""
    accounts = stack.accounts()
    return {a: users for a, users in stack.associations().items() if accounts.get(a, ("",))[0] == MARKER}
