"""Mirror mode through the stock nsscache 0.49 and a real nginx: one
publisher lists the loopback IAM and writes a signed bundle
(``nsscache-coreweave publish``), nginx serves it as static files, and nodes
with ``source = coreweave`` and ``coreweave_mirror_url`` write their caches
from it, never asking IAM.

A node refuses what the publisher did not sign as it is (a tampered map or
manifest, another key, a rolled-back or reused generation, a stale or
future bundle, maps that disagree, a missing file, no mirror at all): its
caches and nsscache's timestamps stay byte-identical, the reason is in its
log, the exit status is non-zero. Publishing itself (freshness, atomicity,
304s, status and metrics) is tests/integration/test_publishing.py's."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from nss_cache import config as nss_config

from nss_cache_coreweave import bundle, config, publish, sshsig
from support.fakeiam import FakeIAM
from support.fleet import Publisher, allowed_signers, new_key
from support.keys import ed25519_key
from support.nginx import serve
from support.node import EXT, MAPS, TOKEN, Node, expected_caches

# The stock `nsscache update --full` when the source refuses the bundle (nsscache counts the failed maps:
# all four), and `nsscache-coreweave update`'s documented statuses.
STOCK_REFUSED = 4
EXIT_FAILED = 1
EXIT_TEMPFAIL = 75


@pytest.fixture
def mirror_node(tmp_path, bin_dir, publisher, mirror):
    node = Node(tmp_path / "node", bin_dir)
    node.configure_mirror(mirror.base_url, publisher.public_key)
    return node


@pytest.fixture
def org(demo_org):
    """The demo organisation, to change and serve with ``iam.set_org``."""
    return copy.deepcopy(demo_org)


# --- helpers ---------------------------------------------------------------------------------------------


def replace(path: Path, data: bytes) -> None:
    """Write ``path`` as the publisher would: atomically, with an mtime a second past the old one's
    (nginx's ETag is mtime-seconds and size: a node must not be told 304 for other bytes)."""
    old = path.stat().st_mtime if path.exists() else 0.0
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    mtime = max(time.time(), old + 1)
    os.utime(temporary, (mtime, mtime))
    os.replace(temporary, path)


def resign(publisher: Publisher, manifest: bytes, key: Path) -> None:
    """Publish ``manifest`` signed with ``key`` as the latest bundle: manifest.json and
    generations/<N>/manifest.json, both manifest.json.sig files (N: the manifest's generation)."""
    signature = sshsig.sign(manifest, sshsig.load_private_key(str(key)))
    generation = publisher.directory / "generations" / str(json.loads(manifest)["generation"])
    for directory in (generation, publisher.directory):
        replace(directory / "manifest.json", manifest)
        replace(directory / "manifest.json.sig", signature)


def edited_manifest(publisher: Publisher, **changes) -> bytes:
    """The latest manifest with ``changes`` to its fields, written as the publisher writes one."""
    document = {**publisher.manifest(), **changes}
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode("ascii")


def update(node: Node, *command: str) -> subprocess.CompletedProcess:
    result = node.run(*(command or ("nsscache", "update", "--full")))
    assert result.returncode == 0, result.stderr
    return result


def publish_ok(publisher: Publisher) -> int:
    result = publisher.publish()
    assert result.returncode == 0, result.stderr
    return publisher.generation()


def accepted_then_republished(publisher: Publisher, node: Node, iam) -> dict:
    """The node accepts a first generation; IAM changes (alice's display name) and a second is
    published: every map differs (a changed entry gives the bundle a new run, named on each map's
    marker line), so the node must fetch them all. Returns the node's files after the first, for
    the refusal to compare with."""
    publish_ok(publisher)
    update(node)
    before = node.files()
    changed = copy.deepcopy(iam.org)
    alice = next(u for u in changed["Users"] if u["displayName"] == "Alice Smith")
    alice["displayName"] = "Alice B. Smith"
    iam.set_org(changed)
    publish_ok(publisher)
    iam.reset_stats()
    return before


def assert_refused(node: Node, before: dict, iam, *fragments: str, command=("nsscache", "update", "--full"),
                   status: int = STOCK_REFUSED) -> subprocess.CompletedProcess:
    result = node.run(*command)
    assert result.returncode == status, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert node.files() == before
    assert iam.request_count() == 0
    return result


def in_process_config(publisher: Publisher) -> config.Config:
    """The publisher's Config as `nsscache-coreweave publish` reads it from its nsscache.conf."""
    conf = nss_config.Config({})
    conf.config_file = str(publisher.node.conf)
    nss_config.LoadConfig(conf)
    return config.parse(conf.options["passwd"].source, environ={})


def without(org: dict, name: str) -> dict:
    """``org`` with user ``name`` in no group."""
    user_id = next(u["id"] for u in org["Users"] if u[EXT]["sunkPosixUsername"] == name)
    for group in org["Groups"]:
        group["members"] = [m for m in group["members"] if m["value"] != user_id]
    return org


# --- the node's caches --------------------------------------------------------------------------------------


def test_node_caches_equal_a_direct_sync_and_no_node_asks_iam(tmp_path, bin_dir, iam, demo_org, publisher,
                                                              mirror_node):
    direct = Node(tmp_path / "direct", bin_dir)
    direct.configure(iam.base_url)
    assert direct.run("nsscache", "update", "--full").returncode == 0
    assert publisher.publish().returncode == 0
    iam.reset_stats()

    result = mirror_node.run("nsscache", "update", "--full")

    assert result.returncode == 0, result.stderr
    assert iam.request_count() == 0
    assert mirror_node.caches() == direct.caches()
    for name, content in expected_caches(demo_org).items():
        assert mirror_node.cache(name) == content, name


def test_a_publisher_fetching_only_the_members_serves_nodes_the_same_caches(tmp_path, bin_dir, demo_org):
    # A server that filters and projects: the publisher asks for the members by id, as a node would.
    with FakeIAM(demo_org, token=TOKEN, service_provider_config=True, filter_supported=True, filter_mode="honour",
                 attributes_mode="honour") as iam:
        publisher = Publisher.create(tmp_path, bin_dir, iam.base_url)
        publisher.directory.mkdir()
        with serve(publisher.directory, tmp_path / "nginx") as mirror:
            node = Node(tmp_path / "node", bin_dir)
            node.configure_mirror(mirror.base_url, publisher.public_key)
            publish_ok(publisher)
            (users,) = iam.requests("Users")  # one batch of ids, projected
            iam.reset_stats()

            update(node)

        assert iam.request_count() == 0
    assert users.params["filter"].startswith('id eq "') and "attributes" in users.params
    assert publisher.node.state()["last_run"]["fetch"] == "members"
    for name, content in expected_caches(demo_org).items():
        assert node.cache(name) == content, name


def test_a_removal_in_iam_reaches_a_node_after_one_publish_and_one_update(iam, org, publisher, mirror_node):
    erin_key = ed25519_key("erin") + " erin@laptop"
    next(u for u in org["Users"] if u[EXT]["sunkPosixUsername"] == "erin")[EXT]["sunkSshKeys"] = [erin_key]
    iam.set_org(org)
    publish_ok(publisher)
    update(mirror_node)
    assert "erin:" in mirror_node.cache("passwd")
    keys = mirror_node.run_keys("erin")
    assert (keys.returncode, keys.stdout, keys.stderr) == (0, erin_key + "\n", "")

    iam.set_org(without(org, "erin"))
    publish_ok(publisher)
    iam.reset_stats()
    update(mirror_node)

    assert iam.request_count() == 0
    assert mirror_node.cache("passwd") == (
        "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
        "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/zsh\n"
        "frank:x:20006:20006:Frank Miller:/mnt/home/frank:/bin/bash\n"
    )
    assert mirror_node.cache("group") == "slurm-admins:x:30002:alice\nslurm-users:x:30001:alice,bob,frank\n"
    assert mirror_node.cache("shadow") == "alice:*:::::::\nbob:*:::::::\nfrank:*:::::::\n"
    keys = mirror_node.run_keys("erin")
    assert (keys.returncode, keys.stdout, keys.stderr) == (
        0, "", f"nsscache-coreweave-keys: erin: not in {mirror_node.root}/cache/passwd.cache: no keys\n")


def test_ssh_keygen_verifies_the_published_signatures(tmp_path, publisher, mirror):
    generation = publish_ok(publisher)
    signers = allowed_signers(publisher.public_key, tmp_path / "allowed_signers")

    for directory in (publisher.directory, publisher.generation_dir(generation)):
        with open(directory / "manifest.json", "rb") as manifest:
            result = subprocess.run(
                ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", "publisher", "-n", "nsscache-coreweave",
                 "-s", str(directory / "manifest.json.sig")],
                stdin=manifest, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (directory, result.stdout, result.stderr)
        assert result.stdout.startswith('Good "nsscache-coreweave" signature for publisher with ED25519 key'), \
            result.stdout


# --- refused bundles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tamper", "fragment"), [
    pytest.param(lambda data: data.replace(b"Bob Jones", b"Bob Jonas"), "/passwd: its sha256 is ", id="same-size"),
    pytest.param(lambda data: data[:-1], "/passwd: its size is ", id="a-byte-short"),
    # Never read past the signed size: refused while it arrives.
    pytest.param(lambda data: data + b"mallory:x:0:0:root:/root:/bin/bash\n", "/passwd: its size is more than ",
                 id="a-line-appended"),
])
def test_a_tampered_map_is_refused(iam, publisher, mirror_node, tamper, fragment):
    before = accepted_then_republished(publisher, mirror_node, iam)
    passwd = publisher.generation_dir() / "passwd"
    tampered = tamper(passwd.read_bytes())
    assert tampered != passwd.read_bytes()
    replace(passwd, tampered)

    result = assert_refused(mirror_node, before, iam, f"bundle generations/{publisher.generation()}/passwd: ",
                            fragment, "refusing the bundle, the caches are kept")
    assert "the signed manifest says" in result.stderr and "a tampered or partly copied file" in result.stderr


