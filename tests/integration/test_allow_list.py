"""coreweave_groups names whole groups: an IAM group reaches the node only when its
POSIX name is listed exactly, never because a listed name prefixes it.

Through the stock ``nsscache update --full`` (nsscache 0.49, this project's wheel
beside it) against tests/support/fakeiam.py on loopback, with the Node's
``coreweave_groups = slurm-users, slurm-admins``, and the keys command sshd runs.
"""

from __future__ import annotations

import copy

from support.node import EXT, MAPS, expected_caches

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


def user(org: dict, name: str) -> dict:
    return next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)


def iam_group(id: str, name: str, gid: int, members: list) -> dict:
    """A Group resource as CoreWeave IAM returns it, listing ``members`` (User resources)."""
    return {
        "schemas": [GROUP_SCHEMA], "id": id, "displayName": name, "sunkPosixGroupName": name, "sunkPosixGid": gid,
        "members": [{"value": m["id"], "type": "User", "display": m["userName"]} for m in members],
    }


def test_group_named_with_a_listed_prefix_stays_off_the_node(node, iam, demo_org):
    org = copy.deepcopy(demo_org)
    # carol is in other-team only; now also in a group named like slurm-users and more,
    # and in one named like a part of it. alice, in slurm-users, is in the first too.
    carol, alice = user(org, "carol"), user(org, "alice")
    org["Groups"] += [
        iam_group("g-slurm-users-evil", "slurm-users-evil", 30066, [carol, alice]),
        iam_group("g-slurm", "slurm", 30067, [carol]),
    ]
    iam.set_org(org)

    result = node.run("nsscache", "update", "--full")

    assert result.returncode == 0, result.stderr
    # Exactly what the demo organisation gives without those two groups.
    assert {name: node.cache(name) for name in MAPS} == expected_caches(demo_org)
    assert node.cache("group") == "slurm-admins:x:30002:alice\nslurm-users:x:30001:alice,bob,erin,frank\n"
    keys = node.run_keys("carol")
    assert (keys.returncode, keys.stdout, keys.stderr) == (
        0, "", f"nsscache-coreweave-keys: carol: not in {node.root}/cache/passwd.cache: no keys\n")
