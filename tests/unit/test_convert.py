"""``nsscache-coreweave convert-config``: a configuration of CoreWeave's fork
(``source = scim``) -> ``source = coreweave`` (convert.py).

Exit 0 when every key is translated; 1 when something needs a person (the
output is still printed, the key named, nothing widened: an untranslatable
groups filter never becomes ``coreweave_groups = *``); 2 when the file is not
readable or not a fork scim configuration. The fork's keys are those of
docs/fork-scim-source.md (shared docs); every converted file is read back the
way the stock nsscache reads it and parsed by config.parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping

import pytest

from nss_cache_coreweave import cli
from nss_cache_coreweave import config as config_mod
from nss_cache_coreweave.convert import EXIT_NEEDS_PERSON, EXIT_NOT_CONVERTED, EXIT_OK, ROWS, Note, convert
from nss_cache_coreweave.errors import ConfigError

FORK = Path(__file__).resolve().parents[1] / "data" / "fork"
EXT = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
ENV_TOKEN = {"NSSCACHE_SCIM_AUTH_TOKEN": "env-T0ken-5d2e"}
SECRET = "fork-inline-S3cret-9f1c"

# Every key of the fork's scim source (fork-scim-source.md's table), scim_ prefix included.
FORK_KEYS = {
    "scim_base_url", "scim_auth_token", "scim_users_endpoint", "scim_groups_endpoint", "scim_users_parameters",
    "scim_groups_parameters", "scim_max_cursor_pages", "scim_timeout", "scim_verify_ssl", "scim_retry_max",
    "scim_retry_delay", "scim_default_shell", "scim_override_home_directory", "scim_path_username",
    "scim_path_uid", "scim_path_gid", "scim_path_home_directory", "scim_path_login_shell", "scim_path_ssh_keys",
    "scim_path_groupname",
    *(f"scim_shadow_default_{f}" for f in ("lstchg", "min", "max", "warn", "inact", "expire", "flag")),
}

# A complete fork configuration that converts with exit 0; each case below changes one key.
BASE: Dict[str, Dict[str, str]] = {
    "DEFAULT": {
        "source": "scim", "cache": "files", "maps": "passwd, shadow, group, sshkey",
        "timestamp_dir": "/var/lib/nsscache",
        "scim_base_url": "https://iam.example.com/scim",
        "scim_groups_parameters": 'filter=displayName eq "slurm-users"',
    },
    "passwd": {"scim_path_username": "userName", "scim_path_uid": "u/uid", "scim_path_gid": "u/gid",
               "scim_path_home_directory": "u/home", "scim_path_login_shell": "u/shell"},
    "shadow": {"scim_path_username": "userName"},
    "group": {"scim_path_gid": "gid", "scim_path_username": "members/value"},
    "sshkey": {"scim_path_username": "userName", "scim_path_ssh_keys": "u/keys"},
}


def fork_text(changes: Mapping[str, Mapping[str, object]] = {}) -> str:
    """BASE with changes applied (a value None removes the key)."""
    sections = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in changes.items():
        for key, value in keys.items():
            if value is None:
                sections.setdefault(name, {}).pop(key, None)
            else:
                sections.setdefault(name, {})[key] = str(value)
    return "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for name, keys in sections.items())


def configs(text: str, tmp_path: Path, environ: Mapping[str, str] = ENV_TOKEN) -> Dict[str, config_mod.Config]:
    """The converted text as the stock nsscache reads it, each map's options through config.parse."""
    from nss_cache import config as nss_config

    path = tmp_path / "nsscache.conf"
    path.write_text(text)
    conf = nss_config.Config({})
    conf.config_file = str(path)
    nss_config.LoadConfig(conf)
    assert all(conf.options[m].source["name"] == "coreweave" for m in conf.maps)
    return {m: config_mod.parse(conf.options[m].source, environ) for m in conf.maps}


def coreweave_lines(text: str) -> Dict[str, str]:
    """The coreweave_* keys the output sets (not the commented ones)."""
    pairs = (line.partition("=") for line in text.splitlines() if line.startswith("coreweave_"))
    return {key.strip(): value.strip() for key, _, value in pairs}