def flipped(digest: str) -> str:
    """Another sha256 of the same form: its first hex digit changed."""
    return ("1" if digest[0] == "0" else "0") + digest[1:]


@pytest.mark.parametrize("edit", [
    pytest.param(lambda m: {"counts": {**m["counts"], "users": m["counts"]["users"] + 1}}, id="counts"),
    pytest.param(lambda m: {"files": {**m["files"], "passwd": {**m["files"]["passwd"],
                                                              "sha256": flipped(m["files"]["passwd"]["sha256"])}}},
                 id="sha256"),
])
def test_a_tampered_manifest_is_refused(iam, publisher, mirror_node, edit):
    before = accepted_then_republished(publisher, mirror_node, iam)
    manifest = publisher.directory / "manifest.json"
    edited = edited_manifest(publisher, **edit(publisher.manifest()))
    assert edited != manifest.read_bytes()
    replace(manifest, edited)  # its signature left as the publisher made it

    assert_refused(mirror_node, before, iam, "bundle manifest.json.sig: the signature does not verify (bad_signature)",
                   "refusing the bundle, the caches are kept")


def test_a_bundle_signed_by_another_key_is_refused_and_accepted_by_a_node_trusting_both(tmp_path, iam, demo_org,
                                                                                      publisher, mirror, mirror_node):
    before = accepted_then_republished(publisher, mirror_node, iam)
    other = new_key(tmp_path / "other.key", comment="next-publisher")
    resign(publisher, (publisher.directory / "manifest.json").read_bytes(), other)

    assert_refused(mirror_node, before, iam, "the signature does not verify (untrusted_key)",
                   "is coreweave_mirror_public_key the publisher's key?")

    # Rotation: the node trusts the old and the new key while the publisher changes keys.
    both = tmp_path / "publishers.pub"
    both.write_text(publisher.public_key.read_text() + Path(str(other) + ".pub").read_text())
    mirror_node.configure_mirror(mirror.base_url, both)
    update(mirror_node)
    assert iam.request_count() == 0
    expected = expected_caches(demo_org)
    expected["passwd"] = expected["passwd"].replace("Alice Smith", "Alice B. Smith")  # the second generation's
    assert {name: mirror_node.cache(name) for name in MAPS} == expected


