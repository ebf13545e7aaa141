"""A deterministic synthetic CoreWeave IAM organisation (issue 5, item 1).

``Org(OrgSpec(users=100_000, groups=2_000, members=10_000, seed=1))`` describes N users
and G flat groups; the :data:`CONFIGURED_GROUPS` (the five groups a login node lists in
``coreweave_groups``) hold M distinct member users between them. Every resource is a
pure function of ``(spec, index)``: :meth:`Org.user` and :meth:`Org.group` build one
SCIM resource on demand, so the server can render any page without holding the whole
organisation in memory, and the same seed gives the same bytes on every machine.

Users look like CoreWeave IAM's (see demo/org.json; about 1.5 KB of JSON each): core
User attributes (name, emails, phone, title, locale ...), the enterprise extension
(employee number, cost centre, department, manager) and the CoreWeave extension with
the POSIX attributes and 0-3 SSH keys drawn from a pool of a few hundred real keys of
mixed types (:mod:`benchmarks.keys`), each with a per-user comment.

Invalid records (:data:`INVALID_KINDS`; default 0.3 % of N, most of them among the
members of the configured groups so that the package's policy must reject them): bad
names, uid/gid 0, nobody, out-of-range or non-numeric ids, missing gid, missing
extension, relative homes, duplicated names and uids (both parties are dropped),
inactive users, unlisted shells (replaced, kept), broken SSH keys (dropped, user kept).
The configured groups also carry a few members that do not resolve and one nested group.
:attr:`Org.expected` says how many lines each cache must get.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Tuple

from . import keys as keys_mod

__all__ = [
    "OrgSpec", "Org", "CONFIGURED_GROUPS", "SHELLS", "INVALID_KINDS", "EXT_CW", "EXT_ENTERPRISE",
    "CORE_USER", "CORE_GROUP", "default_invalid",
]

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
EXT_ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
EXT_CW = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
LOCATION = "https://api.coreweave.com/scim/cwbench"

# The groups a login node lists in coreweave_groups, with the share of members whose
# first group it is.
CONFIGURED_GROUPS: Tuple[Tuple[str, str, int], ...] = (
    ("slurm-users", "Slurm Users", 50),
    ("slurm-admins", "Slurm Admins", 4),
    ("gpu-h100", "GPU H100", 16),
    ("gpu-a100", "GPU A100", 15),
    ("ml-research", "ML Research", 15),
)
SHELLS = ("/bin/bash", "/bin/zsh", "/usr/bin/fish")
UID_BASE = 100_000
GROUP_GID_BASE = 5_000_000
SECOND_GROUP_PERCENT = 20  # members also in a second configured group
OTHER_GROUP_MAX_MEMBERS = 40

# kind -> (what it does to the record, whether the user still reaches passwd).
INVALID_KINDS: Dict[str, Tuple[str, bool]] = {
    "inactive": ("active: false", False),
    "upper_name": ("upper-case POSIX name", False),
    "email_name": ("e-mail-shaped POSIX name", False),
    "long_name": ("POSIX name longer than 32 characters", False),
    "digits_name": ("all-digit POSIX name", False),
    "uid_root": ("uid 0", False),
    "uid_nobody": ("uid 65534", False),
    "uid_low": ("uid 999 (below coreweave_min_uid)", False),
    "uid_text": ("uid '1e5' (not an integer)", False),
    "gid_missing": ("no gid", False),
    "gid_root": ("gid 0", False),
    "no_extension": ("no CoreWeave extension", False),
    "bad_home": ("relative home directory", False),
    "dup_name": ("POSIX name of another member (both dropped)", False),
    "dup_uid": ("uid of another member (both dropped)", False),
    "bad_shell": ("shell not in coreweave_allowed_shells (replaced, user kept)", True),
    "bad_keys": ("broken SSH keys (keys dropped, user kept)", True),
}
_DUPLICATES = ("dup_name", "dup_uid")
# The kinds that set one extension attribute to a fixed value: kind -> (attribute, value).
_SPOILED_VALUES: Dict[str, Tuple[str, object]] = {
    "uid_root": ("sunkPosixUid", 0),
    "uid_nobody": ("sunkPosixUid", 65534),
    "uid_low": ("sunkPosixUid", 999),
    "uid_text": ("sunkPosixUid", "1e5"),
    "gid_root": ("sunkPosixGid", 0),
    "bad_shell": ("sunkLoginShell", "/opt/evil/sh"),
}
# The kinds that replace the POSIX name (Org._spoiled_name).
_SPOILED_NAMES = frozenset({"upper_name", "email_name", "long_name", "digits_name", "dup_name"})
INVALID_MEMBER_PERCENT = 80

FIRST = (
    ("Alice", "alice"), ("Bob", "bob"), ("Carol", "carol"), ("Dmitri", "dmitri"), ("Erin", "erin"),
    ("Frank", "frank"), ("Grace", "grace"), ("Hiro", "hiro"), ("Ines", "ines"), ("José", "jose"),
    ("Kai", "kai"), ("Léa", "lea"), ("Mohammed", "mohammed"), ("Nadia", "nadia"), ("Oliver", "oliver"),
    ("Priya", "priya"), ("Quentin", "quentin"), ("Rosa", "rosa"), ("Søren", "soren"), ("Tomás", "tomas"),
    ("Uma", "uma"), ("Viktor", "viktor"), ("Wen", "wen"), ("Xavier", "xavier"), ("Yuki", "yuki"),
    ("Zoë", "zoe"), ("Björn", "bjorn"), ("Łukasz", "lukasz"), ("Ngọc", "ngoc"), ("Amélie", "amelie"),
    ("Chen", "chen"), ("Fatima", "fatima"),
)
LAST = (
    ("Smith", "smith"), ("Jones", "jones"), ("García", "garcia"), ("Müller", "muller"), ("Nguyễn", "nguyen"),
    ("O'Brien", "obrien"), ("Kowalski", "kowalski"), ("Tanaka", "tanaka"), ("Okafor", "okafor"),
    ("Rossi", "rossi"), ("Johansson", "johansson"), ("Dubois", "dubois"), ("Petrov", "petrov"),
    ("Sharma", "sharma"), ("Kim", "kim"), ("Silva", "silva"), ("Cohen", "cohen"), ("Haddad", "haddad"),
    ("Novák", "novak"), ("Fernández", "fernandez"), ("Wang", "wang"), ("Brown", "brown"),
    ("Van der Berg", "vanderberg"), ("Schäfer", "schafer"),
)
TITLES = ("ML Engineer", "Research Scientist", "Software Engineer", "Data Scientist", "SRE",
          "Infrastructure Engineer", "Engineering Manager", "Intern")
DEPARTMENTS = ("Research", "Training Infrastructure", "Inference", "Data", "Platform", "Applied ML")
DIVISIONS = ("Engineering", "Research", "Operations")
TIMEZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin", "Asia/Tokyo")
HOSTS = ("laptop", "desk", "workstation", "mbp", "yubikey", "ci", "jumphost")


def default_invalid(users: int) -> int:
    """0.3 % of the users: 30 at 10k, 300 at 100k, 3,000 at 1M."""
    return round(users * 0.003)


@dataclass(frozen=True)
class OrgSpec:
    users: int = 100_000
    groups: int = 2_000
    members: int = 10_000  # distinct users in at least one configured group
    seed: int = 1
    invalid: Optional[int] = None  # None: default_invalid(users)
    key_pool: int = keys_mod.DEFAULT_POOL_SIZE

    def __post_init__(self):
        if self.users < 1 or self.groups < len(CONFIGURED_GROUPS):
            raise ValueError(f"need at least 1 user and {len(CONFIGURED_GROUPS)} groups")
        if not 1 <= self.members <= self.users:
            raise ValueError(f"members ({self.members}) must be between 1 and users ({self.users})")
        if self.key_pool < len(keys_mod.CYCLE):
            raise ValueError(f"key_pool must be at least {len(keys_mod.CYCLE)}")

    @property
    def invalid_count(self) -> int:
        return default_invalid(self.users) if self.invalid is None else self.invalid


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _memberships(rng: random.Random, n: int, members: int) -> Tuple[List[List[int]], FrozenSet[int]]:
    """Each member's configured groups (one by weight, sometimes a second): the members of
    each configured group, and every member."""
    member_list = rng.sample(range(n), members)
    weights = [w for _, _, w in CONFIGURED_GROUPS]
    groups_of: Dict[int, List[int]] = {}
    for user in member_list:
        first = rng.choices(range(len(CONFIGURED_GROUPS)), weights)[0]
        chosen = [first]
        if rng.randrange(100) < SECOND_GROUP_PERCENT:
            second = rng.randrange(len(CONFIGURED_GROUPS))
            if second != first:
                chosen.append(second)
        groups_of[user] = chosen
    members_of: List[List[int]] = [[] for _ in CONFIGURED_GROUPS]
    for user in sorted(groups_of):
        for k in groups_of[user]:
            members_of[k].append(user)
    return members_of, frozenset(groups_of)


class Org:
    """The organisation of ``spec``; users and groups are built on demand."""

    def __init__(self, spec: OrgSpec, *, cache_dir: Optional[Path] = None):
        self.spec = spec
        self.key_pool = keys_mod.pool(spec.key_pool, spec.seed, cache_dir)
        self.broken_keys = keys_mod.bad_keys(spec.seed)
        self._salt = _mix(spec.seed * 0x100000001B3)
        rng = random.Random(f"nss-cache-coreweave bench org {spec.seed}")
        n, g = spec.users, spec.groups

        # The configured groups sit spread over the group listing.
        self.configured_positions = [((2 * k + 1) * g) // (2 * len(CONFIGURED_GROUPS))
                                     for k in range(len(CONFIGURED_GROUPS))]
        self._configured_at = {pos: k for k, pos in enumerate(self.configured_positions)}
        self._members_of, self.members = _memberships(rng, n, spec.members)
        self._choose_invalid(rng, n, spec.invalid_count)
        self._junk_members = self._junk(spec.invalid_count)
        self.expected = self._expected()

    def _choose_invalid(self, rng: random.Random, n: int, invalid_count: int) -> None:
        """Invalid records: most among members, duplicates always among members (the
        package only compares accounts it would write)."""
        self.invalid: Dict[int, str] = {}
        self.partner: Dict[int, int] = {}
        count = min(invalid_count, n)
        kinds = list(INVALID_KINDS)
        member_pool = sorted(self.members)
        rng.shuffle(member_pool)
        others = [u for u in rng.sample(range(n), min(n, count + len(self.members))) if u not in self.members]
        in_members = min(len(member_pool) // 2, (count * INVALID_MEMBER_PERCENT + 99) // 100)
        for j in range(in_members):
            self.invalid[member_pool[j]] = kinds[j % len(kinds)]
        plain = [k for k in kinds if k not in _DUPLICATES]
        for j, user in enumerate(others[: count - in_members]):
            self.invalid[user] = plain[j % len(plain)]
        # Partners of duplicates: valid members, each used once.
        valid_members = [u for u in member_pool[in_members:]]
        for user in sorted(u for u, kind in self.invalid.items() if kind in _DUPLICATES):
            if not valid_members:
                self.invalid[user] = "inactive"
                continue
            self.partner[user] = valid_members.pop()
        self._partners = frozenset(self.partner.values())

    def _junk(self, invalid_count: int) -> List[List[dict]]:
        """Member entries that are not users: ids that resolve to nothing, and a nested group."""
        junk: List[List[dict]] = [[] for _ in CONFIGURED_GROUPS]
        if min(invalid_count, self.spec.users):
            for k in range(len(CONFIGURED_GROUPS)):
                junk[k] = [
                    {"value": self._uuid(10**9 + k * 10 + t), "type": "User", "display": f"gone{k}{t}@example.com"}
                    for t in range(2)
                ]
            junk[0].append({"value": self._group_id(self.configured_positions[1]), "type": "Group",
                            "display": CONFIGURED_GROUPS[1][1]})
        return junk

    # --- per-index values ------------------------------------------------------

    def _r(self, index: int, k: int) -> int:
        return _mix(self._salt ^ ((index << 6) | k))

    def _uuid(self, index: int, kind: int = 0) -> str:
        a, b = self._r(index, 60 + kind), self._r(index, 62 + kind)
        return (f"{a >> 32:08x}-{(a >> 16) & 0xFFFF:04x}-4{a & 0xFFF:03x}-"
                f"{8 | (b >> 62):x}{(b >> 48) & 0xFFF:03x}-{b & 0xFFFFFFFFFFFF:012x}")

    def user_id(self, i: int) -> str:
        return self._uuid(i)

    def _group_id(self, j: int) -> str:
        return self._uuid(j, kind=1)

    def _names(self, i: int):
        first = FIRST[self._r(i, 1) % len(FIRST)]
        last = LAST[self._r(i, 2) % len(LAST)]
        return first, last

    def posix_name(self, i: int) -> str:
        (_, first), (_, last) = self._names(i)
        return f"{first[0]}{last}{i}"

    def email(self, i: int) -> str:
        (_, first), (_, last) = self._names(i)
        return f"{first}.{last}{i}@example.com"

    def ssh_key_indices(self, i: int) -> List[int]:
        roll = self._r(i, 3) % 100
        count = 0 if roll < 15 else 1 if roll < 65 else 2 if roll < 90 else 3
        return [self._r(i, 4 + t) % len(self.key_pool) for t in range(count)]

    def _timestamp(self, i: int, k: int, year: Optional[int] = None) -> str:
        r = self._r(i, k)
        return (f"{year or 2022 + r % 4}-{1 + (r >> 8) % 12:02d}-{1 + (r >> 16) % 28:02d}T"
                f"{(r >> 24) % 24:02d}:{(r >> 32) % 60:02d}:{(r >> 40) % 60:02d}Z")

    # --- resources --------------------------------------------------------------

    def user(self, i: int) -> dict:
        """The SCIM User at listing position ``i`` (0-based)."""
        (first, first_a), (last, last_a) = self._names(i)
        user_id = self.user_id(i)
        name = self.posix_name(i)
        email = self.email(i)
        kind = self.invalid.get(i)
        uid: object = UID_BASE + i
        gid: object = UID_BASE + i
        r = self._r(i, 20)
        ext: dict = {"sunkPosixUsername": name, "sunkPosixUid": uid, "sunkPosixGid": gid}
        if r % 10 < 7:
            ext["sunkHomeDirectory"] = f"/home/{name}" if r % 10 < 5 else f"/mnt/home/{name}"
        if (r >> 8) % 10 < 8:
            ext["sunkLoginShell"] = SHELLS[(r >> 16) % 10 // 4]  # bash, zsh, fish at 4:4:2
        host = HOSTS[(r >> 24) % len(HOSTS)]
        ssh = [f"{self.key_pool[k]} {name}@{HOSTS[(r >> (32 + 3 * t)) % len(HOSTS)] if t else host}"
               for t, k in enumerate(self.ssh_key_indices(i))]
        ext["sunkSshKeys"] = ssh
        manager = self._r(i, 21) % self.spec.users
        (mfirst, _), (mlast, _) = self._names(manager)
        resource = {
            "schemas": [CORE_USER, EXT_ENTERPRISE, EXT_CW],
            "id": user_id,
            "externalId": f"00u{self._r(i, 22):016x}",
            "userName": email,
            "name": {"formatted": f"{first} {last}", "familyName": last, "givenName": first},
            "displayName": f"{first} {last}",
            "title": TITLES[self._r(i, 23) % len(TITLES)],
            "locale": "en-US",
            "timezone": TIMEZONES[self._r(i, 24) % len(TIMEZONES)],
            "active": True,
            "emails": [{"value": email, "type": "work", "primary": True}],
            EXT_ENTERPRISE: {
                "employeeNumber": str(10_000 + i),
                "costCenter": f"CC-{self._r(i, 26) % 900 + 100}",
                "organization": "Example AI Corp",
                "division": DIVISIONS[self._r(i, 27) % len(DIVISIONS)],
                "department": DEPARTMENTS[self._r(i, 28) % len(DEPARTMENTS)],
                "manager": {"value": self.user_id(manager), "displayName": f"{mfirst} {mlast}"},
            },
            EXT_CW: ext,
            "meta": {
                "resourceType": "User",
                "created": self._timestamp(i, 29),
                "lastModified": self._timestamp(i, 30, 2026),
                "location": f"{LOCATION}/Users/{user_id}",
            },
        }
        if kind:
            self._spoil(i, kind, resource, ext)
        return resource

    def _spoil(self, i: int, kind: str, resource: dict, ext: dict) -> None:
        """Make user ``i`` (``resource``, whose CoreWeave extension is ``ext``) an invalid record of ``kind``."""
        if kind in _SPOILED_VALUES:
            attribute, value = _SPOILED_VALUES[kind]
            ext[attribute] = value
        elif kind in _SPOILED_NAMES:
            ext["sunkPosixUsername"] = self._spoiled_name(i, kind, ext["sunkPosixUsername"], resource["userName"])
        else:
            self._spoil_record(i, kind, resource, ext)

    def _spoiled_name(self, i: int, kind: str, name: str, email: str) -> str:
        """The POSIX name a user with name-spoiling ``kind`` gets instead of ``name``."""
        if kind == "upper_name":
            return name.capitalize()
        if kind == "email_name":
            return email
        if kind == "long_name":
            return f"{name}-{'x' * 32}"
        if kind == "digits_name":
            return str(UID_BASE + i)
        if kind == "dup_name":
            return self.posix_name(self.partner[i])
        raise AssertionError(kind)  # pragma: no cover

    def _spoil_record(self, i: int, kind: str, resource: dict, ext: dict) -> None:
        """The kinds that remove or rework part of the record rather than set one value."""
        if kind == "inactive":
            resource["active"] = False
        elif kind == "gid_missing":
            del ext["sunkPosixGid"]
        elif kind == "no_extension":
            del resource[EXT_CW]
            resource["schemas"] = resource["schemas"][:2]
        elif kind == "bad_home":
            ext["sunkHomeDirectory"] = f"home/{ext['sunkPosixUsername']}"
        elif kind == "dup_uid":
            ext["sunkPosixUid"] = UID_BASE + self.partner[i]
        elif kind == "bad_keys":
            ext["sunkSshKeys"] = self._broken_keys(i, ext["sunkPosixUsername"])
        else:  # pragma: no cover
            raise AssertionError(kind)

    def _broken_keys(self, i: int, name: str) -> List[str]:
        """A broken key and, for about half of these users, a valid one too (see has_valid_key)."""
        broken = self.broken_keys[self._r(i, 40) % len(self.broken_keys)]
        good = [f"{self.key_pool[self._r(i, 41) % len(self.key_pool)]} {name}@ok"] if self._r(i, 42) % 2 else []
        return [broken] + good

    def group(self, j: int) -> dict:
        """The SCIM Group at listing position ``j`` (0-based)."""
        group_id = self._group_id(j)
        k = self._configured_at.get(j)
        if k is not None:
            name, display, _ = CONFIGURED_GROUPS[k]
            member_indices = self._members_of[k]
            gid = GROUP_GID_BASE + j
        else:
            name = f"team-{DEPARTMENTS[j % len(DEPARTMENTS)].lower().replace(' ', '-')}-{j}"
            display = name.replace("-", " ").title()
            size = self._r(j, 50) % (OTHER_GROUP_MAX_MEMBERS + 1)
            start = self._r(j, 51)
            member_indices = sorted({_mix(start + t) % self.spec.users for t in range(size)})
            gid = GROUP_GID_BASE + j
        members = [{"value": self.user_id(u), "type": "User", "display": self.email(u)} for u in member_indices]
        if k is not None:
            members.extend(self._junk_members[k])
        return {
            "schemas": [CORE_GROUP],
            "id": group_id,
            "displayName": display,
            "sunkPosixGroupName": name,
            "sunkPosixGid": gid,
            "members": members,
            "meta": {
                "resourceType": "Group",
                "created": self._timestamp(j, 33),
                "lastModified": self._timestamp(j, 34, 2026),
                "location": f"{LOCATION}/Groups/{group_id}",
            },
        }

    # --- what the package must write --------------------------------------------

    def accepted(self, i: int) -> bool:
        """Whether member ``i`` must reach passwd (the package's policy, from the plan)."""
        kind = self.invalid.get(i)
        if i in self._partners:
            return False
        return kind is None or INVALID_KINDS[kind][1]

    def has_valid_key(self, i: int) -> bool:
        if self.invalid.get(i) == "bad_keys":
            return bool(self._r(i, 42) % 2)
        return bool(self.ssh_key_indices(i))

    def _expected(self) -> Dict[str, object]:
        accepted = [u for u in self.members if self.accepted(u)]
        invalid_members = Counter(kind for u, kind in self.invalid.items() if u in self.members)
        return {
            "passwd": len(accepted),
            "shadow": len(accepted),
            "group": len(CONFIGURED_GROUPS),
            "sshkey": sum(1 for u in accepted if self.has_valid_key(u)),
            "invalid_records": len(self.invalid),
            "invalid_among_members": sum(invalid_members.values()),
            "duplicate_partners": len(self._partners),
            "invalid_kinds_among_members": dict(sorted(invalid_members.items())),
        }

    def summary(self) -> Dict[str, object]:
        s = self.spec
        return {
            "users": s.users, "groups": s.groups, "members": s.members, "seed": s.seed,
            "invalid": len(self.invalid), "key_pool": s.key_pool,
            "key_types": keys_mod.key_type_counts(s.key_pool),
            "configured_groups": [name for name, _, _ in CONFIGURED_GROUPS],
            "configured_group_sizes": {CONFIGURED_GROUPS[k][0]: len(m) for k, m in enumerate(self._members_of)},
            "shells": list(SHELLS),
            "expected": self.expected,
        }