def comment_above(text: str, key: str) -> str:
    """The first comment line of the block setting (or leaving commented) ``key``."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith((f"{key} =", f"# {key} =")))
    start = at
    while start > 0 and lines[start - 1].startswith("#"):
        start -= 1
    return lines[start]


# --- the two example configurations ------------------------------------------------------------------------------


def test_the_rows_translate_every_key_of_the_fork():
    assert {row.key for row in ROWS} == FORK_KEYS


def test_a_sunk_style_configuration_converts_exactly_with_exit_0(tmp_path):
    result = convert((FORK / "sunk.conf").read_text())
    assert result.status == EXIT_OK
    assert result.text == (FORK / "sunk.coreweave.conf").read_text()
    assert result.notes == (Note("scim_groups_parameters in [DEFAULT]", "coreweave_groups = slurm-users, "
                                 "slurm-admins: matched as POSIX group names (coreweave_group_name_attribute), "
                                 "not displayName"),)
    found = configs(result.text, tmp_path)
    assert set(found) == {"passwd", "shadow", "group", "sshkey"}
    assert len(set(found.values())) == 1  # one configuration for every map: one listing, one run
    config = found["passwd"]
    assert config.warnings == ()  # every key is known (the issue-14 options included)
    assert config.allowed_groups == ("slurm-users", "slurm-admins")
    assert [p.text for p in config.users.name] == [f"{EXT}/sunkPosixUsername"]
    assert [(p.schema, p.names) for p in config.users.uid] == [(EXT, ("sunkPosixUid",))]
    assert [p.text for p in config.users.ssh_keys] == [f"{EXT}/sunkSshKeys"]
    assert [p.text for p in config.groups.name] == ["sunkPosixGroupName"]
    assert [p.text for p in config.groups.gid] == ["sunkPosixGid"]
    assert config.groups.member_match == "auto"
    assert config.home_template == "/mnt/home/%u"
    assert (config.server.pagination, config.server.page_size) == ("cursor", 500)
    assert (config.server.retries, config.server.timeout) == (2, 60.0)
    assert (config.server.users_query, config.server.groups_query) == (None, None)
    assert config.server.token == ENV_TOKEN["NSSCACHE_SCIM_AUTH_TOKEN"]


def test_the_forks_documented_example_converts_exactly_with_exit_1(tmp_path):
    """Its inline token is not copied, and its [group] member path reads no `members`: both need a person."""
    result = convert((FORK / "nsscache-scim.conf").read_text())
    assert result.status == EXIT_NEEDS_PERSON
    assert result.text == (FORK / "nsscache-scim.coreweave.conf").read_text()
    assert [(n.key, n.needs_person) for n in result.notes] == [
        ("scim_auth_token in [DEFAULT]", True), ("scim_groups_parameters in [DEFAULT]", False),
        ("scim_path_username in [group]", True),
    ]
    assert "<token>" not in result.text + "".join(map(str, result.notes))
    assert "# coreweave_token_file = /etc/nsscache-coreweave/token" in result.text.splitlines()
    assert "# coreweave_member_match =" in result.text.splitlines()
    config = configs(result.text, tmp_path)["group"]
    assert config.warnings == ()
    assert config.allowed_groups == ("users", "admin")
    assert config.server.users_query == (("groups", "admin"), ("filter", 'active eq "true"'))
    assert [p.text for p in config.groups.name] == ["displayName"]  # the fork's default, not this package's
    assert config.home_template == "/mnt/home/%u"
    assert config.default_shell == "/bin/bash"


# --- every key, one at a time -----------------------------------------------------------------------------------

KEY_CASES = [
    # (section, fork key, value) -> (coreweave key, value)
    ("DEFAULT", "scim_base_url", "https://other.example.com/scim/", "coreweave_base_url", "https://other.example.com/scim/"),
    ("DEFAULT", "scim_users_endpoint", "v2/Users", "coreweave_users_endpoint", "v2/Users"),
    ("DEFAULT", "scim_groups_endpoint", "v2/Groups", "coreweave_groups_endpoint", "v2/Groups"),
    ("DEFAULT", "scim_users_parameters", 'filter=active eq "true"', "coreweave_users_query", 'filter=active eq "true"'),
    ("group", "scim_groups_parameters", 'filter=displayName eq "a" or displayName eq "b"&sortBy=displayName',
     "coreweave_groups", "a, b"),
    ("group", "scim_groups_parameters", 'filter=displayName eq "a"&sortBy=displayName',
     "coreweave_groups_query", "sortBy=displayName"),
    ("DEFAULT", "scim_max_cursor_pages", "500", "coreweave_max_pages", "500"),
    ("DEFAULT", "scim_timeout", "90", "coreweave_timeout", "90"),
    ("DEFAULT", "scim_timeout", "7.5", "coreweave_timeout", "7.5"),
    ("DEFAULT", "scim_verify_ssl", "True", "coreweave_verify_tls", "true"),
    ("DEFAULT", "scim_retry_max", "3", "coreweave_retries", "2"),
    ("DEFAULT", "scim_retry_max", "1", "coreweave_retries", "0"),
    ("passwd", "scim_default_shell", "/bin/sh", "coreweave_default_shell", "/bin/sh"),
    ("passwd", "scim_override_home_directory", "/home/%%u", "coreweave_home_directory", "/home/%%u"),
    ("DEFAULT", "scim_path_username", f"{EXT}/sunkPosixUsername", "coreweave_user_name_attribute",
     f"{EXT}/sunkPosixUsername"),
    ("passwd", "scim_path_uid", f"{EXT}/sunkPosixUid", "coreweave_uid_attribute", f"{EXT}/sunkPosixUid"),
    ("passwd", "scim_path_gid", "x/primaryGid", "coreweave_gid_attribute", "x/primaryGid"),
    ("passwd", "scim_path_home_directory", "x/home", "coreweave_home_attribute", "x/home"),
    ("passwd", "scim_path_login_shell", "x/shell", "coreweave_shell_attribute", "x/shell"),
    ("sshkey", "scim_path_ssh_keys", f"{EXT}/sunkSshKeys", "coreweave_ssh_keys_attribute", f"{EXT}/sunkSshKeys"),
    ("group", "scim_path_groupname", "sunkPosixGroupName", "coreweave_group_name_attribute", "sunkPosixGroupName"),
    ("group", "scim_path_gid", "sunkPosixGid", "coreweave_group_gid_attribute", "sunkPosixGid"),
    ("group", "scim_path_username", "members/value", "coreweave_member_match", "auto"),
    ("group", "scim_path_username", "members/display", "coreweave_member_match", "display"),
    ("group", "scim_path_username", "members/userName", "coreweave_member_match", "userName"),
    ("group", "scim_path_username", "display", "coreweave_member_match", "display"),
    *(("shadow", f"scim_shadow_default_{f}", "99999" if f == "max" else "7", f"coreweave_shadow_default_{f}",
       "99999" if f == "max" else "7") for f in ("min", "max", "warn", "inact", "flag")),
    ("shadow", "scim_shadow_default_lstchg", "19000", "coreweave_shadow_default_lstchg", "19000"),
    ("shadow", "scim_shadow_default_expire", "", "coreweave_shadow_default_expire", ""),
]


@pytest.mark.parametrize("section, key, value, target, expected", KEY_CASES,
                         ids=[f"{c[1]}={c[2]}" for c in KEY_CASES])
def test_each_fork_key_is_translated_under_a_comment_naming_it(section, key, value, target, expected, tmp_path):
    changes = {section: {key: value}} if section == "DEFAULT" else {section: {key: value}, "DEFAULT": {}}
    if key == "scim_path_username" and section == "DEFAULT":
        changes.update({m: {key: None} for m in ("passwd", "shadow", "sshkey")})
    result = convert(fork_text(changes))
    assert result.status == EXIT_OK, result.notes
    assert coreweave_lines(result.text)[target] == expected
    assert comment_above(result.text, target).startswith(f"# {key} in [{section}]")
    assert configs(result.text, tmp_path)["passwd"].warnings == ()


def test_the_users_gid_and_the_groups_gid_are_one_key_in_two_sections():
    result = convert(fork_text({"passwd": {"scim_path_gid": "u/gid"}, "group": {"scim_path_gid": "gid"}}))
    assert coreweave_lines(result.text)["coreweave_gid_attribute"] == "u/gid"
    assert coreweave_lines(result.text)["coreweave_group_gid_attribute"] == "gid"


def test_unset_paths_get_the_forks_defaults_not_this_packages():
    result = convert(fork_text({m: {"scim_path_username": None} for m in ("passwd", "shadow", "group", "sshkey")}))
    lines = coreweave_lines(result.text)
    assert (lines["coreweave_user_name_attribute"], lines["coreweave_member_match"]) == ("userName", "userName")
    assert lines["coreweave_group_name_attribute"] == "displayName"
    assert comment_above(result.text, "coreweave_group_name_attribute") == "# scim_path_groupname (unset)"


def test_the_environment_token_needs_no_key_and_an_inline_one_is_never_copied():
    assert "coreweave_token" not in "".join(coreweave_lines(convert(fork_text()).text))
    result = convert(fork_text({"DEFAULT": {"scim_auth_token": SECRET}}))
    assert result.status == EXIT_NEEDS_PERSON
    assert SECRET not in result.text + "".join(map(str, result.notes))
    assert result.notes[0].key == "scim_auth_token in [DEFAULT]"


def test_nsscaches_own_keys_are_kept_as_written():
    result = convert(fork_text({"DEFAULT": {"lockfile": "/run/nsscache.lock", "files_dir": "/etc/nsscache"},
                                "passwd": {"cache": "files"}, "suffix": {"prefix": '""'}}))
    lines = result.text.splitlines()
    assert "source = coreweave" in lines and "source = scim" not in lines
    assert "lockfile = /run/nsscache.lock" in lines and "files_dir = /etc/nsscache" in lines
    assert lines[lines.index("[passwd]") + 1] == "cache = files"
    assert lines[lines.index("[suffix]") + 1] == 'prefix = ""'


# --- what needs a person: exit 1, the key named, nothing widened ------------------------------------------------

FILTER = "scim_groups_parameters"
UNTRANSLATABLE = [
    # (changes, the fork key named, the coreweave key left commented or None)
    ({"DEFAULT": {FILTER: 'filter=displayName sw "slurm"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "a" and active eq "true"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=(displayName eq "a")'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "a,b"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "a"&filter=displayName eq "b"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: None}}, FILTER, "coreweave_groups"),
    # group names from the filter must be POSIX group names: "*" never becomes every group
    ({"DEFAULT": {FILTER: 'filter=displayName eq "*"'}}, FILTER, "coreweave_groups"),
    ({"group": {FILTER: 'filter=displayName eq "*"'}}, f"{FILTER} in [group]", "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "a" or displayName eq "*"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "Slurm Users"'}}, FILTER, "coreweave_groups"),
    ({"DEFAULT": {FILTER: 'filter=displayName eq "a"&startIndex=5'}}, FILTER, None),
    ({"DEFAULT": {"scim_users_parameters": "cursor"}}, "scim_users_parameters", "coreweave_pagination"),
    ({"DEFAULT": {"scim_users_parameters": "count=100", FILTER: 'count=50&filter=displayName eq "a"'}},
     "scim_users_parameters", "coreweave_page_size"),
    ({"group": {"scim_path_username": "sunkPosixUsername"}}, "scim_path_username in [group]",
     "coreweave_member_match"),
    ({"sshkey": {"scim_path_username": "other"}}, "scim_path_username in [passwd], [shadow], [sshkey]",
     "coreweave_user_name_attribute"),
    ({"passwd": {"scim_path_uid": None}}, "scim_path_uid (unset)", "coreweave_uid_attribute"),
    ({"sshkey": {"scim_path_ssh_keys": None}}, "scim_path_ssh_keys (unset)", "coreweave_ssh_keys_attribute"),
    ({"passwd": {"scim_override_home_directory": "/shared/home"}}, "scim_override_home_directory",
     "coreweave_home_directory"),
    ({"DEFAULT": {"scim_verify_ssl": "False"}}, "scim_verify_ssl", "coreweave_verify_tls"),
    ({"DEFAULT": {"scim_timeout": "0"}}, "scim_timeout", "coreweave_timeout"),
    ({"DEFAULT": {"scim_retry_max": "20"}}, "scim_retry_max", "coreweave_retries"),
    ({"shadow": {"scim_shadow_default_max": "-1"}}, "scim_shadow_default_max", "coreweave_shadow_default_max"),
    # what config.parse refuses is never set: exit 1 with the key named, not a configuration failing every run
    ({"DEFAULT": {"scim_users_parameters": "startindex=3"}}, "scim_users_parameters", "coreweave_users_query"),
    ({"DEFAULT": {"scim_users_parameters": "Cursor"}}, "scim_users_parameters", "coreweave_users_query"),
    ({"DEFAULT": {"scim_users_parameters": "active"}}, "scim_users_parameters", "coreweave_users_query"),
    ({"passwd": {"scim_default_shell": "bash"}}, "scim_default_shell", "coreweave_default_shell"),
    ({"shadow": {"scim_shadow_default_max": "99999999999"}}, "scim_shadow_default_max",
     "coreweave_shadow_default_max"),
    ({"shadow": {"scim_shadow_default_min": "\u00b2"}}, "scim_shadow_default_min", "coreweave_shadow_default_min"),
    ({"DEFAULT": {"scim_max_cursor_pages": "0"}}, "scim_max_cursor_pages", "coreweave_max_pages"),
    ({"DEFAULT": {"scim_base_url": "http://iam.example.com/scim"}}, "scim_base_url", "coreweave_base_url"),
    ({"DEFAULT": {"scim_auth_tokn": "x"}}, "scim_auth_tokn", None),
    ({"DEFAULT": {"maps": "passwd, group, netgroup"}}, "", None),
]


@pytest.mark.parametrize("changes, named, left", UNTRANSLATABLE, ids=[str(c[0]) for c in UNTRANSLATABLE])
def test_what_cannot_be_translated_is_left_for_a_person_and_never_widened(changes, named, left):
    result = convert(fork_text(changes))
    assert result.status == EXIT_NEEDS_PERSON
    assert any(n.needs_person and n.key.startswith(named) for n in result.notes), result.notes
    assert result.text.startswith("# nsscache.conf for source = coreweave")  # still printed
    assert "coreweave_groups = *" not in result.text
    if left is not None:
        assert left not in coreweave_lines(result.text)
        assert any(line.startswith(f"# {left} =") for line in result.text.splitlines())


@pytest.mark.parametrize("changes, named, left", UNTRANSLATABLE, ids=[str(c[0]) for c in UNTRANSLATABLE])
def test_every_key_set_is_one_config_parse_accepts(changes, named, left, tmp_path):
    """What config.parse refuses is only ever a key left commented for a person."""
    text = convert(fork_text(changes)).text
    try:
        configs(text, tmp_path)
    except ConfigError as e:
        commented = {line[2:].partition(" =")[0] for line in text.splitlines() if line.startswith("# coreweave_")}
        assert set(e.keys) <= commented, e


def test_a_value_config_parse_refuses_is_left_commented_under_its_message():
    result = convert(fork_text({"passwd": {"scim_default_shell": "bash"}}))
    message = "coreweave_default_shell must be an absolute, clean path, got 'bash'"
    assert [n for n in result.notes if n.needs_person] == [Note("scim_default_shell in [passwd]", message, True)]
    lines = result.text.splitlines()
    at = lines.index("# coreweave_default_shell = bash")
    assert lines[at - 2:at] == ["# scim_default_shell in [passwd]", f"# this package refuses it: {message}"]


UNTRANSLATABLE_FILTERS = [
    'filter=displayName sw "slurm"&sortBy=displayName',
    'filter=displayName eq "a"&filter=displayName eq "b"&sortBy=displayName',
    'Filter=displayName eq "*"&sortBy=displayName',
]


@pytest.mark.parametrize("parameters", UNTRANSLATABLE_FILTERS)
def test_a_groups_filter_is_never_sent_to_the_server(parameters):
    """A filter on the server would hide the groups that hold users' primary gids: it stays a comment."""
    result = convert(fork_text({"DEFAULT": {FILTER: parameters}}))
    assert result.status == EXIT_NEEDS_PERSON
    assert coreweave_lines(result.text)["coreweave_groups_query"] == "sortBy=displayName"
    assert "coreweave_groups" not in coreweave_lines(result.text)
    assert [n.key for n in result.notes if n.needs_person] == [f"{FILTER} in [DEFAULT]"]
    assert comment_above(result.text, "coreweave_groups").startswith(f"# {FILTER} in [DEFAULT]: the fork's groups "
                                                                     "filter")


