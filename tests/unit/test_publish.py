"""publish: list IAM once, decide and guard as a node sync does, and write a
signed bundle into coreweave_publish_dir (static files, 0644 / dirs 0755).

Against the loopback fake IAM serving demo/org.json: the layout, the
generation numbers, the pruning of old generations, one publish at a time,
the dry run, and the manifest's modification time (nginx's ETag).
"""

from __future__ import annotations

import copy
import fcntl
import os
import shutil
import stat
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from nss_cache_coreweave import bundle, config, policy, publish, run, snapshot, sshsig, state
from nss_cache_coreweave.bundle import MAPS, Published
from nss_cache_coreweave.config import ShadowDefaults
from nss_cache_coreweave.errors import ConfigError, FetchError, GuardError, PublishError
from nss_cache_coreweave.publish import Change
from support.node import TOKEN, expected_caches

NOW = 1_780_000_000.25
GENERATION = int(NOW)


@pytest.fixture(autouse=True)
def new_process(monkeypatch):
    monkeypatch.setattr(run, "_CACHE", {})  # every test lists IAM afresh


@pytest.fixture
def key_file(tmp_path) -> Path:
    """An unencrypted ed25519 key in OpenSSH format, as ``ssh-keygen -t ed25519 -N ''`` writes it."""
    path = tmp_path / "publisher.key"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    path.chmod(0o600)
    return path


@pytest.fixture
def configure(tmp_path, iam, key_file):
    """``configure(**options)``: the publisher's configuration (the Node's, with the publish keys)."""

    def make(**options) -> config.Config:
        values = {
            "base_url": iam.base_url, "groups": "slurm-users, slurm-admins", "home_directory": "/mnt/home/%u",
            "allowed_shells": "/bin/bash, /bin/zsh", "state_dir": str(tmp_path / "state"),
            "local_passwd": str(tmp_path / "no-passwd"), "local_group": str(tmp_path / "no-group"),
            "publish_dir": str(tmp_path / "published"), "publish_key": str(key_file), **options,
        }
        return config.parse({k: v for k, v in values.items() if v is not None},
                            environ={"NSSCACHE_COREWEAVE_TOKEN": TOKEN})

    return make


@pytest.fixture
def cfg(configure) -> config.Config:
    return configure()


