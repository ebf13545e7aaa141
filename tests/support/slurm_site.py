"""Fixtures for the slurm-sync tests against a real slurmdbd (see slurm_harness.py).

Not a conftest.py: tests/conftest.py is imported as ``conftest`` by other tests, and a
second one would shadow it. Test modules import the fixtures by name.

``stack``   munged + MariaDB, started once per test module, stopped by pid at its end.
``dbd``     a fresh slurmdbd and database per test, with the cluster registered.
``site``    a FakeIAM organisation and an nsscache.conf for it; ``site.sync(...)``
            runs the installed ``nsscache-coreweave slurm-sync`` as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_harness import CLUSTER, SlurmStack  # noqa: E402
from fakeiam import FakeIAM  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

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

    def sync(self, *args: str, env: Optional[Dict[str, str]] = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """``nsscache-coreweave -c <conf> slurm-sync ARGS`` as a subprocess, like cron would."""
        run_env = {k: v for k, v in self.stack.env.items() if not k.startswith("NSSCACHE_")}
        run_env.update(env or {})
        return subprocess.run([str(CLI), "-c", str(self.conf), "slurm-sync", *args], capture_output=True,
                              text=True, env=run_env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def stack():
    if not CLI.exists():
        pytest.fail(f"{CLI} is missing: run the tests with `make test` (installs the package into .venv)",
                    pytrace=False)
    s = SlurmStack()
    try:
        s.start()
    except Exception as e:
        pytest.fail(f"could not start munged/MariaDB: {e}", pytrace=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def dbd(stack):
    try:
        stack.start_dbd()
    except Exception as e:
        pytest.fail(f"could not start slurmdbd: {e}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop_dbd()


@pytest.fixture
def org():
    return make_org({
        "ml-team": ["alice", "bob", "carol"],
        "hpc": ["bob", "dave"],
        "other": ["erin"],
    })


@pytest.fixture
def iam(org):
    with FakeIAM(org, token=TOKEN) as server:
        yield server


@pytest.fixture
def site(tmp_path, iam, dbd):
    return Site(tmp_path / "site", iam, dbd, ["ml-team", "hpc"])


__all__ = ["CLUSTER", "TOKEN", "make_org", "Site", "stack", "dbd", "org", "iam", "site"]
