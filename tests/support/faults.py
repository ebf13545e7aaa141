"""The vocabulary of the fault table in tests/integration/test_faults.py (also used by
test_security.py): the demo organisation and edits to it, the expected caches and changes to
them, :class:`Scenario` (one row of the table) and what its hooks see (:class:`Ctx`), and running
the stock nsscache on a :class:`~support.node.Node` configured for a scenario."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from support.fakeiam import FakeIAM, Fault
from support.keys import dsa_key, ed25519_key, rsa_key
from support.node import EXT, MAPS, Node, expected_caches

REPO = Path(__file__).resolve().parents[2]
DEMO_ORG = json.loads((REPO / "demo" / "org.json").read_text())

# Every faulty run gets these unless its scenario says otherwise: small
# pages (so there is a page 2 and 3 of Users), one retry, short waits.
FAULT_SETTINGS = {
    "page_size": "2",
    "retries": "1",
    "max_retry_wait": "1",
    "timeout": "5",
    "deadline": "20",
}
# The node's own accounts (coreweave_local_passwd / coreweave_local_group):
LOCAL_PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
    "sshd:x:105:65534::/run/sshd:/usr/sbin/nologin\n"
    "localadmin:x:1000:1000:Local Admin:/home/localadmin:/bin/bash\n"
)
LOCAL_GROUP = "root:x:0:\nsudo:x:27:localadmin\ndocker:x:999:\nlocaladmin:x:1000:\nslurm:x:64030:\n"

# What a scenario's run ends in.
WHOLE_RUN = "whole run refused"
RETRIED = "recovered, written"
REJECTED = "entry rejected"
CHANGED = "entry kept, changed"
ACCEPTED = "accepted by the operator"
KINDS = (WHOLE_RUN, RETRIED, REJECTED, CHANGED, ACCEPTED)
KIND_MEANING = {
    WHOLE_RUN: "exit 75 or 4; every cache, index and timestamp file byte-identical to the good run's before",
    RETRIED: "exit 0; the fault was retried or tolerated; exactly the caches of a fault-free run",
    REJECTED: "exit 0; exactly the caches of a fault-free run: the bad entry (every party to a duplicate) absent",
    CHANGED: "exit 0; the entry present with the bad part dropped (a key), replaced (a shell) or cleaned (GECOS)",
    ACCEPTED: "exit 0; an intended shrink written to all four caches after the operator's one-shot override",
}


# --- the organisation and its expected caches ---------------------------------


def user_named(org: dict, name: str) -> dict:
    return next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)


def group_named(org: dict, name: str) -> dict:
    return next(g for g in org["Groups"] if g["sunkPosixGroupName"] == name)


def mallory(uid=20100, gid=20100, name="mallory", *, id="u-mallory", display="Mallory Mal", **extension) -> dict:
    """A well-formed IAM user: each scenario breaks one thing about her."""
    fields = {"sunkPosixUsername": name, "sunkPosixUid": uid, "sunkPosixGid": gid, "sunkSshKeys": []}
    fields.update(extension)
    return {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", EXT],
        "id": id,
        "userName": "mallory@example.com",
        "displayName": display,
        "active": True,
        EXT: fields,
    }


def add_member(org: dict, group: str, user_id: str, kind: str = "User") -> None:
    group_named(org, group)["members"].append({"value": user_id, "type": kind})


def adding(resource: dict, *, to: str = "slurm-users", top: Optional[dict] = None) -> Callable[[dict], None]:
    """An org edit: add ``resource`` (a user, with ``top`` merged into its
    top level) as a member of group ``to``."""

    def edit(org: dict) -> None:
        user = {**resource, **(top or {})}
        org["Users"].append(user)
        add_member(org, to, user["id"])

    return edit


def adding_group(name: str, gid, members=(), group_id: str = "g-extra") -> Callable[[dict], None]:
    def edit(org: dict) -> None:
        org["Groups"].append({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": group_id,
            "displayName": name,
            "sunkPosixGroupName": name,
            "sunkPosixGid": gid,
            "members": [{"value": user_named(org, m)["id"], "type": "User"} for m in members],
        })

    return edit


def editing(path: Callable[[dict], dict], **changes) -> Callable[[dict], None]:
    def edit(org: dict) -> None:
        path(org).update(changes)

    return edit


def both(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(org: dict) -> None:
        for e in edits:
            e(org)

    return edit


Caches = Dict[str, str]


def fault_free() -> Caches:
    return expected_caches(DEMO_ORG)


def same(caches: Caches) -> Caches:
    return caches


def without_users(*names: str) -> Callable[[Caches], Caches]:
    def expect(caches: Caches) -> Caches:
        out = {}
        for name, text in caches.items():
            lines = []
            for line in text.splitlines():
                if name == "group":
                    head, _, members = line.rpartition(":")
                    line = head + ":" + ",".join(m for m in members.split(",") if m and m not in names)
                elif line.split(":", 1)[0] in names:
                    continue
                lines.append(line)
            out[name] = "".join(f"{line}\n" for line in lines)
        return out

    return expect


def without_groups(*names: str) -> Callable[[Caches], Caches]:
    def expect(caches: Caches) -> Caches:
        kept = [line for line in caches["group"].splitlines() if line.split(":", 1)[0] not in names]
        return {**caches, "group": "".join(f"{line}\n" for line in kept)}

    return expect


def with_mallory(passwd_line: str, keys: Tuple[str, ...] = ()) -> Callable[[Caches], Caches]:
    """The fault-free caches plus mallory (last by name) in slurm-users."""

    def expect(caches: Caches) -> Caches:
        group = caches["group"].replace("slurm-users:x:30001:alice,bob,erin,frank",
                                        "slurm-users:x:30001:alice,bob,erin,frank,mallory")
        return {
            "passwd": caches["passwd"] + passwd_line + "\n",
            "group": group,
            "shadow": caches["shadow"] + "mallory:*:::::::\n",
            "sshkey": caches["sshkey"] + (f"mallory:{list(keys)!r}\n" if keys else ""),
        }

    return expect


def homes_from_attributes(caches: Caches) -> Caches:
    """Without coreweave_home_directory: alice's attribute, /home/<name> for the rest."""
    passwd = caches["passwd"]
    for name in ("bob", "erin", "frank"):
        passwd = passwd.replace(f":/mnt/home/{name}:", f":/home/{name}:")
    return {**caches, "passwd": passwd}