def test_a_key_the_fork_does_not_read_where_it_is_is_noted_not_translated():
    result = convert(fork_text({"shadow": {"scim_path_gid": "u/gid"}}))
    assert result.status == EXIT_OK
    assert Note("scim_path_gid", "in [shadow]: the fork does not read it there (dropped)") in result.notes


# --- not converted: exit 2, nothing printed ---------------------------------------------------------------------

NOT_FORK = {
    "empty": "",
    "no section": "source = scim\n",
    "not ini": "[DEFAULT\nsource = scim\n",
    "no source": "[DEFAULT]\nmaps = passwd\n",
    "another source": "[DEFAULT]\nsource = ldap\ncache = files\nmaps = passwd\nldap_uri = ldap://x\n",
    "already coreweave": "[DEFAULT]\nsource = coreweave\nmaps = passwd\ncoreweave_groups = *\n",
    "bad interpolation": f"[DEFAULT]\nsource = scim\nmaps = passwd\nscim_auth_token = {SECRET}%x\n",
}


@pytest.mark.parametrize("text", NOT_FORK.values(), ids=NOT_FORK.keys())
def test_what_is_not_a_fork_scim_configuration_is_not_converted(text):
    result = convert(text)
    assert (result.status, result.text) == (EXIT_NOT_CONVERTED, "")
    assert len(result.notes) == 1 and SECRET not in str(result.notes[0])