def tree(root: Path) -> dict:
    """Every file below ``root`` (relative path -> bytes); directories end with '/'."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        found[name + "/" if path.is_dir() else name] = b"" if path.is_dir() else path.read_bytes()
    return found


def public_blob(key_file: Path) -> bytes:
    return sshsig.read_public_keys(sshsig.public_key_line(sshsig.load_private_key(str(key_file))))[0]


def marker_line(map_name: str, run_id: str) -> str:
    return {
        "passwd": f"nsscache-coreweave:*{run_id}:65534:65534:run marker, not an account:/nonexistent:/usr/sbin/nologin",
        "group": f"nsscache-coreweave:*{run_id}:65534:",
        "shadow": f"nsscache-coreweave:*{run_id}:::::::",
        "sshkey": f"nsscache-coreweave:*{run_id}",
    }[map_name]


# --- the layout -------------------------------------------------------------------------------------------


def test_publish_writes_the_signed_bundle(cfg, tmp_path, key_file, demo_org, iam):
    result = publish.publish(cfg, now=NOW)

    root = tmp_path / "published"
    generation = root / "generations" / str(GENERATION)
    assert sorted(tree(root)) == sorted([
        ".publish.lock", "generations/", f"generations/{GENERATION}/", "manifest.json", "manifest.json.sig",
        *(f"generations/{GENERATION}/{name}" for name in (*MAPS, "manifest.json", "manifest.json.sig")),
    ])
    manifest_text = bundle.manifest_bytes(result.manifest)
    assert (root / "manifest.json").read_bytes() == (generation / "manifest.json").read_bytes() == manifest_text
    signature = (generation / "manifest.json.sig").read_bytes()
    assert (root / "manifest.json.sig").read_bytes() == signature
    assert sshsig.verify(manifest_text, signature, [public_blob(key_file)]) == public_blob(key_file)
    for name in MAPS:
        assert (generation / name).read_text() == marker_line(name, result.manifest.run) + "\n" + \
            expected_caches(demo_org)[name], name
    # One listing: Groups, then (the server has no /ServiceProviderConfig: it does not
    # filter) every user, asked only for the attributes the configuration reads; one page each.
    prefix = urlsplit(iam.base_url).path
    assert [(urlsplit(r.target).path, r.status, r.params.get("attributes")) for r in iam.requests()] == [
        (f"{prefix}/Groups", 200, None),
        (f"{prefix}/ServiceProviderConfig", 404, None),
        (f"{prefix}/Users", 200, snapshot.attributes_of(cfg)),
    ]


def test_the_manifest_names_the_generation_its_maps_and_counts(cfg, tmp_path):
    result = publish.publish(cfg, now=NOW)

    manifest = result.manifest
    assert (manifest.generation, manifest.created, manifest.users, manifest.groups, manifest.keys) == (
        GENERATION, NOW, 4, 2, 4)
    maps = {name: (tmp_path / "published" / manifest.files[name].path).read_bytes() for name in MAPS}
    assert {name: (f.sha256, f.bytes) for name, f in manifest.files.items()} == {
        name: (bundle.sha256(data), len(data)) for name, data in maps.items()}
    assert bundle.parse_manifest((tmp_path / "published" / "manifest.json").read_bytes()) == manifest
    assert result.written and result.pruned == ()


def test_the_bundle_reads_back_as_the_decided_directory(cfg, tmp_path):
    result = publish.publish(cfg, now=NOW)
    decided = run.fetch_and_decide(cfg)  # the same listing (this process's)

    maps = {name: (tmp_path / "published" / result.manifest.files[name].path).read_bytes() for name in MAPS}
    published = bundle.read_bundle(result.manifest, maps)

    assert published == Published(
        policy.Directory(decided.accounts, decided.groups, (), ()), ShadowDefaults())


def test_the_files_are_world_readable_and_the_directories_searchable(cfg, tmp_path):
    publish.publish(cfg, now=NOW)

    root = tmp_path / "published"
    modes = {name: stat.S_IMODE((root / name).stat().st_mode) for name in tree(root) if name != ".publish.lock"}
    assert modes == {name: 0o755 if name.endswith("/") else 0o644 for name in modes}


def test_the_shadow_fields_of_the_publisher_go_into_the_bundle(configure, tmp_path):
    result = publish.publish(configure(shadow_default_max="99999", shadow_default_warn="7"), now=NOW)

    shadow = (tmp_path / "published" / result.manifest.files["shadow"].path).read_text()
    assert shadow.splitlines()[1] == "alice:*:::99999:7:::"


def test_a_publish_is_recorded_for_the_next_ones_shrink_guard(cfg):
    result = publish.publish(cfg, now=NOW)

    record = state.read(cfg.state_dir, publish.scope(cfg))
    assert (record.accepted.users, record.accepted.groups) == (4, 2)
    assert (record.last_run.outcome, record.last_run.run, record.last_run.users, record.last_run.generation,
            record.last_run.published) == ("ok", result.manifest.run, 4, GENERATION, NOW)
    assert publish.scope(cfg) == f"publish {cfg.server.base_url} groups=slurm-users,slurm-admins"
    assert state.read(cfg.state_dir, run.state_scope(cfg)).accepted is None  # a node sync's scope is apart


# --- generations ---------------------------------------------------------------------------------------


def test_the_first_generation_is_the_publish_time_in_seconds(cfg):
    assert publish.publish(cfg, now=NOW).manifest.generation == GENERATION


def test_a_publish_within_the_same_second_takes_the_next_generation(cfg):
    first = publish.publish(cfg, now=NOW)
    second = publish.publish(cfg, now=NOW + 0.5)
    third = publish.publish(cfg, now=NOW - 100)  # a clock set back: the generation still grows

    assert [r.manifest.generation for r in (first, second, third)] == [GENERATION, GENERATION + 1, GENERATION + 2]


def test_a_later_publish_takes_its_time_as_the_generation(cfg):
    publish.publish(cfg, now=NOW)

    assert publish.publish(cfg, now=NOW + 3600).manifest.generation == GENERATION + 3600


def test_a_lost_manifest_still_gives_a_growing_generation(cfg, tmp_path):
    publish.publish(cfg, now=NOW)
    (tmp_path / "published" / "manifest.json").unlink()

    assert publish.publish(cfg, now=NOW + 10).manifest.generation == GENERATION + 10


def test_older_generations_beyond_keep_are_removed(configure, tmp_path):
    cfg = configure(publish_keep="2")
    results = [publish.publish(cfg, now=NOW + n) for n in range(5)]

    assert [r.pruned for r in results] == [(), (), (), (GENERATION,), (GENERATION + 1,)]
    assert sorted(os.listdir(tmp_path / "published" / "generations")) == [
        str(GENERATION + 2), str(GENERATION + 3), str(GENERATION + 4)]


def test_keep_zero_leaves_only_the_current_generation(configure, tmp_path):
    cfg = configure(publish_keep="0")
    publish.publish(cfg, now=NOW)

    assert publish.publish(cfg, now=NOW + 1).pruned == (GENERATION,)
    assert os.listdir(tmp_path / "published" / "generations") == [str(GENERATION + 1)]


def test_prune_keeps_the_newest_older_generations_and_touches_nothing_else(tmp_path):
    root = tmp_path / "published"
    for name in ("1", "2", "3", "4", "5", "6", "7.tmp", "9", "notes"):
        (root / "generations" / name).mkdir(parents=True)

    removed = publish._prune(str(root), 6, 2)

    assert removed == (3, 2, 1)
    assert sorted(os.listdir(root / "generations")) == ["4", "5", "6", "7.tmp", "9", "notes"]


# --- what changes, and a dry run ----------------------------------------------------------------------------


def test_the_first_publish_adds_every_line(cfg):
    assert publish.publish(cfg, now=NOW).changes == (
        Change("passwd", 4, 0), Change("group", 2, 0), Change("shadow", 4, 0), Change("sshkey", 3, 0))


def test_an_unchanged_listing_republishes_the_same_map_files(cfg):
    first = publish.publish(cfg, now=NOW)

    second = publish.publish(cfg, now=NOW + 60)

    assert second.changes == tuple(Change(name, 0, 0) for name in MAPS)
    assert (second.manifest.generation, second.manifest.run) == (GENERATION + 60, first.manifest.run)
    assert {n: f.sha256 for n, f in second.manifest.files.items()} == {
        n: f.sha256 for n, f in first.manifest.files.items()}  # a node holding them fetches the manifest only


def test_a_removal_in_iam_shows_in_the_changes(cfg, iam, demo_org, monkeypatch):
    publish.publish(cfg, now=NOW)
    org = copy.deepcopy(demo_org)
    bob = next(u["id"] for u in org["Users"] if u["userName"].startswith("bob"))
    for group in org["Groups"]:
        group["members"] = [m for m in group.get("members", []) if m["value"] != bob]
    iam.set_org(org)
    monkeypatch.setattr(run, "_CACHE", {})  # the next process

    result = publish.publish(cfg, now=NOW + 60)

    assert result.changes == (
        Change("passwd", 0, 1), Change("group", 1, 1), Change("shadow", 0, 1), Change("sshkey", 0, 1))
    assert result.manifest.users == 3


def test_a_dry_run_writes_nothing_and_says_what_would_change(configure, tmp_path):
    cfg = configure(publish_key=None)  # a dry run needs no key

    result = publish.publish(cfg, dry_run=True, now=NOW)

    assert not (tmp_path / "published").exists()
    assert (result.written, result.manifest.generation, result.manifest.users) == (False, GENERATION, 4)
    assert result.changes == (
        Change("passwd", 4, 0), Change("group", 2, 0), Change("shadow", 4, 0), Change("sshkey", 3, 0))
    assert state.read(cfg.state_dir, publish.scope(cfg)).accepted is None


def test_a_dry_run_after_a_publish_leaves_the_directory_byte_identical(cfg, tmp_path):
    publish.publish(cfg, now=NOW)
    before = tree(tmp_path / "published")
    mtime = (tmp_path / "published" / "manifest.json").stat().st_mtime

    result = publish.publish(cfg, dry_run=True, now=NOW + 60)

    assert tree(tmp_path / "published") == before
    assert (tmp_path / "published" / "manifest.json").stat().st_mtime == mtime
    assert result.manifest.generation == GENERATION + 60
    assert result.changes == tuple(Change(name, 0, 0) for name in MAPS)


# --- one publish at a time ---------------------------------------------------------------------------------


def test_a_second_concurrent_publish_is_refused_and_writes_nothing(cfg, tmp_path):
    root = tmp_path / "published"
    (root / "generations").mkdir(parents=True)
    with open(root / ".publish.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a publish running

        with pytest.raises(PublishError) as caught:
            publish.publish(cfg, now=NOW)

    assert (caught.value.path, caught.value.busy) == (str(root), True)
    assert str(caught.value) == f"another publish into {root} is running: nothing was published; try again later"
    assert sorted(tree(root)) == [".publish.lock", "generations/"]
    assert state.read(cfg.state_dir, publish.scope(cfg)).accepted is None


def test_the_lock_is_released_when_the_publish_ends(cfg, tmp_path):
    publish.publish(cfg, now=NOW)

    with open(tmp_path / "published" / ".publish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # would raise BlockingIOError if still held


# --- the manifest's modification time ---------------------------------------------------------------------


def test_a_manifest_dated_in_the_future_is_replaced_by_one_a_second_later(cfg, tmp_path):
    publish.publish(cfg, now=NOW)
    manifest = tmp_path / "published" / "manifest.json"
    future = time.time() + 3600
    os.utime(manifest, (future, future))

    publish.publish(cfg, now=NOW + 1)

    assert manifest.stat().st_mtime == future + 1


def test_next_mtime_is_a_second_past_the_old_manifest_at_least(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{}\n")
    future = time.time() + 100
    os.utime(path, (future, future))

    assert publish._next_mtime(str(path)) == future + 1


def test_next_mtime_of_an_old_or_missing_manifest_is_now(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("{}\n")
    os.utime(path, (NOW - 3600, NOW - 3600))  # long before this test runs
    before = time.time()

    old, missing = publish._next_mtime(str(path)), publish._next_mtime(str(tmp_path / "missing"))

    assert before <= old <= time.time()
    assert before <= missing <= time.time()


# --- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param(dict(publish_dir=None), "publish needs coreweave_publish_dir", id="no-directory"),
        pytest.param(dict(publish_key=None), "publish needs coreweave_publish_key", id="no-key"),
    ],
)
def test_publish_without_its_settings_is_a_configuration_error(configure, tmp_path, options, message):
    with pytest.raises(ConfigError) as caught:
        publish.publish(configure(**options), now=NOW)

    assert str(caught.value).startswith(message)
    assert not (tmp_path / "published").exists()


def test_a_key_readable_by_others_is_refused(cfg, key_file, tmp_path):
    key_file.chmod(0o644)

    with pytest.raises(ConfigError) as caught:
        publish.publish(cfg, now=NOW)

    assert str(caught.value).startswith(f"coreweave_publish_key: {key_file}: permissions 0644 are too open")
    assert not (tmp_path / "published").exists()


def test_a_shrink_beyond_the_limit_is_refused_and_nothing_is_written(cfg, iam, demo_org, tmp_path, monkeypatch):
    publish.publish(cfg, now=NOW)
    before = tree(tmp_path / "published")
    org = copy.deepcopy(demo_org)
    for group in org["Groups"]:
        group["members"] = group.get("members", [])[:1]
    iam.set_org(org)
    monkeypatch.setattr(run, "_CACHE", {})

    with pytest.raises(GuardError) as caught:
        publish.publish(cfg, now=NOW + 60)

    assert (caught.value.what, caught.value.before, caught.value.now) == ("users", 4, 1)
    # The operator reruns the command that was refused.
    assert caught.value.command == "publish"
    assert "run `nsscache-coreweave publish --accept-shrink` once" in str(caught.value)
    assert tree(tmp_path / "published") == before
    assert publish.publish(cfg, accept_shrink=True, now=NOW + 120).manifest.users == 1


# --- what a publish that died, or a strict umask, leaves ---------------------------------------------------


def test_a_generation_left_newer_than_the_manifest_is_removed_and_the_same_second_publishes(cfg, tmp_path):
    publish.publish(cfg, now=NOW)
    root = tmp_path / "published" / "generations"
    (root / str(GENERATION + 1)).mkdir()  # renamed into place, then the publish died before manifest.json
    (root / f"{GENERATION + 1}.tmp.abc123").mkdir()

    result = publish.publish(cfg, now=NOW)

    assert result.manifest.generation == GENERATION + 1
    assert sorted(p.name for p in root.iterdir()) == [str(GENERATION), str(GENERATION + 1)]
    assert (root / str(GENERATION + 1) / "manifest.json").read_bytes() == bundle.manifest_bytes(result.manifest)


def test_a_lost_manifest_never_numbers_a_generation_below_those_present_or_recorded(cfg, tmp_path):
    publish.publish(cfg, now=NOW + 5000)  # a clock once ahead
    (tmp_path / "published" / "manifest.json").unlink()

    assert publish.publish(cfg, now=NOW).manifest.generation == GENERATION + 5001

    shutil.rmtree(tmp_path / "published")  # the directory lost, the state file kept
    assert publish.publish(cfg, now=NOW).manifest.generation == GENERATION + 5002


def test_the_directories_are_readable_by_the_web_server_under_umask_0077(cfg, tmp_path):
    old = os.umask(0o077)
    try:
        result = publish.publish(cfg, now=NOW)
    finally:
        os.umask(old)
    root = tmp_path / "published"

    for directory in (root, root / "generations", root / "generations" / str(result.manifest.generation)):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory


def test_a_publish_refused_as_busy_is_not_recorded(cfg, tmp_path):
    publish.publish(cfg, now=NOW)
    recorded = state.read(cfg.state_dir, publish.scope(cfg))
    with open(tmp_path / "published" / ".publish.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(PublishError) as busy:
            publish.publish(cfg, now=NOW + 60)

    assert busy.value.busy
    assert state.read(cfg.state_dir, publish.scope(cfg)) == recorded


def test_maps_without_the_manifests_marker_are_rendered_again_not_reused(cfg, tmp_path):
    first = publish.publish(cfg, now=NOW)
    passwd = tmp_path / "published" / first.manifest.files["passwd"].path
    lines = passwd.read_bytes().split(b"\n", 1)
    passwd.write_bytes(lines[1])  # an unchanged entry set, but no marker line

    second = publish.publish(cfg, now=NOW + 60)

    assert second.manifest.run != first.manifest.run


def test_a_failed_publish_keeps_the_published_generation_on_record(cfg, tmp_path, iam):
    first = publish.publish(cfg, now=NOW)
    run._CACHE.clear()  # the next publish is another process: it lists IAM again
    iam.fail("Users", status=404)
    with pytest.raises(FetchError):
        publish.publish(cfg, now=NOW + 60)
    shutil.rmtree(tmp_path / "published")
    run._CACHE.clear()

    last = state.read(cfg.state_dir, publish.scope(cfg)).last_run
    assert (last.outcome, last.generation) == ("failed", first.manifest.generation)
    assert publish.publish(cfg, now=NOW).manifest.generation == first.manifest.generation + 1