def then(*steps: Callable[[Caches], Caches]) -> Callable[[Caches], Caches]:
    def expect(caches: Caches) -> Caches:
        for step in steps:
            caches = step(caches)
        return caches

    return expect


def key(kind: str) -> str:
    """Real public keys, made once per run (support.keys)."""
    return {
        "ed25519": ed25519_key("mallory"),
        "ed25519-b": ed25519_key("mallory-b"),
        "rsa-1024": rsa_key(1024),
        "dsa": dsa_key(),
    }[kind]


# --- the two ways a run fetches its users (coreweave_fetch = auto) -----------------


@dataclass(frozen=True)
class FetchPath:
    """The server a scenario runs against, and the settings that go with it, for one of
    the two ways ``coreweave_fetch = auto`` (the default) fetches users."""

    name: str  # what the run record's ``fetch`` says after an accepted run: "full" or "members"
    iam: Dict[str, object]  # FakeIAM keyword arguments, beside the organisation and the token
    settings: Dict[str, str]  # coreweave_* for every run, under the scenario's own


# The fake IAM's defaults: no /ServiceProviderConfig, so every user is listed (the
# attributes= a run sends are ignored: whole users come back).
FULL_LISTING = FetchPath("full", {}, {})
# The same organisation from a server that advertises and honours id filters and
# attributes=: the allowed groups' members are one batch (coreweave_page_size 10, at
# most 6 members here), which the server pages by 2 as it pages the full listing, so
# "Users page n" is page n of the filtered listing, and of the full listing after a fallback.
MEMBER_FETCH = FetchPath(
    "members",
    {"service_provider_config": True, "filter_supported": True, "filter_mode": "honour", "attributes_mode": "honour",
     "max_page_size": 2},
    {"page_size": "10"},
)


# --- a scenario: one row of the table ---------------------------------------------


@dataclass
class Ctx:
    """What a scenario's hooks see."""

    iam: FakeIAM
    other: FakeIAM  # a second server: where a redirect points
    node: Node
    result: Optional[subprocess.CompletedProcess] = None
    elapsed: float = 0.0
    path: FetchPath = FULL_LISTING