def test_a_rolled_back_generation_is_refused(iam, org, publisher, mirror_node):
    first = publish_ok(publisher)
    iam.set_org(without(org, "erin"))
    publish_ok(publisher)
    update(mirror_node)
    before = mirror_node.files()
    assert "erin" not in mirror_node.cache("passwd")
    iam.reset_stats()
    for name in ("manifest.json", "manifest.json.sig"):
        replace(publisher.directory / name, (publisher.generation_dir(first) / name).read_bytes())

    assert_refused(mirror_node, before, iam, f"bundle manifest.json: generation {first} is older than generation",
                   "the last one this node accepted", "(a rollback)")
    assert "erin" not in mirror_node.cache("passwd")


def test_other_bytes_under_an_accepted_generation_number_are_refused(iam, publisher, mirror_node):
    generation = publish_ok(publisher)
    update(mirror_node)
    before = mirror_node.files()
    iam.reset_stats()
    # Signed by the publisher's own key: only the generation number gives it away.
    resign(publisher, edited_manifest(publisher, created=publisher.manifest()["created"] + 1), publisher.key)

    assert_refused(mirror_node, before, iam, f"generation {generation} differs from the generation of that number "
                                             "this node accepted")


@pytest.mark.parametrize(("offset", "fragments"), [
    pytest.param(-7200, ("s ago, more than coreweave_mirror_max_age (60 s)", "is the publisher running?"),
                 id="two-hours-old"),
    pytest.param(3600, ("s in the future", "check the clocks of the publisher and this node"), id="an-hour-ahead"),
])
def test_a_bundle_out_of_date_is_refused(iam, publisher, mirror, mirror_node, offset, fragments):
    mirror_node.configure_mirror(mirror.base_url, publisher.public_key, "coreweave_mirror_max_age = 60\n")
    publish_ok(publisher)
    update(mirror_node)
    before = mirror_node.files()
    # The publisher itself, in this process, with its clock moved.
    result = publish.publish(in_process_config(publisher), now=time.time() + offset)
    assert result.written and publisher.generation() == result.manifest.generation
    iam.reset_stats()

    assert_refused(mirror_node, before, iam, f"bundle manifest.json: generation {result.manifest.generation} ",
                   *fragments, "refusing the bundle, the caches are kept")


