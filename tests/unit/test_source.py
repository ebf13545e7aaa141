"""source.CoreWeaveSource: the nsscache Source ``coreweave``, over run.py.

nsscache builds a fresh Source per map; run.py's process cache (``_CACHE``)
makes one process list Users and Groups once for all four maps, and fail all
four the same way; the run is recorded when the process ends (run.finish).
Our errors become nsscache's: FetchError -> SourceUnavailable (remaining
maps skipped), ListingError/ConfigError/GuardError/anything else ->
InvalidMap (old cache kept). Verify() returns an int.
"""

from __future__ import annotations

import io
import logging
import os

import pytest
from nss_cache import error
from nss_cache.caches import cache_factory
from nss_cache.sources import source_factory
from nss_cache.update import map_updater

from nss_cache_coreweave import config as config_mod
from nss_cache_coreweave import marker, policy, run, scim, shrink, snapshot, source, state
from nss_cache_coreweave.errors import (
    AuthError,
    ConfigError,
    CoreWeaveError,
    Failure,
    FetchError,
    FetchReason,
    GuardError,
    ListingError,
    ListingReason,
    StaleCursorError,
)
from nss_cache_coreweave.snapshot import GroupRecord, Member, Snapshot, UserRecord
from nss_cache_coreweave.source import CoreWeaveSource
from support.keys import ed25519_key, rsa_key
from support.scripted_http import (
    BASE,
    TOKEN,
    USER_EXTENSION,
    ScriptedTransport,
    load_page,
    page,
    scim_error,
    session_with,
)