@dataclass(frozen=True)
class Scenario:
    id: str
    injected: str  # what is done to the run, for docs/faults.md
    kind: str  # one of KINDS
    status: int  # exit status of the run
    message: str  # in stderr; {base}: the server's base URL, {other}: the redirect target's host:port
    settings: Dict[str, str] = field(default_factory=dict)  # coreweave_* for the faulty run
    faults: Callable[[Ctx], List[Fault]] = lambda ctx: []
    org: Optional[Callable[[dict], None]] = None  # edits the organisation
    expect: Callable[[Caches], Caches] = same  # per-entry: the fault-free caches -> these
    groups: str = "slurm-users, slurm-admins"
    home_template: Optional[str] = "/mnt/home/%%u"
    prepare: Optional[Callable[[Ctx], None]] = None  # after the good run, before the faulty one
    check: Optional[Callable[[Ctx], None]] = None  # more assertions afterwards
    command: Tuple[str, ...] = ("nsscache", "update", "--full")
    env: Dict[str, str] = field(default_factory=dict)
    logged: int = 1  # per entry: how many lines carry the message (once per run; once per party to a duplicate)

    @property
    def deadline(self) -> float:
        return float({**FAULT_SETTINGS, **self.settings}["deadline"])

    def caches_text(self) -> str:
        return {
            WHOLE_RUN: "byte-identical",
            RETRIED: "written: exactly the fault-free caches",
            REJECTED: "the fault-free caches: the entry absent",
            CHANGED: "the entry present, changed as logged",
            ACCEPTED: "written: the smaller directory",
        }[self.kind]


# --- running a node ----------------------------------------------------------------


def configure(node: Node, scenario: Scenario, base_url: str, settings: Dict[str, str]) -> None:
    """nsscache.conf as Node.configure writes it, with the scenario's groups,
    home template and settings, and this node's own local accounts."""
    (node.root / "etc-passwd").write_text(LOCAL_PASSWD)
    (node.root / "etc-group").write_text(LOCAL_GROUP)
    values = {
        "base_url": base_url,
        "token_file": str(node.token_file),
        "groups": scenario.groups,
        "home_directory": scenario.home_template,
        "state_dir": str(node.root / "state"),
        "allowed_shells": "/bin/bash, /bin/zsh",
        "local_passwd": str(node.root / "etc-passwd"),
        "local_group": str(node.root / "etc-group"),
        **settings,
    }
    node.conf.write_text(
        "[DEFAULT]\n"
        "source = coreweave\n"
        "cache = files\n"
        f"maps = {', '.join(MAPS)}\n"
        f"timestamp_dir = {node.root / 'state'}\n"
        f"lockfile = {node.root / 'nsscache.lock'}\n"
        f"files_dir = {node.root / 'cache'}\n"
        "files_cache_filename_suffix = cache\n"
        + "".join(f"coreweave_{k} = {v}\n" for k, v in values.items() if v is not None)
    )


def run(node: Node, *command: str, env: Optional[Dict[str, str]] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """Like Node.run, with extra environment variables; the result carries
    ``elapsed`` (seconds)."""
    primary, secondary = pty.openpty()
    try:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("NSSCACHE_")}
        environ.update(env or {})
        start = time.monotonic()
        result = subprocess.run(
            [str(node.bin / command[0]), "-c", str(node.conf), *command[1:]],
            stdin=secondary, capture_output=True, text=True, env=environ, timeout=timeout,
        )
        result.elapsed = time.monotonic() - start
        return result
    finally:
        os.close(primary)
        os.close(secondary)


def cache_files(node: Node) -> Dict[str, bytes]:
    """Everything nsscache owns on the node: the cache directory (files and
    any leftover temporary directory) and the map timestamps."""
    found = {}
    for path in sorted((node.root / "cache").iterdir()):
        found[f"cache/{path.name}"] = path.read_bytes() if path.is_file() else b"<directory>"
    for path in sorted((node.root / "state").glob("timestamp-*")):
        found[f"state/{path.name}"] = path.read_bytes()
    return found


def read_caches(node: Node) -> Caches:
    return {name: node.cache(name) for name in MAPS}


def outcome(scenario: Scenario, result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}, {result.elapsed:.1f} s\n--- stderr\n{result.stderr[-6000:]}"