def test_an_interpolation_error_names_the_key_never_the_value():
    result = convert(NOT_FORK["bad interpolation"])
    assert "option 'scim_auth_token'" in str(result.notes[0])


# --- the command ------------------------------------------------------------------------------------------------


def test_the_command_prints_the_conversion_and_the_notes_on_stderr(capsys):
    assert cli.main(["convert-config", str(FORK / "nsscache-scim.conf")]) == EXIT_NEEDS_PERSON
    out, err = capsys.readouterr()
    assert out == (FORK / "nsscache-scim.coreweave.conf").read_text()
    assert err.splitlines()[0] == (f"{FORK / 'nsscache-scim.conf'}: needs a person: scim_auth_token in [DEFAULT]: "
                                   "an inline token (not copied): put it in a root-only file (chmod 600) named by "
                                   "coreweave_token_file; in the fork an inline token wins over the environment, "
                                   "here a token file or NSSCACHE_COREWEAVE_TOKEN / NSSCACHE_SCIM_AUTH_TOKEN wins "
                                   "over an inline coreweave_token")
    assert cli.main(["convert-config", str(FORK / "sunk.conf")]) == EXIT_OK


@pytest.mark.parametrize("content", [
    fork_text({"DEFAULT": {"scim_auth_token": SECRET}}),
    fork_text({"passwd": {"scim_auth_token": SECRET}, "group": {"scim_auth_token": SECRET + "2"}}),
    NOT_FORK["bad interpolation"],
], ids=["inline", "per map, disagreeing", "unreadable"])
def test_the_command_never_prints_the_token(content, tmp_path, capsys):
    path = tmp_path / "fork.conf"
    path.write_text(content)
    cli.main(["-v", "convert-config", str(path)])
    out, err = capsys.readouterr()
    assert SECRET not in out + err


@pytest.mark.parametrize("make", ["missing", "directory", "not utf-8"])
def test_the_command_exits_2_for_a_file_it_cannot_read(make, tmp_path, capsys):
    path = tmp_path / "fork.conf"
    if make == "directory":
        path.mkdir()
    elif make == "not utf-8":
        path.write_bytes(b"[DEFAULT]\nsource = scim\xff\n")
    assert cli.main(["convert-config", str(path)]) == EXIT_NOT_CONVERTED
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"{path}: cannot be read: ")