def test_a_signed_bundle_whose_maps_disagree_is_refused_as_malformed(iam, publisher, mirror_node):
    before = accepted_then_republished(publisher, mirror_node, iam)
    group = publisher.generation_dir() / "group"
    data = group.read_bytes().replace(b":alice,bob,erin,frank\n", b":alice,bob,erin,frank,mallory\n")
    assert data != group.read_bytes()
    replace(group, data)
    files = publisher.manifest()["files"]
    files["group"] = {**files["group"], "sha256": bundle.sha256(data), "bytes": len(data)}
    resign(publisher, edited_manifest(publisher, files=files), publisher.key)

    assert_refused(mirror_node, before, iam, "bundle group: line 3: member 'mallory' has no passwd entry",
                   "refusing the bundle, the caches are kept")


def test_a_missing_map_file_is_refused(iam, publisher, mirror, mirror_node):
    before = accepted_then_republished(publisher, mirror_node, iam)
    path = f"generations/{publisher.generation()}/sshkey"
    (publisher.directory / path).unlink()

    assert_refused(mirror_node, before, iam, f"mirror {path}: HTTP 404 from {mirror.url(path)}",
                   command=("nsscache-coreweave", "update"), status=EXIT_FAILED)


def test_a_mirror_that_is_down_leaves_the_caches(tmp_path, bin_dir, iam, publisher):
    publisher.directory.mkdir()
    node = Node(tmp_path / "node", bin_dir)
    with serve(publisher.directory, tmp_path / "nginx") as server:
        node.configure_mirror(server.base_url, publisher.public_key, "coreweave_retries = 0\n")
        publish_ok(publisher)
        update(node)
    before = node.files()
    iam.reset_stats()

    refused = f"mirror manifest.json: ConnectionError talking to {server.url('manifest.json')} (after 1 attempts)"
    for command in (("nsscache-coreweave", "update"), ("nsscache", "update", "--full")):
        # The stock nsscache, too, exits EX_TEMPFAIL when the source is unavailable.
        assert_refused(node, before, iam, refused, "is the network or the server down?", command=command,
                       status=EXIT_TEMPFAIL)