CONF = {
    "name": "coreweave",
    "base_url": BASE,
    "groups": "slurm-users, slurm-sudo",
    "home_directory": "/mnt/home/%u",
    "page_size": 2,
}
MAPS = ("passwd", "group", "shadow", "sshkey")
# A server without /ServiceProviderConfig (asked in the default coreweave_fetch = auto): it does not filter.
NO_SPC = scim_error(404, "no such endpoint")
GETTERS = {
    "passwd": CoreWeaveSource.GetPasswdMap,
    "group": CoreWeaveSource.GetGroupMap,
    "shadow": CoreWeaveSource.GetShadowMap,
    "sshkey": CoreWeaveSource.GetSshkeyMap,
}


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch, tmp_path):
    """Each test is a new nsscache process with the token in the environment,
    on an empty node (no local accounts, no state from an earlier run)."""
    monkeypatch.setitem(CONF, "state_dir", str(tmp_path / "state"))
    monkeypatch.setitem(CONF, "local_passwd", str(tmp_path / "no-passwd"))
    monkeypatch.setitem(CONF, "local_group", str(tmp_path / "no-group"))
    run._CACHE.clear()
    monkeypatch.delenv("NSSCACHE_SCIM_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("NSSCACHE_COREWEAVE_TOKEN", TOKEN)
    yield
    run._CACHE.clear()


def alice(**changes):
    fields = dict(id="u-alice", active=True, name="alice", uid=20001, gid=20001, gecos="Alice Smith",
                  home=None, shell=None, ssh_keys=[ed25519_key()])
    fields.update(changes)
    return UserRecord(**fields)


def bob(**changes):
    fields = dict(id="u-bob", active=True, name="bob", uid=20002, gid=20002, gecos="Bob Jones",
                  home=None, shell=None, ssh_keys=None)
    fields.update(changes)
    return UserRecord(**fields)


def snap(users=None, groups=None):
    users = (alice(), bob()) if users is None else tuple(users)
    groups = (
        GroupRecord("g-users", "slurm-users", 30001, (Member("u-alice", "User"), Member("u-bob", "User"))),
        GroupRecord("g-sudo", "slurm-sudo", 30002, (Member("u-alice", "User"),)),
    ) if groups is None else tuple(groups)
    return Snapshot(users, groups, 0.0)


def lines(map_name, nss_map, tmp_path):
    """The lines nsscache's files writer makes of a map, after its first: the run marker."""
    cache = cache_factory.Create({"name": "files", "dir": str(tmp_path)}, map_name)
    target = io.BytesIO()
    for entry in nss_map:
        cache._WriteData(target, entry)
    written = target.getvalue().decode("ascii").splitlines()
    assert marker.run_of(written[0].encode()) is not None, written[0]
    return written[1:]


def names(nss_map):
    return [e.name for e in nss_map if e.name != marker.NAME]


def every_map(conf=CONF):
    """What ``nsscache update`` asks: a fresh Source per map."""
    return {name: GETTERS[name](CoreWeaveSource(dict(conf))) for name in MAPS}


def nsscache_update(tmp_path, conf=CONF, maps=MAPS):
    """What ``nsscache update --full`` does, with nsscache's own updater and files
    cache in tmp_path/cache, then the end of the process (run.finish)."""
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(exist_ok=True)
    options = {"name": "files", "dir": str(cache_dir), "cache_filename_suffix": "cache"}
    try:
        for name in maps:
            updater = map_updater.MapUpdater(name, str(tmp_path / "timestamps"), dict(options))
            assert updater.UpdateFromSource(CoreWeaveSource(dict(conf)), incremental=False) == 0
    finally:
        run.finish()
    return {name: (cache_dir / f"{name}.cache").read_text().splitlines()[1:] for name in maps}


def serve_from(mocker, transport):
    """Every Session the package opens gets the scripted transport."""
    real = scim.new_session
    mocker.patch.object(scim, "new_session", side_effect=lambda server: session_with(transport, server, real))


# --- one listing per process ------------------------------------------------


def test_four_maps_list_users_and_groups_once(mocker):
    take = mocker.patch.object(snapshot, "take", return_value=snap())
    maps = every_map()
    assert take.call_count == 1
    assert {name: len(names(m)) for name, m in maps.items()} == {"passwd": 2, "group": 2, "shadow": 2, "sshkey": 1}


def test_four_maps_over_the_wire_make_one_walk_of_each_endpoint(mocker):
    transport = ScriptedTransport(
        page(load_page("groups.json")["Resources"]),
        NO_SPC,
        page(load_page("users-index-page1.json")["Resources"], total=3),
        page(load_page("users-index-page2.json")["Resources"], total=3),
    )
    serve_from(mocker, transport)
    every_map()
    assert transport.paths() == ["/scim/cw-test/Groups", "/scim/cw-test/ServiceProviderConfig",
                                 "/scim/cw-test/Users", "/scim/cw-test/Users"]


def test_maps_with_different_allow_lists_list_separately(mocker):
    # The snapshot keeps only the members of its allow-list, so a map with
    # its own coreweave_groups gets its own listing (and the right users).
    take = mocker.patch.object(snapshot, "take", return_value=snap())
    sudo_only = GETTERS["passwd"](CoreWeaveSource({**CONF, "groups": "slurm-sudo"}))
    everyone = GETTERS["passwd"](CoreWeaveSource(dict(CONF)))
    assert take.call_count == 2
    assert (names(sudo_only), names(everyone)) == (["alice"], ["alice", "bob"])


def test_documented_example_renders_the_documented_files(mocker, tmp_path):
    # docs/coreweave-iam-scim.md §8: "Files output for A + C (home template /mnt/home/%u)".
    users_page = load_page("users-index-page1.json")
    keys = [ed25519_key() + " alice@laptop", rsa_key(2048) + " alice@desk"]
    users_page["Resources"][0][USER_EXTENSION]["sunkSshKeys"] = keys
    transport = ScriptedTransport(
        page(load_page("groups.json")["Resources"]),
        NO_SPC,
        page(users_page["Resources"], total=3),
        page(load_page("users-index-page2.json")["Resources"], total=3),
    )
    serve_from(mocker, transport)
    written = {name: lines(name, m, tmp_path) for name, m in every_map().items()}
    assert written == {
        "passwd": [
            "alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash",
            "bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/bash",
        ],
        "group": ["slurm-sudo:x:30002:alice", "slurm-users:x:30001:alice,bob"],
        "shadow": ["alice:*:::::::", "bob:*:::::::"],
        "sshkey": [f"alice:['{keys[0]}', '{keys[1]}']"],
    }


# --- who reaches the maps ---------------------------------------------------


def test_inactive_user_never_reaches_any_map(mocker, tmp_path):
    mocker.patch.object(snapshot, "take", return_value=snap([alice(active=False), bob()]))
    written = {name: lines(name, m, tmp_path) for name, m in every_map().items()}
    assert written == {
        "passwd": ["bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/bash"],
        "group": ["slurm-sudo:x:30002:", "slurm-users:x:30001:bob"],
        "shadow": ["bob:*:::::::"],
        "sshkey": [],
    }


def test_user_outside_allowed_groups_never_reaches_any_map(mocker, tmp_path):
    groups = (
        GroupRecord("g-users", "slurm-users", 30001, (Member("u-bob", "User"),)),
        GroupRecord("g-other", "contractors", 30009, (Member("u-alice", "User"),)),
    )
    mocker.patch.object(snapshot, "take", return_value=snap(groups=groups))
    written = {name: lines(name, m, tmp_path) for name, m in every_map({**CONF, "groups": "slurm-users"}).items()}
    assert written == {
        "passwd": ["bob:x:20002:20002:Bob Jones:/mnt/home/bob:/bin/bash"],
        "group": ["slurm-users:x:30001:bob"],
        "shadow": ["bob:*:::::::"],
        "sshkey": [],
    }


# --- errors -----------------------------------------------------------------

# Our errors as scim.py raises them.
DOWN = FetchError("Users", 1, FetchReason.SERVER_FAILING, failure=Failure("x", status=503), attempts=4)
TOKEN_REFUSED = AuthError("Users", 1, FetchReason.TOKEN_REFUSED, failure=Failure("x", status=401))
CURSOR_EXPIRED = StaleCursorError("Users", 2, FetchReason.STALE_CURSOR, failure=Failure("x", status=400))
SHORT = ListingError("Users", None, ListingReason.COUNT_MISMATCH, collected=1, total=2)
NOT_JSON = ListingError("Users", 1, ListingReason.NOT_JSON)

FAILURES = [
    pytest.param(DOWN, error.SourceUnavailable, "coreweave: {raised}", id="FetchError"),
    pytest.param(TOKEN_REFUSED, error.SourceUnavailable, "coreweave: {raised}", id="AuthError"),
    pytest.param(CURSOR_EXPIRED, error.SourceUnavailable, "coreweave: {raised}", id="StaleCursorError"),
    pytest.param(SHORT, error.InvalidMap, "coreweave: {raised}", id="ListingError"),
    pytest.param(ConfigError("invalid configuration: x"), error.InvalidMap, "coreweave: invalid configuration: x",
                 id="ConfigError"),
    pytest.param(KeyError("id"), error.InvalidMap, "coreweave: internal error (KeyError); the {map} cache is kept",
                 id="KeyError"),
    pytest.param(CoreWeaveError("root"), error.InvalidMap,
                 "coreweave: internal error (CoreWeaveError); the {map} cache is kept", id="CoreWeaveError"),
]


@pytest.mark.parametrize("map_name", MAPS)
@pytest.mark.parametrize("raised, becomes, message", FAILURES)
def test_failure_becomes_the_nsscache_error(mocker, map_name, raised, becomes, message):
    mocker.patch.object(snapshot, "take", side_effect=raised)
    with pytest.raises(becomes) as caught:
        GETTERS[map_name](CoreWeaveSource(dict(CONF)))
    assert type(caught.value) is becomes
    assert str(caught.value) == message.format(map=map_name, raised=raised)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_bad_configuration_is_an_invalid_map_without_listing(mocker):
    take = mocker.patch.object(snapshot, "take")
    with pytest.raises(error.InvalidMap) as caught:
        CoreWeaveSource({"name": "coreweave", "groups": "slurm-users"}).GetPasswdMap()
    assert str(caught.value) == (
        "coreweave: invalid configuration: coreweave_base_url is required "
        "(the SCIM base URL, e.g. https://api.coreweave.com/scim/<org-id>)"
    )
    assert take.call_count == 0


@pytest.mark.parametrize(
    "raised, becomes",
    [
        pytest.param(DOWN, error.SourceUnavailable, id="fetch"),
        pytest.param(SHORT, error.InvalidMap, id="listing"),
    ],
)
def test_cached_failure_is_reraised_without_a_second_listing(mocker, raised, becomes):
    take = mocker.patch.object(snapshot, "take", side_effect=raised)
    for name in MAPS:
        with pytest.raises(becomes) as caught:
            GETTERS[name](CoreWeaveSource(dict(CONF)))
        assert str(caught.value) == f"coreweave: {raised}"
    assert CoreWeaveSource(dict(CONF)).Verify() == 1
    assert take.call_count == 1


# --- Verify -----------------------------------------------------------------


def test_verify_returns_int_zero_when_the_directory_is_readable(mocker):
    mocker.patch.object(snapshot, "take", return_value=snap())
    result = CoreWeaveSource(dict(CONF)).Verify()
    assert (result, type(result)) == (0, int)


@pytest.mark.parametrize(
    "raised",
    [
        pytest.param(DOWN, id="FetchError"),
        pytest.param(TOKEN_REFUSED, id="AuthError"),
        pytest.param(NOT_JSON, id="ListingError"),
        pytest.param(KeyError("id"), id="unexpected-KeyError"),
        pytest.param(RuntimeError("boom"), id="unexpected-RuntimeError"),
    ],
)
def test_verify_returns_int_one_on_any_failure(mocker, raised):
    mocker.patch.object(snapshot, "take", side_effect=raised)
    result = CoreWeaveSource(dict(CONF)).Verify()
    assert (result, type(result)) == (1, int)


def test_verify_returns_one_on_bad_configuration(mocker):
    take = mocker.patch.object(snapshot, "take")
    assert CoreWeaveSource({"name": "coreweave"}).Verify() == 1
    assert take.call_count == 0


# --- the Source contract ----------------------------------------------------


def test_constructor_does_no_work(mocker):
    take = mocker.patch.object(snapshot, "take")
    CoreWeaveSource({})
    CoreWeaveSource({"name": "coreweave", "base_url": "not a url"})
    assert take.call_count == 0


def test_source_is_named_coreweave_on_the_class_itself():
    assert CoreWeaveSource.__dict__["name"] == "coreweave"
    assert CoreWeaveSource.UPDATER is None


def test_register_makes_nsscache_create_the_source(mocker):
    mocker.patch.dict(source_factory._source_implementations)
    source.register()
    created = source_factory.Create({"name": "coreweave", "base_url": BASE})
    assert type(created) is CoreWeaveSource
    assert created.conf == {"name": "coreweave", "base_url": BASE}


def test_token_never_reaches_the_log(mocker, caplog, monkeypatch):
    monkeypatch.delenv("NSSCACHE_COREWEAVE_TOKEN")
    mocker.patch.object(snapshot, "take", return_value=snap([alice(uid=0), bob()]))
    caplog.set_level(logging.DEBUG)
    every_map({**CONF, "token": TOKEN, "tokn": TOKEN})
    assert "dropped user alice: uid 0 (root) is never accepted" in caplog.text
    assert "coreweave_token is set inline" in caplog.text
    assert TOKEN not in caplog.text


# --- the shrink guard ----------------------------------------------------------

SHRINK_3_TO_1 = (
    "coreweave: refusing to shrink users from 3 to 1 (-67%, more than coreweave_max_shrink 25% of the last accepted "
    "run): the previous caches are kept. If this removal is intended, run `nsscache-coreweave update --accept-shrink` "
    "once (or set NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1 for one run)"
)


def scope(conf=CONF):
    return run.state_scope(config_mod.parse(dict(conf)))


def recorded(conf=CONF) -> state.ScopeRecord:
    """What the state file holds for the scope of ``conf``."""
    return state.read(conf["state_dir"], scope(conf))


def accepted_earlier(users, groups, conf=CONF):
    """An earlier run accepted ``users`` and ``groups``: what the shrink guard compares with."""
    state.write(conf["state_dir"], scope(conf), state.ScopeRecord(accepted=state.Counts(users, groups, 0.0)))


def counts(conf=CONF):
    found = recorded(conf).accepted
    return None if found is None else (found.users, found.groups)


def alice_only():
    return snap([alice(), bob(active=False)])


def test_first_accepted_run_records_its_counts(mocker, tmp_path):
    mocker.patch.object(snapshot, "take", return_value=snap())
    nsscache_update(tmp_path)
    assert counts() == (2, 2)


def test_maps_handed_out_but_never_written_record_no_counts(mocker):
    # nsscache asked for every map but wrote none (it failed, or was killed after asking).
    mocker.patch.object(snapshot, "take", return_value=snap())
    every_map()
    run.finish()
    assert counts() is None
    last_run = recorded().last_run
    assert (last_run.outcome, last_run.maps_written, last_run.maps_not_written) == ("incomplete", (), MAPS)


def test_the_run_record_names_the_maps_nsscache_wrote_and_the_run_on_their_first_line(mocker, tmp_path):
    mocker.patch.object(snapshot, "take", return_value=snap())
    nsscache_update(tmp_path, maps=("passwd", "sshkey"))
    record = recorded()
    run_id = record.last_run.run
    assert (record.last_run.outcome, record.last_run.maps_written) == ("ok", ("passwd", "sshkey"))
    assert [(tmp_path / "cache" / f"{name}.cache").read_text().splitlines()[0].split(":")[1] for name in
            ("passwd", "sshkey")] == [f"*{run_id}"] * 2
    assert ({name: (c.run, c.count) for name, c in record.caches.items()}
            == {"passwd": (run_id, 2), "sshkey": (run_id, 1)})


def test_a_run_verified_before_its_maps_is_still_recorded(mocker, tmp_path):
    mocker.patch.object(snapshot, "take", return_value=snap())
    assert CoreWeaveSource(dict(CONF)).Verify() == 0
    nsscache_update(tmp_path)
    assert counts() == (2, 2)


def test_verify_alone_records_nothing(mocker):
    mocker.patch.object(snapshot, "take", return_value=snap())
    assert CoreWeaveSource(dict(CONF)).Verify() == 0
    run.finish()
    assert recorded() == state.ScopeRecord()
    assert not os.path.exists(os.path.join(CONF["state_dir"], state.STATE_FILE))


def test_an_internal_error_fails_every_map_and_is_recorded_once(mocker, caplog):
    decide = mocker.patch.object(policy, "decide", side_effect=PermissionError(13, "Permission denied"))
    mocker.patch.object(snapshot, "take", return_value=snap())
    for name in MAPS:
        with pytest.raises(error.InvalidMap, match=rf"internal error \(PermissionError\); the {name} cache is kept"):
            GETTERS[name](CoreWeaveSource(dict(CONF)))
    run.finish()
    assert decide.call_count == 1
    last_run = recorded().last_run
    assert (last_run.outcome, last_run.error_kind) == ("failed", "InternalError")


def test_finish_records_a_run_once(mocker, tmp_path):
    mocker.patch.object(snapshot, "take", return_value=snap())
    nsscache_update(tmp_path)
    first = recorded()
    run.finish()  # at exit, after nsscache-coreweave update already called it
    assert recorded() == first


def test_state_is_scoped_by_directory_and_allow_list():
    assert scope() == f"{BASE} groups=slurm-users,slurm-sudo"
    assert scope({**CONF, "groups": "*"}) == f"{BASE} groups=*"


def test_a_shrink_beyond_the_limit_refuses_every_map_and_records_nothing(mocker, caplog):
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    for name in MAPS:
        with pytest.raises(error.InvalidMap) as caught:
            GETTERS[name](CoreWeaveSource(dict(CONF)))
        assert type(caught.value) is error.InvalidMap
        assert str(caught.value) == SHRINK_3_TO_1
    run.finish()
    assert counts() == (3, 2)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("refusing to shrink users from 3 to 1" in m for m in errors), errors


def test_the_refusal_is_a_guard_error_carrying_its_counts(mocker):
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    with pytest.raises(GuardError) as caught:
        run.directory(dict(CONF))
    refusal = caught.value
    assert (refusal.what, refusal.before, refusal.now, refusal.max_shrink, refusal.command) == (
        "users", 3, 1, 0.25, "update")


def test_a_shrink_within_the_limit_is_accepted_and_recorded(mocker, tmp_path):
    accepted_earlier(2, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    nsscache_update(tmp_path, {**CONF, "max_shrink": 0.5})
    assert counts({**CONF, "max_shrink": 0.5}) == (1, 2)


def test_accept_shrink_environment_variable_accepts_and_records(mocker, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv(shrink.ACCEPT_SHRINK_ENV, "1")
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    written = nsscache_update(tmp_path)
    assert written["passwd"] == ["alice:x:20001:20001:Alice Smith:/mnt/home/alice:/bin/bash"]
    assert counts() == (1, 2)
    assert f"coreweave: shrink accepted by the operator (NSSCACHE_COREWEAVE_ACCEPT_SHRINK=1): {SHRINK_3_TO_1[11:]}" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("value", ["", "0", "true", "yes", " 1"])
def test_only_accept_shrink_1_accepts(mocker, monkeypatch, value):
    monkeypatch.setenv(shrink.ACCEPT_SHRINK_ENV, value)
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    with pytest.raises(error.InvalidMap):
        CoreWeaveSource(dict(CONF)).GetPasswdMap()
    assert counts() == (3, 2)


def test_after_an_accepted_shrink_the_next_run_compares_with_it(mocker, monkeypatch, tmp_path):
    monkeypatch.setenv(shrink.ACCEPT_SHRINK_ENV, "1")
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    nsscache_update(tmp_path)
    monkeypatch.delenv(shrink.ACCEPT_SHRINK_ENV)
    run._CACHE.clear()  # the next nsscache process
    assert names(every_map()["passwd"]) == ["alice"]


def test_an_emptied_group_set_is_refused(mocker):
    # The listed groups still exist but have lost every member.
    accepted_earlier(2, 2)
    groups = (GroupRecord("g-users", "slurm-users", 30001, ()), GroupRecord("g-sudo", "slurm-sudo", 30002, ()))
    mocker.patch.object(snapshot, "take", return_value=snap(groups=groups))
    for name in MAPS:
        with pytest.raises(error.InvalidMap) as caught:
            GETTERS[name](CoreWeaveSource(dict(CONF)))
        assert str(caught.value).startswith("coreweave: refusing to shrink users from 2 to 0 (-100%")
    assert counts() == (2, 2)


def test_an_emptied_group_set_is_refused_even_with_the_ratio_guard_off(mocker):
    # The whole-run guards: "an empty result for a listed group set that
    # previously had members is refused the same way" -- a guard of its own,
    # lifted only by the one-shot override, not by coreweave_max_shrink = 1.
    conf = {**CONF, "max_shrink": 1}
    accepted_earlier(2, 2, conf)
    groups = (GroupRecord("g-users", "slurm-users", 30001, ()), GroupRecord("g-sudo", "slurm-sudo", 30002, ()))
    mocker.patch.object(snapshot, "take", return_value=snap(groups=groups))
    for name in MAPS:
        with pytest.raises(error.InvalidMap):
            GETTERS[name](CoreWeaveSource(dict(conf)))
    assert counts(conf) == (2, 2)


def test_an_emptied_group_set_is_accepted_by_the_one_shot_override(mocker, monkeypatch, tmp_path):
    monkeypatch.setenv(shrink.ACCEPT_SHRINK_ENV, "1")
    conf = {**CONF, "max_shrink": 1}
    accepted_earlier(2, 2, conf)
    groups = (GroupRecord("g-users", "slurm-users", 30001, ()), GroupRecord("g-sudo", "slurm-sudo", 30002, ()))
    mocker.patch.object(snapshot, "take", return_value=snap(groups=groups))
    written = nsscache_update(tmp_path, conf)
    # Every cache is written, with no user in it: nobody from IAM keeps access.
    assert written == {"passwd": [], "group": ["slurm-sudo:x:30002:", "slurm-users:x:30001:"], "shadow": [],
                       "sshkey": []}
    assert counts(conf) == (0, 2)


def test_an_emptied_directory_with_nothing_to_compare_with_is_refused(mocker):
    groups = (GroupRecord("g-users", "slurm-users", 30001, ()), GroupRecord("g-sudo", "slurm-sudo", 30002, ()))
    mocker.patch.object(snapshot, "take", return_value=snap(groups=groups))
    for name in MAPS:
        with pytest.raises(error.InvalidMap) as caught:
            GETTERS[name](CoreWeaveSource(dict(CONF)))
        assert str(caught.value).startswith(
            "coreweave: refusing an empty directory: no active member of coreweave_groups (slurm-users, slurm-sudo) "
            "is left to write (no earlier accepted run to compare with)"
        )
    assert counts() is None


def test_an_unwritable_state_directory_is_logged_and_the_maps_still_written(mocker, caplog, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    conf = {**CONF, "state_dir": str(blocker / "state")}
    mocker.patch.object(snapshot, "take", return_value=snap())
    assert len(nsscache_update(tmp_path, conf)["passwd"]) == 2
    assert (
        f"coreweave: cannot record this run in {blocker / 'state'} (Not a directory): the shrink guard will "
        "have nothing to compare with; set coreweave_state_dir"
    ) in [r.getMessage() for r in caplog.records]


def test_a_corrupt_state_file_means_nothing_to_compare_with(mocker, tmp_path):
    os.makedirs(CONF["state_dir"], exist_ok=True)
    with open(os.path.join(CONF["state_dir"], state.STATE_FILE), "w") as f:
        f.write("{not json")
    mocker.patch.object(snapshot, "take", return_value=alice_only())
    assert len(nsscache_update(tmp_path)["passwd"]) == 1
    assert counts() == (1, 2)


def test_a_failed_listing_records_no_counts(mocker):
    accepted_earlier(3, 2)
    mocker.patch.object(snapshot, "take", side_effect=SHORT)
    with pytest.raises(error.InvalidMap):
        CoreWeaveSource(dict(CONF)).GetPasswdMap()
    assert counts() == (3, 2)