# --- node-local rules ------------------------------------------------------------------------------------


def narrowed(node: Node, old: str, new: str) -> None:
    """The node's nsscache.conf with one of Node.configure's lines changed."""
    text = node.conf.read_text()
    assert old in text
    node.conf.write_text(text.replace(old, new))


def test_a_local_account_named_like_an_iam_user_wins_on_the_node(iam, publisher, mirror, mirror_node):
    local = mirror_node.root / "etc-passwd"
    local.write_text("root:x:0:0:root:/root:/bin/bash\nbob:x:1500:1500:Local Bob:/home/bob:/bin/sh\n")
    mirror_node.configure_mirror(mirror.base_url, publisher.public_key, f"coreweave_local_passwd = {local}\n")
    publish_ok(publisher)
    iam.reset_stats()

    result = update(mirror_node)

    assert iam.request_count() == 0
    assert "dropped user bob: name 'bob' is a local account of this node" in result.stderr, result.stderr
    assert mirror_node.cache("passwd") == (
        "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
        "erin:x:20005:20005:Erin Garcia:/mnt/home/erin:/bin/bash\n"
        "frank:x:20006:20006:Frank Miller:/mnt/home/frank:/bin/bash\n"
    )
    assert mirror_node.cache("group") == "slurm-admins:x:30002:alice\nslurm-users:x:30001:alice,erin,frank\n"
    assert "bob" not in mirror_node.cache("shadow") + mirror_node.cache("sshkey")


def test_a_shell_the_node_does_not_allow_is_replaced_by_the_default(iam, demo_org, publisher, mirror_node):
    narrowed(mirror_node, "coreweave_allowed_shells = /bin/bash, /bin/zsh", "coreweave_allowed_shells = /bin/bash")
    publish_ok(publisher)
    iam.reset_stats()

    result = update(mirror_node)

    assert iam.request_count() == 0
    assert "dropped shell bob: shell '/bin/zsh' is not an allowed shell: /bin/bash used instead" in result.stderr, \
        result.stderr
    expected = expected_caches(demo_org)
    assert mirror_node.cache("passwd") == expected["passwd"].replace(
        "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/zsh", "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/bash")
    assert {name: mirror_node.cache(name) for name in ("group", "shadow", "sshkey")} == {
        name: expected[name] for name in ("group", "shadow", "sshkey")}


def test_coreweave_groups_on_a_node_narrows_the_published_groups_as_a_direct_sync(tmp_path, bin_dir, iam, publisher,
                                                                                mirror, mirror_node):
    direct = Node(tmp_path / "direct", bin_dir)
    direct.configure(iam.base_url)
    narrowed(direct, "coreweave_groups = slurm-users, slurm-admins", "coreweave_groups = slurm-admins")
    update(direct)
    mirror_node.configure_mirror(mirror.base_url, publisher.public_key, "coreweave_groups = slurm-admins\n")
    publish_ok(publisher)
    iam.reset_stats()

    update(mirror_node)

    assert iam.request_count() == 0
    assert mirror_node.cache("passwd") == "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash\n"
    assert mirror_node.cache("group") == "slurm-admins:x:30002:alice\n"
    assert mirror_node.caches() == direct.caches()
