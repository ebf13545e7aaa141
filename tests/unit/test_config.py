"""config: nsscache's prefix-stripped options -> one frozen, validated Config.

nsscache hands the source its ``coreweave_*`` options without the prefix,
after ``FixValue`` stripped one pair of quotes and turned numbers into
int/float. Every option is one row of config.OPTIONS (kind, default, range,
meaning); every problem is reported in one ConfigError as (key, message)
pairs; the bearer token never appears in a message, a warning or a repr.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle

import pytest
from nss_cache.config import FixValue

from nss_cache_coreweave import config
from nss_cache_coreweave.config import (
    KEYS,
    OPTIONS,
    USER_EXTENSION,
    AttributePath,
    Kind,
    Option,
    Reader,
    parse,
    parse_path,
)
from nss_cache_coreweave.errors import ConfigError, ConfigProblem

BASE = "https://api.coreweave.com/scim/cw623e"
TOKEN = "cwT0ken-secret-value"
ENV = {"NSSCACHE_COREWEAVE_TOKEN": TOKEN}
REQUIRED = {"base_url": BASE, "groups": "slurm-users"}


def ok(environ=ENV, **options):
    return parse({**REQUIRED, **options}, environ=environ)


def problems(environ=ENV, **options) -> tuple:
    """Every (key, message) the options are refused with."""
    with pytest.raises(ConfigError) as caught:
        parse({**REQUIRED, **options}, environ=environ)
    return caught.value.problems


def problem(environ=ENV, **options) -> ConfigProblem:
    """The one problem the options are refused with."""
    (only,) = problems(environ, **options)
    return only


def ext(name):
    return AttributePath(USER_EXTENSION, (name,), f"{USER_EXTENSION}:{name}")


def top(*names):
    return AttributePath(None, names, ".".join(names))


# --- defaults ---------------------------------------------------------------

# key -> (what the Config holds for it, its value when the key is not set)
DEFAULTS = {
    "base_url": (lambda c: c.server.base_url, BASE),  # required: REQUIRED sets it
    "users_endpoint": (lambda c: c.server.users_url, BASE + "/Users"),
    "groups_endpoint": (lambda c: c.server.groups_url, BASE + "/Groups"),
    "token_file": (lambda c: c.server.token, TOKEN),  # unset: the environment's token
    "token": (lambda c: c.server.token, TOKEN),
    "groups": (lambda c: c.allowed_groups, ("slurm-users",)),  # required
    "user_name_attribute": (lambda c: c.users.name, (ext("sunkPosixUsername"),)),
    "uid_attribute": (lambda c: c.users.uid, (ext("sunkPosixUid"),)),
    "gid_attribute": (lambda c: c.users.gid, (ext("sunkPosixGid"),)),
    "ssh_keys_attribute": (lambda c: c.users.ssh_keys, (ext("sunkSshKeys"),)),
    "home_attribute": (lambda c: c.users.home, (ext("sunkHomeDirectory"),)),
    "shell_attribute": (lambda c: c.users.shell, (ext("sunkLoginShell"),)),
    "gecos_attribute": (lambda c: c.users.gecos, (top("displayName"), top("name", "formatted"))),
    "group_name_attribute": (lambda c: c.groups.name, (top("sunkPosixGroupName"), top("displayName"))),
    "group_gid_attribute": (lambda c: c.groups.gid, (top("sunkPosixGid"),)),
    "member_match": (lambda c: c.groups.member_match, "auto"),
    "home_directory": (lambda c: c.home_template, None),
    "default_shell": (lambda c: c.default_shell, "/bin/bash"),
    "min_uid": (lambda c: c.min_uid, 1000),
    "max_uid": (lambda c: c.max_uid, 4294967294),
    "min_gid": (lambda c: c.min_gid, 1000),
    "max_gid": (lambda c: c.max_gid, 4294967294),
    "allowed_shells": (lambda c: c.allowed_shells, frozenset(
        line.strip() for line in open("/etc/shells") if line.strip() and not line.startswith("#")
    )),
    "local_passwd": (lambda c: c.local_passwd, "/etc/passwd"),
    "local_group": (lambda c: c.local_group, "/etc/group"),
    **{"shadow_default_" + field: ((lambda c, field=field: getattr(c.shadow, field)), None)  # empty: name:*:::::::
       for field in config.SHADOW_FIELDS},
    "ssh_key_types": (lambda c: c.keys.types, frozenset({"ed25519", "ecdsa", "sk-ed25519", "sk-ecdsa", "rsa"})),
    "min_rsa_bits": (lambda c: c.keys.min_rsa_bits, 2048),
    "allow_key_options": (lambda c: c.keys.allow_options, False),
    "max_shrink": (lambda c: c.max_shrink, 0.25),
    "state_dir": (lambda c: c.state_dir, "/var/lib/nsscache"),
    "metrics_file": (lambda c: c.metrics_file, None),
    "slurm_accounts": (lambda c: c.slurm.accounts, None),  # slurm-sync keys: tests/unit/test_slurm.py
    "slurm_cluster": (lambda c: c.slurm.clusters, None),
    "slurm_parent_account": (lambda c: c.slurm.parent_account, "root"),
    "slurm_sacctmgr": (lambda c: c.slurm.sacctmgr, "sacctmgr"),
    "slurm_timeout": (lambda c: c.slurm.timeout, 600.0),
    "page_size": (lambda c: c.server.page_size, 1000),
    "pagination": (lambda c: c.server.pagination, "index"),
    "users_query": (lambda c: c.server.users_query, None),
    "fetch": (lambda c: c.server.fetch, "auto"),
    "groups_query": (lambda c: c.server.groups_query, None),
    "max_pages": (lambda c: c.server.max_pages, 10000),
    "max_users": (lambda c: c.server.max_users, 2_000_000),
    "workers": (lambda c: c.server.workers, 2),
    "max_page_bytes": (lambda c: c.server.max_page_bytes, 64 * 1024 * 1024),
    "timeout": (lambda c: c.server.timeout, 30.0),
    "retries": (lambda c: c.server.retries, 3),
    "max_retry_wait": (lambda c: c.server.max_retry_wait, 60.0),
    "deadline": (lambda c: c.server.deadline, 300.0),
    "ca_bundle": (lambda c: c.server.verify, True),
    "verify_tls": (lambda c: c.server.verify, True),
    "publish_dir": (lambda c: c.publish.directory, ""),  # publish only
    "publish_key": (lambda c: c.publish.key_file, ""),
    "publish_keep": (lambda c: c.publish.keep, 3),
    "mirror_url": (lambda c: c.mirror, None),  # unset: no mirror mode
    "mirror_public_key": (lambda c: c.mirror, None),
    "mirror_max_age": (lambda c: c.mirror.max_age, 3600.0),  # read in mirror mode: MIRROR_ONLY
}
MIRROR = {"mirror_url": "https://nsscache.cluster.example/bundle",
          "mirror_public_key": os.path.join(os.path.dirname(__file__), "..", "data", "mirror", "publisher.pub")}
MIRROR_ONLY = {"mirror_max_age"}


def ok_for(key, **options):
    """``ok`` with the options that make ``key`` count (mirror mode for mirror-only keys)."""
    return ok(**{**(MIRROR if key in MIRROR_ONLY else {}), **options})


def test_every_key_has_a_default_test():
    assert set(DEFAULTS) == set(KEYS)


@pytest.mark.parametrize("key", sorted(DEFAULTS))
def test_unset_key_takes_its_default(key):
    read, expected = DEFAULTS[key]
    value = read(ok_for(key))
    assert value == expected
    assert type(value) is type(expected)


def test_minimal_configuration_has_no_warnings():
    assert ok().warnings == ()


def test_empty_value_means_unset():
    cfg = ok(page_size="", users_endpoint="  ", home_directory="")
    assert (cfg.server.page_size, cfg.server.users_url, cfg.home_template) == (1000, BASE + "/Users", None)


# --- the option table: every option declared once ----------------------------

NUMERIC = [row for row in OPTIONS if row.kind in (Kind.INTEGER, Kind.NUMBER, Kind.OPTIONAL_INTEGER)]


def test_keys_are_the_names_and_defaults_of_the_table():
    assert list(KEYS.items()) == [(row.name, row.default) for row in OPTIONS]
    assert len(KEYS) == len(OPTIONS)  # no name declared twice
    assert all(config.option(row.name) is row for row in OPTIONS)


@pytest.mark.parametrize("row", OPTIONS, ids=lambda row: row.name)
def test_each_row_is_complete(row):
    assert row.key == "coreweave_" + row.name
    assert row.doc and "\n" not in row.doc and "|" not in row.doc  # one cell of a Markdown table
    assert row.default is not None or row.shown  # "required", "unset", or what unset means
    if row.kind in (Kind.INTEGER, Kind.NUMBER):
        assert type(row.default) is (int if row.kind is Kind.INTEGER else float)
        assert math.isfinite(row.low) and math.isfinite(row.high) and row.low <= row.default <= row.high
    elif row.kind is Kind.OPTIONAL_INTEGER:  # unset is empty: no default, only a range
        assert row.default is None and math.isfinite(row.low) and math.isfinite(row.high) and row.low <= row.high
    else:
        assert (row.low, row.high) == (-math.inf, math.inf)  # a range only numbers can have
    assert (row.default in row.choices) if row.kind is Kind.CHOICE else True
    assert isinstance(row.default, bool) if row.kind is Kind.BOOLEAN else True


@pytest.mark.parametrize("row", NUMERIC, ids=lambda row: row.name)
def test_a_number_is_accepted_at_its_bounds_and_refused_beyond(row):
    read, _ = DEFAULTS[row.name]
    lowest_minimums = {"min_uid": 1, "min_gid": 1}  # so that a max_* at its lowest bound is not below its min_*
    mode = MIRROR if row.name in MIRROR_ONLY else {}
    for bound in (row.low, row.high):
        assert read(ok(**{**mode, **lowest_minimums, row.name: bound})) == bound
    step = 0.01 if row.kind is Kind.NUMBER else 1
    for beyond in (row.low - step, row.high + step):
        refused, *_ = problems(**{**mode, row.name: beyond})  # (a min_* past its bound may also exceed its max_*)
        assert refused.key == row.key
        assert f"must be between {row.low} and {row.high}, got " in refused.message


# The dataclasses keep defaults for code that builds them directly (tests, scripted servers): the table's.
DATACLASS_DEFAULTS = [
    *[(config.Server, name, name) for name in ("page_size", "pagination", "max_pages", "max_users", "workers",
                                               "max_page_bytes", "timeout", "retries", "max_retry_wait", "deadline")],
    (config.Server, "verify", "verify_tls"),
    (config.Server, "users_query", "users_query"),
    (config.Server, "fetch", "fetch"),
    (config.Server, "groups_query", "groups_query"),
    (config.SlurmSync, "accounts", "slurm_accounts"),
    (config.SlurmSync, "clusters", "slurm_cluster"),
    (config.SlurmSync, "parent_account", "slurm_parent_account"),
    (config.SlurmSync, "sacctmgr", "slurm_sacctmgr"),
    (config.SlurmSync, "timeout", "slurm_timeout"),
    *[(config.ShadowDefaults, field, "shadow_default_" + field) for field in config.SHADOW_FIELDS],
]


@pytest.mark.parametrize("cls, field, name", DATACLASS_DEFAULTS, ids=lambda v: getattr(v, "__name__", v))
def test_a_dataclass_default_is_the_table_s(cls, field, name):
    default = {f.name: f.default for f in dataclasses.fields(cls)}[field]
    assert default == KEYS[name]
    assert type(default) is type(KEYS[name])


def test_every_dataclass_default_is_compared_with_the_table():
    defaulted = {(cls, f.name) for cls in (config.Server, config.SlurmSync, config.ShadowDefaults)
                 for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    assert defaulted == {(cls, field) for cls, field, _ in DATACLASS_DEFAULTS}


def test_markdown_table_shows_each_default_as_nsscache_conf_spells_it():
    rows = [
        Option("verify_tls", Kind.BOOLEAN, True, "checks"),
        Option("timeout", Kind.NUMBER, 30.0, "seconds", low=0.1, high=3600),
        Option("max_shrink", Kind.NUMBER, 0.25, "share", low=0.0, high=1.0),
        Option("base_url", Kind.TEXT, None, "where", shown="required"),
    ]
    assert config.markdown_table(rows).splitlines() == [
        "| key | default | meaning |",
        "|---|---|---|",
        "| `coreweave_verify_tls` | `true` | checks |",
        "| `coreweave_timeout` | `30` | seconds |",
        "| `coreweave_max_shrink` | `0.25` | share |",
        "| `coreweave_base_url` | required | where |",
    ]


# --- the reader ---------------------------------------------------------------


def test_the_reader_returns_typed_values_and_the_table_s_defaults():
    r = Reader.of({"name": "coreweave", "page_size": "50", "verify_tls": "no", "groups": " a, b,,a ", "timeout": 5})
    assert r.integer("page_size") == 50
    assert r.boolean("verify_tls") is False
    assert r.names("groups") == ("a", "b", "a")
    assert r.number("timeout") == 5.0 and type(r.number("timeout")) is float
    assert (r.integer("retries"), r.choice("pagination"), r.absolute("state_dir")) == (3, "index", "/var/lib/nsscache")
    assert (r.text("home_directory"), r.absolute("metrics_file")) == ("", "")  # unset, no default
    assert (r.problems, r.warnings) == ([], [])


def test_the_reader_collects_problems_instead_of_raising():
    r = Reader.of({"page_size": 0, "timeout": "soon", "pagination": "Offset", "pagesize": 5})
    assert r.integer("page_size") == 0  # out of range: kept as given, and reported
    assert r.number("timeout") == 30.0  # unreadable: the default, and reported
    assert r.choice("pagination") == "offset"
    assert r.problems == [
        ConfigProblem("coreweave_page_size", "coreweave_page_size must be between 1 and 10000, got 0"),
        ConfigProblem("coreweave_timeout", "coreweave_timeout must be a number, got 'soon'"),
        ConfigProblem("coreweave_pagination", "coreweave_pagination must be index or cursor, got 'offset'"),
    ]
    assert r.warnings == ["unknown option coreweave_pagesize is ignored (a typo?)"]


def test_reading_an_option_as_another_kind_is_a_bug_not_a_configuration_problem():
    with pytest.raises(TypeError, match="coreweave_page_size is declared integer, but read as number"):
        Reader.of({}).number("page_size")


# --- the error ------------------------------------------------------------------


def test_config_error_renders_its_problems_in_order():
    error = ConfigError.invalid([ConfigProblem("coreweave_retries", "coreweave_retries must be ..."),
                                 ConfigProblem("", "no bearer token: ...")])
    assert str(error) == "invalid configuration: coreweave_retries must be ...; no bearer token: ..."
    assert error.keys == ("coreweave_retries", "")


def test_config_error_of_one_message_renders_it_as_given():
    error = ConfigError("/etc/nsscache.conf: no such file (use -c)")
    assert str(error) == "/etc/nsscache.conf: no such file (use -c)"
    assert error.problems == (ConfigProblem("", "/etc/nsscache.conf: no such file (use -c)"),)


def test_config_error_keeps_its_fields_through_pickle():
    error = ConfigError.invalid([ConfigProblem("coreweave_retries", "coreweave_retries must be ...")])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.problems, str(copy)) == (error.problems, str(error))


# --- required keys ----------------------------------------------------------


def test_missing_required_keys_are_reported_in_one_error():
    with pytest.raises(ConfigError) as caught:
        parse({}, environ={})
    base_url, groups, token = caught.value.problems
    # The token is missing from every source, not from one option: its key is "".
    assert caught.value.keys == ("coreweave_base_url", "coreweave_groups", "")
    assert "is required (the SCIM base URL, e.g. https://api.coreweave.com/scim/<org-id>)" in base_url.message
    assert "is required: the POSIX groups whose members may log in, comma-separated, or *" in groups.message
    assert token.message.startswith("no bearer token: set coreweave_token_file (recommended), or "
                                    "NSSCACHE_COREWEAVE_TOKEN / NSSCACHE_SCIM_AUTH_TOKEN in the environment")


def test_every_problem_is_reported_together():
    found = problems(page_size=0, timeout="soon", retries=11, pagination="offset", verify_tls="maybe",
                     default_shell="bash")
    assert {p.key: p.message.split(" ", 1)[1] for p in found} == {
        "coreweave_pagination": "must be index or cursor, got 'offset'",
        "coreweave_verify_tls": "must be true or false, got 'maybe'",
        "coreweave_default_shell": "must be an absolute, clean path, got 'bash'",
        "coreweave_page_size": "must be between 1 and 10000, got 0",
        "coreweave_timeout": "must be a number, got 'soon'",
        "coreweave_retries": "must be between 0 and 10, got 11",
    }
    assert len(found) == 6
    assert all(p.message.startswith(p.key + " ") for p in found)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- values as nsscache's FixValue hands them over --------------------------


@pytest.mark.parametrize(
    "key, raw, read, expected",
    [
        pytest.param("page_size", "500", lambda c: c.server.page_size, 500, id="int"),
        pytest.param("page_size", "'500'", lambda c: c.server.page_size, 500, id="quoted-int"),
        pytest.param("page_size", "1000.0", lambda c: c.server.page_size, 1000, id="float-1000.0"),
        pytest.param("page_size", "1e3", lambda c: c.server.page_size, 1000, id="float-1e3"),
        pytest.param("page_size", "0042", lambda c: c.server.page_size, 42, id="leading-zeros"),
        pytest.param("retries", "0", lambda c: c.server.retries, 0, id="zero-retries"),
        pytest.param("timeout", "30", lambda c: c.server.timeout, 30.0, id="int-timeout"),
        pytest.param("timeout", "2.5", lambda c: c.server.timeout, 2.5, id="float-timeout"),
        pytest.param("min_uid", "2000.0", lambda c: c.min_uid, 2000, id="float-uid"),
        pytest.param("verify_tls", '"true"', lambda c: c.server.verify, True, id="quoted-true"),
        pytest.param("verify_tls", "True", lambda c: c.server.verify, True, id="True"),
        pytest.param("verify_tls", "yes", lambda c: c.server.verify, True, id="yes"),
        pytest.param("verify_tls", "on", lambda c: c.server.verify, True, id="on"),
        pytest.param("verify_tls", "1", lambda c: c.server.verify, True, id="int-1"),
        pytest.param("verify_tls", "'false'", lambda c: c.server.verify, False, id="quoted-false"),
        pytest.param("verify_tls", "No", lambda c: c.server.verify, False, id="No"),
        pytest.param("verify_tls", "off", lambda c: c.server.verify, False, id="off"),
        pytest.param("verify_tls", "0", lambda c: c.server.verify, False, id="int-0"),
        pytest.param("pagination", '"cursor"', lambda c: c.server.pagination, "cursor", id="quoted-cursor"),
        pytest.param("pagination", "Cursor", lambda c: c.server.pagination, "cursor", id="Cursor"),
        pytest.param("member_match", "username", lambda c: c.groups.member_match, "userName",
                     id="member-match-as-spelled"),
        pytest.param("member_match", "ID", lambda c: c.groups.member_match, "id", id="member-match-ID"),
        pytest.param("pagination", "INDEX", lambda c: c.server.pagination, "index", id="INDEX"),
        pytest.param("groups", "'slurm-users, slurm-sudo'", lambda c: c.allowed_groups, ("slurm-users", "slurm-sudo"),
                     id="quoted-groups"),
        pytest.param("groups", "a,b , a,,", lambda c: c.allowed_groups, ("a", "b"), id="groups-deduplicated"),
        pytest.param("groups", "*", lambda c: c.allowed_groups, None, id="star-is-every-group"),
        pytest.param("groups", " * ", lambda c: c.allowed_groups, None, id="star-spaced"),
        pytest.param("home_directory", "'/mnt/home/%u'", lambda c: c.home_template, "/mnt/home/%u", id="quoted-home"),
        pytest.param("default_shell", '"/bin/zsh"', lambda c: c.default_shell, "/bin/zsh", id="quoted-shell"),
        pytest.param("base_url", BASE + "/", lambda c: c.server.users_url, BASE + "/Users",
                     id="base-url-trailing-slash"),
        pytest.param("users_endpoint", "/People/", lambda c: c.server.users_url, BASE + "/People",
                     id="endpoint-slashes"),
        pytest.param("groups_endpoint", "Teams", lambda c: c.server.groups_url, BASE + "/Teams", id="groups-endpoint"),
        pytest.param("ca_bundle", "/etc/ssl/iam-ca.pem", lambda c: c.server.verify, "/etc/ssl/iam-ca.pem",
                     id="ca-bundle"),
    ],
)
def test_nsscache_value_shapes_are_understood(key, raw, read, expected):
    value = read(ok(**{key: FixValue(raw)}))
    assert value == expected
    assert type(value) is type(expected)


# --- base URL: plain http only to a loopback host ----------------------------

HTTP_ONLY_LOOPBACK = "http:// is accepted only for a loopback test server (localhost, 127.0.0.0/8, ::1)"


@pytest.mark.parametrize(
    "url, host",
    [
        pytest.param("http://api.coreweave.com/scim/cw623e", "api.coreweave.com", id="name"),
        pytest.param("http://10.0.0.1:8080/scim", "10.0.0.1", id="private-ipv4"),
        pytest.param("http://0.0.0.0:8080/scim", "0.0.0.0", id="unspecified"),
        pytest.param("http://[::2]:8080/scim", "::2", id="ipv6"),
        pytest.param("http://[::ffff:127.0.0.1]/scim", "::ffff:127.0.0.1", id="ipv4-mapped"),
        pytest.param("http://localhost.evil.example/scim", "localhost.evil.example", id="localhost-prefix"),
        pytest.param("http://127.0.0.1.evil.example/scim", "127.0.0.1.evil.example", id="loopback-looking-name"),
        pytest.param("http://127.0.0.1@evil.example/scim", "evil.example", id="loopback-as-userinfo"),
        pytest.param("http://localhost:8080@evil.example:8080/scim", "evil.example", id="localhost-as-userinfo"),
        pytest.param("http:///scim", "", id="no-host"),
        pytest.param("http://[::1/scim", "", id="unbalanced-bracket"),
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused(url, host):
    refused = problem(base_url=url)
    assert refused.key == "coreweave_base_url"
    assert f"must use https:// for host {host!r}: {HTTP_ONLY_LOOPBACK}, got {url!r}" in refused.message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://api.coreweave.com/scim/cw623e", id="https-name"),
        pytest.param("https://10.0.0.1:8443/scim", id="https-ip"),
        pytest.param("https://[2001:db8::1]/scim", id="https-ipv6"),
        pytest.param("http://127.0.0.1:8080/scim/cw-demo", id="127.0.0.1-port"),
        pytest.param("http://127.9.9.9/scim", id="127/8"),
        pytest.param("http://localhost/scim", id="localhost"),
        pytest.param("http://LocalHost:8080/scim", id="localhost-any-case"),
        pytest.param("http://[::1]:8080/scim", id="ipv6-loopback-port"),
        pytest.param("http://[::1]/scim", id="ipv6-loopback"),
    ],
)
def test_https_to_any_host_and_plain_http_to_loopback_are_accepted(url):
    assert ok(base_url=url).server.base_url == url


def test_verify_tls_false_wins_over_ca_bundle():
    assert ok(ca_bundle="/etc/ssl/iam-ca.pem", verify_tls="false").server.verify is False


# --- refused values ---------------------------------------------------------


@pytest.mark.parametrize(
    "options, key, expected",
    [
        pytest.param({"page_size": 1000.5}, "coreweave_page_size", "must be an integer, got 1000.5", id="fractional"),
        pytest.param({"page_size": "ten"}, "coreweave_page_size", "must be an integer, got 'ten'", id="word"),
        pytest.param({"page_size": True}, "coreweave_page_size", "must be an integer, got True", id="bool"),
        pytest.param({"retries": "3 # three"}, "coreweave_retries", "must be an integer, got '3 # three'",
                     id="comment-is-part-of-value"),
        pytest.param({"page_size": float("nan")}, "coreweave_page_size", "must be an integer, got nan", id="nan"),
        pytest.param({"page_size": float("inf")}, "coreweave_page_size", "must be an integer, got inf", id="inf"),
        pytest.param({"retries": FixValue("1e400")}, "coreweave_retries", "must be an integer, got inf", id="1e400"),
        pytest.param({"timeout": False}, "coreweave_timeout", "must be a number, got False", id="bool-timeout"),
        pytest.param({"timeout": "30s"}, "coreweave_timeout", "must be a number, got '30s'", id="unit-suffix"),
        pytest.param({"page_size": 0}, "coreweave_page_size", "must be between 1 and 10000, got 0", id="page-size-0"),
        pytest.param({"page_size": 10001}, "coreweave_page_size", "must be between 1 and 10000, got 10001",
                     id="page-size-too-big"),
        pytest.param({"timeout": 0}, "coreweave_timeout", "must be between 0.1 and 3600, got 0.0", id="timeout-0"),
        pytest.param({"timeout": 3601}, "coreweave_timeout", "must be between 0.1 and 3600, got 3601.0",
                     id="timeout-too-long"),
        pytest.param({"timeout": float("nan")}, "coreweave_timeout", "must be between 0.1 and 3600, got nan",
                     id="timeout-nan"),
        pytest.param({"retries": -1}, "coreweave_retries", "must be between 0 and 10, got -1", id="retries-negative"),
        pytest.param({"min_uid": 0}, "coreweave_min_uid", "must be between 1 and 4294967294, got 0", id="min-uid-0"),
        pytest.param({"max_gid": 4294967295}, "coreweave_max_gid", "must be between 1 and 4294967294, got 4294967295",
                     id="max-gid-2**32-1"),
        pytest.param({"min_uid": 5000, "max_uid": 4000}, "coreweave_min_uid",
                     "coreweave_min_uid/min_gid must not exceed coreweave_max_uid/max_gid", id="min-above-max"),
        pytest.param({"min_gid": 5000, "max_gid": 4000}, "coreweave_min_gid",
                     "coreweave_min_uid/min_gid must not exceed coreweave_max_uid/max_gid", id="min-gid-above-max"),
        pytest.param({"verify_tls": "maybe"}, "coreweave_verify_tls", "must be true or false, got 'maybe'",
                     id="bool-word"),
        pytest.param({"verify_tls": 2}, "coreweave_verify_tls", "must be true or false, got 2", id="bool-2"),
        pytest.param({"pagination": "offset"}, "coreweave_pagination", "must be index or cursor, got 'offset'",
                     id="pagination"),
        pytest.param({"base_url": "api.coreweave.com/scim/x"},
                     "coreweave_base_url", "must start with https:// (or http:// for a loopback test server), "
                     "got 'api.coreweave.com/scim/x'", id="base-url-scheme"),
        pytest.param({"base_url": "/"}, "coreweave_base_url", "must start with https:// (or http:// for a loopback "
                     "test server), got ''", id="base-url-only-slashes"),
        pytest.param({"groups": " , "}, "coreweave_groups", "names no group", id="no-group"),
        pytest.param({"ca_bundle": "certs/ca.pem"}, "coreweave_ca_bundle",
                     "must be an absolute path, got 'certs/ca.pem'", id="relative-ca"),
        pytest.param({"default_shell": "bash"}, "coreweave_default_shell",
                     "must be an absolute, clean path, got 'bash'", id="relative-shell"),
        pytest.param({"home_directory": "home/%u"},
                     "coreweave_home_directory", "must be an absolute path template holding %%u (the username), "
                     "got 'home/%u'", id="relative-home"),
        # Without %u every user would have the same home, and each would be dropped for it.
        pytest.param({"home_directory": "/home/shared"},
                     "coreweave_home_directory", "must be an absolute path template holding %%u (the username), "
                     "got '/home/shared'", id="home-without-user"),
        pytest.param({"max_users": 0}, "coreweave_max_users", "must be between 1 and 100000000, got 0",
                     id="max-users-0"),
        pytest.param({"user_name_attribute": ","}, "coreweave_user_name_attribute", "must name an attribute",
                     id="no-name-path"),
        pytest.param({"uid_attribute": " , "}, "coreweave_uid_attribute", "must name an attribute", id="no-uid-path"),
        pytest.param({"group_gid_attribute": ","}, "coreweave_group_gid_attribute",
                     "coreweave_group_name_attribute and coreweave_group_gid_attribute must name an attribute",
                     id="no-group-gid-path"),
        pytest.param({"group_name_attribute": " ,"}, "coreweave_group_name_attribute", "must name an attribute",
                     id="no-group-name-path"),
        pytest.param({"gecos_attribute": "name..givenName"}, "coreweave_gecos_attribute",
                     "coreweave_gecos_attribute: attribute path 'name..givenName' is malformed", id="malformed-path"),
        pytest.param({"users_query": "filter=x&startIndex=5"}, "coreweave_users_query",
                     "coreweave_users_query must not set 'startIndex': paging is the client's", id="query-startIndex"),
        pytest.param({"groups_query": "COUNT=5"}, "coreweave_groups_query",
                     "coreweave_groups_query must not set 'COUNT': paging is the client's", id="query-count"),
        # The fork's bare `cursor` item (cursor paging) is coreweave_pagination = cursor here.
        pytest.param({"users_query": "groups=admin&cursor"}, "coreweave_users_query",
                     "coreweave_users_query must not set 'cursor': paging is the client's (coreweave_page_size, "
                     "coreweave_pagination)", id="query-bare-cursor"),
        pytest.param({"users_query": "cursor=abc"}, "coreweave_users_query", "must not set 'cursor'",
                     id="query-cursor"),
        pytest.param({"users_query": "active"}, "coreweave_users_query",
                     "coreweave_users_query: 'active' is not name=value", id="query-no-value"),
        pytest.param({"groups_query": "=x"}, "coreweave_groups_query",
                     "coreweave_groups_query: '=x' is not name=value", id="query-no-name"),
        # Parameter names are ASCII: a server folding case the Unicode way (Java's equalsIgnoreCase)
        # would take `ſtartIndex` (long s) as startIndex, or `fılter` (dotless i) as filter.
        pytest.param({"users_query": "\u017ftartIndex=5"}, "coreweave_users_query",
                     "coreweave_users_query: parameter name '\u017ftartIndex' must be ASCII letters, digits, '_', '.' "
                     "or '-'", id="query-non-ascii-name"),
        pytest.param({"groups_query": "f\u0131lter=x"}, "coreweave_groups_query",
                     "parameter name 'f\u0131lter' must be", id="query-dotless-i"),
        pytest.param({"users_query": "a b=1"}, "coreweave_users_query", "parameter name 'a b' must be",
                     id="query-name-with-space"),
    ],
)
def test_bad_value_is_refused_naming_the_option(options, key, expected):
    refused = problem(**options)
    assert refused.key == key
    assert expected in refused.message


# --- unknown keys -----------------------------------------------------------


def test_unknown_key_is_a_warning_naming_the_key():
    assert ok(page_sise=50).warnings == ("unknown option coreweave_page_sise is ignored (a typo?)",)


def test_unknown_keys_are_warned_in_sorted_order():
    assert ok(zeta=1, alpha=2).warnings == (
        "unknown option coreweave_alpha is ignored (a typo?)",
        "unknown option coreweave_zeta is ignored (a typo?)",
    )


def test_nsscache_name_option_is_not_unknown():
    assert ok(name="coreweave").warnings == ()


# --- the bearer token -------------------------------------------------------


@pytest.fixture
def token_file(tmp_path):
    def write(content, mode=0o600, name="token"):
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        os.chmod(path, mode)
        return str(path)

    return write


@pytest.mark.parametrize(
    "sources, expected",
    [
        pytest.param(("file", "env1", "env2", "inline"), "from-file", id="file-first"),
        pytest.param(("env1", "env2", "inline"), "from-env1", id="NSSCACHE_COREWEAVE_TOKEN-second"),
        pytest.param(("env2", "inline"), "from-env2", id="NSSCACHE_SCIM_AUTH_TOKEN-third"),
        pytest.param(("inline",), "from-inline", id="inline-last"),
        pytest.param(("file", "inline"), "from-file", id="file-over-inline"),
        pytest.param(("env1", "env2"), "from-env1", id="env1-over-env2"),
    ],
)
def test_token_precedence(token_file, sources, expected):
    options, environ = {}, {}
    if "file" in sources:
        options["token_file"] = token_file("from-file\n")
    if "env1" in sources:
        environ["NSSCACHE_COREWEAVE_TOKEN"] = "from-env1"
    if "env2" in sources:
        environ["NSSCACHE_SCIM_AUTH_TOKEN"] = "from-env2"
    if "inline" in sources:
        options["token"] = "from-inline"
    assert ok(environ=environ, **options).server.token == expected


def test_blank_environment_variable_is_skipped():
    environ = {"NSSCACHE_COREWEAVE_TOKEN": "  \n", "NSSCACHE_SCIM_AUTH_TOKEN": "from-env2"}
    assert ok(environ=environ).server.token == "from-env2"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("  tok3n  \n", id="spaces-and-newline"),
        pytest.param("tok3n\r\n", id="crlf"),
        pytest.param("\ttok3n\n\n", id="tab-and-blank-line"),
    ],
)
def test_token_file_whitespace_is_stripped(token_file, content):
    assert ok(environ={}, token_file=token_file(content)).server.token == "tok3n"


def test_environment_token_whitespace_is_stripped():
    assert ok(environ={"NSSCACHE_SCIM_AUTH_TOKEN": " tok3n\n"}).server.token == "tok3n"


def test_inline_token_is_used_with_a_warning():
    cfg = ok(environ={}, token=" tok3n ")
    assert cfg.server.token == "tok3n"
    assert cfg.warnings == ("coreweave_token is set inline in a world-readable nsscache.conf: "
                            "use coreweave_token_file",)


def test_relative_token_file_is_refused():
    # nsscache runs sources from a temporary working directory: a relative path would find nothing.
    assert problem(environ=ENV, token_file="secrets/token") == ConfigProblem(
        "coreweave_token_file", "coreweave_token_file must be an absolute path, got 'secrets/token'"
    )


def test_unreadable_token_file_is_refused_without_falling_back(tmp_path, token_file):
    missing, directory, latin1 = str(tmp_path / "missing"), str(tmp_path), token_file(b"caf\xe9")
    for path, reason in ((missing, "No such file or directory"), (directory, "Is a directory"),
                         (latin1, "UnicodeDecodeError")):
        refused = problem(environ=ENV, token_file=path)
        assert refused.key == "coreweave_token_file"
        assert f"{path!r} cannot be read: {reason}" in refused.message


def test_empty_token_file_is_refused(token_file):
    path = token_file(" \n")
    refused = problem(token_file=path)
    assert refused.key == "coreweave_token_file"
    assert f"the bearer token from coreweave_token_file {path!r} is empty" in refused.message


@pytest.mark.parametrize(
    "mode, warned",
    [
        pytest.param(0o600, False, id="0600"),
        pytest.param(0o400, False, id="0400"),
        pytest.param(0o640, True, id="0640-group-readable"),
        pytest.param(0o604, True, id="0604-world-readable"),
        pytest.param(0o644, True, id="0644"),
        pytest.param(0o620, True, id="0620-group-writable"),
    ],
)
def test_token_file_open_to_group_or_others_warns(token_file, mode, warned):
    path = token_file("tok3n", mode=mode)
    expected = (f"coreweave_token_file {path!r} is readable by group or others: chmod 600 it",) if warned else ()
    assert ok(environ={}, token_file=path).warnings == expected


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("tok en", id="space"),
        pytest.param("tok\ten", id="tab"),
        pytest.param("tök3n", id="non-ascii"),
        pytest.param("tok\x00en", id="nul"),
        pytest.param("tok\x7fen", id="del"),
    ],
)
def test_token_with_spaces_or_non_printable_characters_is_refused(token, token_file):
    path = token_file(token)
    for environ, options, key, source in (
        ({"NSSCACHE_COREWEAVE_TOKEN": token}, {}, "", "environment variable NSSCACHE_COREWEAVE_TOKEN"),
        ({}, {"token_file": path}, "coreweave_token_file", f"coreweave_token_file {path!r}"),
        ({}, {"token": token}, "coreweave_token", "coreweave_token"),
    ):
        refused = problem(environ=environ, **options)
        assert refused.key == key
        assert f"the bearer token from {source} contains spaces or non-printable characters" in refused.message


SECRET = "S3cr3t-T0ken-zz9"


@pytest.mark.parametrize(
    "options, environ",
    [
        pytest.param({"token": SECRET}, {}, id="inline-ok"),
        pytest.param({"token": SECRET, "page_size": 0}, {}, id="inline-with-problem"),
        pytest.param({"token": SECRET + " x"}, {}, id="inline-with-space"),
        pytest.param({"tokn": SECRET, "token": SECRET}, {}, id="typo-key-with-token"),
        pytest.param({"base_url": None}, {"NSSCACHE_SCIM_AUTH_TOKEN": SECRET}, id="env-with-problem"),
        pytest.param({}, {"NSSCACHE_COREWEAVE_TOKEN": SECRET + "\x01"}, id="env-non-printable"),
    ],
)
def test_token_never_appears_in_repr_errors_or_warnings(options, environ):
    options = {k: v for k, v in {**REQUIRED, **options}.items() if v is not None}
    try:
        cfg = parse(options, environ=environ)
    except ConfigError as e:
        text = str(e) + repr(e)
    else:
        text = repr(cfg) + str(cfg) + repr(cfg.server) + " ".join(cfg.warnings)
        assert cfg.server.token.startswith(SECRET)
    assert SECRET not in text


def test_token_file_contents_never_appear_in_repr(token_file):
    cfg = ok(environ={}, token_file=token_file(SECRET, mode=0o644))
    assert cfg.server.token == SECRET
    assert SECRET not in repr(cfg) + " ".join(cfg.warnings)


# --- attribute paths --------------------------------------------------------

CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


@pytest.mark.parametrize(
    "text, schema, names",
    [
        pytest.param("userName", None, ("userName",), id="core-attribute"),
        pytest.param("name.givenName", None, ("name", "givenName"), id="sub-attribute"),
        pytest.param(f"{USER_EXTENSION}:sunkSshKeys", USER_EXTENSION, ("sunkSshKeys",), id="coreweave-urn"),
        pytest.param(f"{USER_EXTENSION}:sunkName.first", USER_EXTENSION, ("sunkName", "first"),
                     id="coreweave-urn-sub-attribute"),
        pytest.param(f"{USER_EXTENSION}/sunkSshKeys", USER_EXTENSION, ("sunkSshKeys",), id="slash-form-urn"),
        pytest.param(f"{USER_EXTENSION}/sunkName/first", USER_EXTENSION, ("sunkName", "first"),
                     id="slash-form-urn-sub"),
        pytest.param("name/givenName", None, ("name", "givenName"), id="slash-form"),
        pytest.param("members/value", None, ("members", "value"), id="slash-form-members"),
        pytest.param(f"{CORE_USER}:userName", None, ("userName",), id="core-schema-qualified"),
        pytest.param(f"{CORE_USER}:name.givenName", None, ("name", "givenName"), id="core-schema-qualified-sub"),
        pytest.param(f"{CORE_USER}/name/givenName", None, ("name", "givenName"), id="core-schema-slash-form"),
        pytest.param("urn:ietf:params:scim:schemas:core:2.0:Group:displayName", None, ("displayName",),
                     id="core-group"),
        pytest.param(f"{CORE_USER.upper()}:userName", None, ("userName",), id="core-schema-any-case"),
        pytest.param(f"{ENTERPRISE}:employeeNumber", ENTERPRISE, ("employeeNumber",), id="enterprise-extension"),
        pytest.param(f"{ENTERPRISE}:manager.value", ENTERPRISE, ("manager", "value"), id="enterprise-sub-attribute"),
    ],
)
def test_attribute_path_notation(text, schema, names):
    assert parse_path(text) == AttributePath(schema, names, text)
    assert str(parse_path(text)) == text


def test_attribute_path_is_stripped():
    assert parse_path("  name.givenName \t") == AttributePath(None, ("name", "givenName"), "name.givenName")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("name.", id="trailing-dot"),
        pytest.param(".name", id="leading-dot"),
        pytest.param("name..givenName", id="double-dot"),
        pytest.param("urn:", id="bare-urn"),
        pytest.param("urn:x", id="urn-without-attribute"),
        pytest.param(f"{USER_EXTENSION}:", id="urn-trailing-colon"),
        pytest.param(f"{USER_EXTENSION}:sunkName.", id="urn-trailing-dot"),
        pytest.param("/name", id="leading-slash"),
        pytest.param("name/", id="trailing-slash"),
        pytest.param("name//givenName", id="double-slash"),
        pytest.param(f"{USER_EXTENSION}/", id="urn-slash-nothing"),
    ],
)
def test_malformed_attribute_path_is_refused(text):
    with pytest.raises(ConfigError) as caught:
        parse_path(text)
    # Not one option's problem yet: parse files it under the option holding the path.
    assert caught.value.problems == (ConfigProblem("", f"attribute path {text.strip()!r} is malformed"),)


def test_comma_separated_paths_keep_their_order():
    cfg = ok(gecos_attribute=f"name.formatted, displayName ,{USER_EXTENSION}:sunkGecos")
    assert cfg.users.gecos == (top("name", "formatted"), top("displayName"), ext("sunkGecos"))


def test_module_exports():
    assert config.TOKEN_ENV_VARS == ("NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN")


# --- the hardening keys -------------------------------------------------------


@pytest.mark.parametrize(
    "key, raw, read, expected",
    [
        pytest.param("allowed_shells", "/bin/bash, /bin/zsh", lambda c: c.allowed_shells,
                     frozenset({"/bin/bash", "/bin/zsh"}), id="shells"),
        pytest.param("allowed_shells", "'/bin/bash,,/bin/bash '", lambda c: c.allowed_shells, frozenset({"/bin/bash"}),
                     id="shells-quoted-deduplicated"),
        pytest.param("local_passwd", "/srv/node/passwd", lambda c: c.local_passwd, "/srv/node/passwd",
                     id="local-passwd"),
        pytest.param("local_group", "'/srv/node/group'", lambda c: c.local_group, "/srv/node/group",
                     id="local-group-quoted"),
        pytest.param("ssh_key_types", "ed25519", lambda c: c.keys.types, frozenset({"ed25519"}), id="key-types-one"),
        pytest.param("ssh_key_types", "ED25519 , Rsa", lambda c: c.keys.types, frozenset({"ed25519", "rsa"}),
                     id="key-types-case"),
        pytest.param("ssh_key_types", "sk-ed25519,sk-ecdsa", lambda c: c.keys.types,
                     frozenset({"sk-ed25519", "sk-ecdsa"}), id="key-types-fido"),
        pytest.param("min_rsa_bits", "3072", lambda c: c.keys.min_rsa_bits, 3072, id="min-rsa-bits"),
        pytest.param("min_rsa_bits", "4096.0", lambda c: c.keys.min_rsa_bits, 4096, id="min-rsa-bits-float"),
        pytest.param("allow_key_options", "true", lambda c: c.keys.allow_options, True, id="key-options-true"),
        pytest.param("allow_key_options", "'yes'", lambda c: c.keys.allow_options, True, id="key-options-quoted-yes"),
        pytest.param("allow_key_options", "0", lambda c: c.keys.allow_options, False, id="key-options-0"),
        pytest.param("max_shrink", "0.5", lambda c: c.max_shrink, 0.5, id="max-shrink"),
        pytest.param("max_shrink", "1", lambda c: c.max_shrink, 1.0, id="max-shrink-1-disables"),
        pytest.param("max_shrink", "0", lambda c: c.max_shrink, 0.0, id="max-shrink-0"),
        pytest.param("state_dir", "/var/lib/nsscache-coreweave", lambda c: c.state_dir, "/var/lib/nsscache-coreweave",
                     id="state-dir"),
        pytest.param("max_pages", "50", lambda c: c.server.max_pages, 50, id="max-pages"),
        pytest.param("max_users", "5000", lambda c: c.server.max_users, 5000, id="max-users"),
        pytest.param("max_page_bytes", "1024", lambda c: c.server.max_page_bytes, 1024, id="max-page-bytes-min"),
        pytest.param("max_page_bytes", "1e6", lambda c: c.server.max_page_bytes, 1000000, id="max-page-bytes-1e6"),
        pytest.param("max_retry_wait", "0", lambda c: c.server.max_retry_wait, 0.0, id="max-retry-wait-0"),
        pytest.param("max_retry_wait", "2.5", lambda c: c.server.max_retry_wait, 2.5, id="max-retry-wait"),
        pytest.param("deadline", "45", lambda c: c.server.deadline, 45.0, id="deadline"),
        pytest.param("deadline", "1", lambda c: c.server.deadline, 1.0, id="deadline-min"),
    ],
)
def test_hardening_values_are_understood(key, raw, read, expected):
    value = read(ok(**{key: FixValue(raw)}))
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "options, key, expected",
    [
        pytest.param({"allowed_shells": "bash, /bin/zsh, zsh"},
                     "coreweave_allowed_shells", "must list absolute paths, got bash, zsh", id="relative-shells"),
        pytest.param({"ssh_key_types": "dsa"},
                     "coreweave_ssh_key_types",
                     "must name some of ecdsa, ed25519, rsa, sk-ecdsa, sk-ed25519, got 'dsa'", id="key-types-dsa"),
        pytest.param({"ssh_key_types": "ed25519, ssh-rsa"},
                     "coreweave_ssh_key_types", "must name some of ecdsa, ed25519, rsa, sk-ecdsa, sk-ed25519, "
                     "got 'ed25519, ssh-rsa'", id="key-types-openssh-name"),
        pytest.param({"ssh_key_types": " , "},
                     "coreweave_ssh_key_types", "must name some of ecdsa, ed25519, rsa, sk-ecdsa, sk-ed25519, got ','",
                     id="key-types-none"),
        pytest.param({"min_rsa_bits": 1023}, "coreweave_min_rsa_bits", "must be between 1024 and 16384, got 1023",
                     id="min-rsa-bits-low"),
        pytest.param({"min_rsa_bits": 16385}, "coreweave_min_rsa_bits", "must be between 1024 and 16384, got 16385",
                     id="min-rsa-bits-high"),
        pytest.param({"min_rsa_bits": "2k"}, "coreweave_min_rsa_bits", "must be an integer, got '2k'",
                     id="min-rsa-bits-word"),
        pytest.param({"allow_key_options": "sometimes"},
                     "coreweave_allow_key_options", "must be true or false, got 'sometimes'", id="key-options-word"),
        pytest.param({"max_pages": 0}, "coreweave_max_pages", "must be between 1 and 1000000, got 0", id="max-pages-0"),
        pytest.param({"max_pages": 1.5}, "coreweave_max_pages", "must be an integer, got 1.5", id="max-pages-fraction"),
        pytest.param({"max_page_bytes": 1023}, "coreweave_max_page_bytes",
                     "must be between 1024 and 2147483648, got 1023", id="max-page-bytes-low"),
        pytest.param({"max_page_bytes": 2**31 + 1},
                     "coreweave_max_page_bytes", "must be between 1024 and 2147483648, got 2147483649",
                     id="max-page-bytes-high"),
        pytest.param({"max_retry_wait": -1}, "coreweave_max_retry_wait", "must be between 0 and 3600, got -1.0",
                     id="max-retry-wait-negative"),
        pytest.param({"max_retry_wait": "1m"}, "coreweave_max_retry_wait", "must be a number, got '1m'",
                     id="max-retry-wait-unit"),
        pytest.param({"deadline": 0}, "coreweave_deadline", "must be between 1 and 86400, got 0.0", id="deadline-0"),
        pytest.param({"deadline": 86401}, "coreweave_deadline", "must be between 1 and 86400, got 86401.0",
                     id="deadline-too-long"),
        pytest.param({"deadline": True}, "coreweave_deadline", "must be a number, got True", id="deadline-bool"),
    ],
)
def test_bad_hardening_value_is_refused_naming_the_option(options, key, expected):
    refused = problem(**{"allowed_shells": "/bin/bash", **options})
    assert refused.key == key
    assert expected in refused.message


# These four are checked after the others: a mistake in them must still be
# reported, not silently replaced by the default (or kept as given).
@pytest.mark.parametrize(
    "options, key, expected",
    [
        pytest.param({"max_shrink": 1.5}, "coreweave_max_shrink", "must be between 0.0 and 1.0, got 1.5",
                     id="max-shrink-above-1"),
        pytest.param({"max_shrink": -0.1}, "coreweave_max_shrink", "must be between 0.0 and 1.0, got -0.1",
                     id="max-shrink-negative"),
        pytest.param({"max_shrink": "25%"}, "coreweave_max_shrink", "must be a number, got '25%'",
                     id="max-shrink-percent"),
        pytest.param({"state_dir": "state"}, "coreweave_state_dir", "must be an absolute path, got 'state'",
                     id="state-dir-relative"),
        pytest.param({"local_passwd": "passwd"}, "coreweave_local_passwd", "must be an absolute path, got 'passwd'",
                     id="local-passwd-relative"),
        pytest.param({"local_group": "etc/group"}, "coreweave_local_group", "must be an absolute path, got 'etc/group'",
                     id="local-group-relative"),
    ],
)
def test_bad_guard_value_is_refused_naming_the_option(options, key, expected):
    refused = problem(allowed_shells="/bin/bash", **options)
    assert refused.key == key
    assert expected in refused.message


def test_guard_mistakes_are_reported_together_with_the_others():
    found = problems(allowed_shells="/bin/bash", page_size=0, max_shrink=2, state_dir="state")
    assert {p.key: p.message for p in found} == {
        "coreweave_page_size": "coreweave_page_size must be between 1 and 10000, got 0",
        "coreweave_max_shrink": "coreweave_max_shrink must be between 0.0 and 1.0, got 2.0",
        "coreweave_state_dir": "coreweave_state_dir must be an absolute path, got 'state'",
    }
    assert len(found) == 3


@pytest.fixture
def shells_file(tmp_path, monkeypatch):
    """The node's /etc/shells, replaced by a file of the test's."""
    path = tmp_path / "shells"
    monkeypatch.setattr(config, "SHELLS_FILE", str(path))
    return path


def test_allowed_shells_default_to_the_nodes_etc_shells(shells_file):
    shells_file.write_text("# /etc/shells: valid login shells\n/bin/sh\n\n/bin/bash\n/usr/bin/bash\n  /bin/zsh  \n")
    cfg = ok()
    assert cfg.allowed_shells == frozenset({"/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/zsh"})
    assert cfg.warnings == ()


def test_configured_shells_replace_etc_shells(shells_file):
    shells_file.write_text("/bin/sh\n/bin/bash\n")
    assert ok(allowed_shells="/bin/zsh, /bin/bash").allowed_shells == frozenset({"/bin/zsh", "/bin/bash"})


def test_unreadable_etc_shells_is_a_configuration_error(shells_file):
    refused = problem()
    assert refused.key == str(shells_file)  # a file, not an option, is at fault
    assert refused.message.endswith("cannot be read (No such file or directory): set coreweave_allowed_shells")


def test_configured_shells_need_no_etc_shells(shells_file):
    assert ok(allowed_shells="/bin/bash").allowed_shells == frozenset({"/bin/bash"})


def test_default_shell_outside_the_allowed_shells_is_a_warning():
    cfg = ok(allowed_shells="/bin/zsh")
    assert cfg.warnings == ("coreweave_default_shell /bin/bash is not among the allowed shells",)
    assert cfg.default_shell == "/bin/bash"


@pytest.mark.parametrize(
    "text, pairs",
    [
        pytest.param('filter=active eq "true"', (("filter", 'active eq "true"'),), id="fork-users-filter"),
        pytest.param('groups=admin&filter=active eq "true"', (("groups", "admin"), ("filter", 'active eq "true"')),
                     id="fork-two-items"),
        pytest.param('filter=displayName eq "users" or displayName eq "admin"',
                     (("filter", 'displayName eq "users" or displayName eq "admin"'),), id="value-with-spaces"),
        pytest.param("a=1=2& b = 2 &&c=", (("a", "1=2"), ("b", "2"), ("c", "")), id="split-at-the-first-equals"),
        pytest.param("groups=a&groups=b", (("groups", "a"), ("groups", "b")), id="repeated-name"),
        pytest.param("a=%41", (("a", "%41"),), id="kept-as-written"),  # requests encodes it: %2541
    ],
)
def test_a_query_option_is_read_as_name_value_pairs(text, pairs):
    assert ok(users_query=text).server.users_query == pairs


def test_the_groups_query_is_read_as_the_users_query_is():
    text = "a=1=2& b = 2 &&c=&groups=x&groups=y"
    server = ok(users_query=text, groups_query=text).server
    assert server.groups_query == server.users_query == (("a", "1=2"), ("b", "2"), ("c", ""), ("groups", "x"),
                                                         ("groups", "y"))


# A Groups listing the server narrows would hide the gids the primary-gid rule checks (a user whose
# primary gid is a hidden group's, e.g. admins', would get it); stripped attributes hide gids and members.
@pytest.mark.parametrize("text, param, why", [
    pytest.param('filter=displayName eq "slurm-users"', "filter",
                 "the primary-gid rule needs every group; choose groups with coreweave_groups", id="filter"),
    pytest.param("sortBy=displayName&FILTER=x", "FILTER", "the primary-gid rule needs every group", id="FILTER"),
    pytest.param("attributes=displayName", "attributes",
                 "it can strip the gids and members the primary-gid rule and membership read; choose groups with "
                 "coreweave_groups", id="attributes"),
    pytest.param("excludedAttributes=members", "excludedAttributes", "it can strip the gids and members",
                 id="excludedAttributes"),
    pytest.param("ExcludedAttributes=gidNumber", "ExcludedAttributes", "it can strip the gids and members",
                 id="excludedAttributes-any-case"),
])
def test_a_groups_query_that_can_hide_groups_or_their_content_is_refused(text, param, why):
    refused = problem(groups_query=text)
    assert refused.key == "coreweave_groups_query"
    assert refused.message.startswith(f"coreweave_groups_query must not set {param!r}: {why}")


# A user without `active` counts as active: stripping it would let inactive users in.
@pytest.mark.parametrize("text, param", [
    pytest.param("attributes=userName,emails", "attributes", id="attributes"),
    pytest.param("excludedAttributes=active", "excludedAttributes", id="excludedAttributes"),
    pytest.param("groups=admin&EXCLUDEDATTRIBUTES=active", "EXCLUDEDATTRIBUTES", id="any-case"),
])
def test_a_users_query_that_can_strip_attributes_is_refused(text, param):
    refused = problem(users_query=text)
    assert refused.key == "coreweave_users_query"
    assert refused.message == (f"coreweave_users_query must not set {param!r}: it can strip `active` (a user "
                               "without it counts as active) and the attributes the checks read")


def test_a_users_query_may_filter():
    # A user the server leaves out is never a member: filtering users only narrows access.
    assert ok(users_query='filter=active eq "true"&groups=admin').server.users_query == (
        ("filter", 'active eq "true"'), ("groups", "admin"))


def test_a_groups_query_may_carry_parameters_that_hide_nothing():
    assert ok(groups_query="sortBy=displayName&x.y-z_1=2").server.groups_query == (
        ("sortBy", "displayName"), ("x.y-z_1", "2"))


@pytest.mark.parametrize("key, value", [
    pytest.param("base_url", BASE + "?count=5", id="base-url-query"),
    pytest.param("base_url", BASE + "#x", id="base-url-fragment"),
    pytest.param("users_endpoint", "Users?startIndex=3", id="users-endpoint-query"),
    pytest.param("groups_endpoint", "Groups#", id="groups-endpoint-fragment"),
    pytest.param("groups_endpoint", "?filter=x", id="groups-endpoint-only-query"),
])
def test_a_query_or_fragment_in_the_url_is_refused(key, value):
    # Parameters there would slip past the paging and hiding checks of the query options.
    refused = problem(**{key: value})
    assert refused.key == f"coreweave_{key}"
    assert refused.message == (f"coreweave_{key} must not hold '?' or '#', got {value!r}: query parameters go in "
                               "coreweave_users_query / coreweave_groups_query")


def test_both_query_options_refused_are_reported_together():
    assert [p.key for p in problems(users_query="count=10", groups_query="startIndex=1&cursor=")] == [
        "coreweave_users_query", "coreweave_groups_query", "coreweave_groups_query",
    ]


def test_server_carries_the_transport_limits():
    server = ok(max_pages=7, max_page_bytes=4096, max_retry_wait=3, deadline=42, timeout=5, retries=2).server
    assert (server.max_pages, server.max_page_bytes, server.max_retry_wait, server.deadline, server.timeout,
            server.retries) == (7, 4096, 3.0, 42.0, 5.0, 2)


def test_key_rules_are_one_value():
    rules = ok(ssh_key_types="ed25519", min_rsa_bits=4096, allow_key_options="true").keys
    assert rules == config.KeyRules(types=frozenset({"ed25519"}), min_rsa_bits=4096, allow_options=True)


# --- shadow defaults: the same shadow(5) fields on every line -----------------------------------------------------

SHADOW_KEYS = ["shadow_default_" + field for field in config.SHADOW_FIELDS]


def test_shadow_defaults_are_days_as_the_fork_writes_them():
    # CoreWeave's fork's own example values, handed over as nsscache's FixValue does.
    written = dict(lstchg="19000", min="0", max="99999", warn="7", inact="30", expire="2147483647", flag="0")
    cfg = ok(**{"shadow_default_" + field: FixValue(value) for field, value in written.items()})
    assert cfg.shadow == config.ShadowDefaults(lstchg=19000, min=0, max=99999, warn=7, inact=30,
                                               expire=2**31 - 1, flag=0)
    assert all(type(getattr(cfg.shadow, field)) is int for field in config.SHADOW_FIELDS)
    assert cfg.warnings == ()


def test_unset_or_empty_shadow_defaults_leave_every_field_empty():
    assert ok().shadow == ok(**{key: value for key, value in zip(SHADOW_KEYS, ["", " ", "", "", "", "", ""])}).shadow
    assert ok().shadow == config.ShadowDefaults()
    assert config.ShadowDefaults() == config.ShadowDefaults(*[None] * 7)


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param("'19000'", 19000, id="quoted"),
        pytest.param("0042", 42, id="leading-zeros"),
        pytest.param("1e3", 1000, id="float-that-is-whole"),
        pytest.param("2147483647", 2**31 - 1, id="highest"),
        pytest.param("0", 0, id="zero"),
    ],
)
def test_shadow_default_value_shapes_are_understood(raw, expected):
    assert ok(shadow_default_warn=FixValue(raw)).shadow.warn == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        pytest.param("never", "must be an integer or empty, got 'never'", id="word"),
        pytest.param("true", "must be an integer or empty, got 'true'", id="boolean-word"),
        pytest.param("1.5", "must be an integer or empty, got 1.5", id="fraction"),
        pytest.param("-1", "must be between 0 and 2147483647, got -1", id="negative"),
        pytest.param("2147483648", "must be between 0 and 2147483647, got 2147483648", id="wraps-in-glibc"),
        pytest.param("99999999999999999999", "must be between 0 and 2147483647, got 99999999999999999999",
                     id="huge"),  # no float holds it exactly: still an integer, out of range
        pytest.param("inf", "must be an integer or empty, got inf", id="infinite"),
    ],
)
@pytest.mark.parametrize("key", SHADOW_KEYS)
def test_a_shadow_default_that_is_not_days_is_refused_naming_the_key(key, raw, message):
    assert problem(**{key: FixValue(raw)}) == ConfigProblem("coreweave_" + key, f"coreweave_{key} {message}")


def test_every_bad_shadow_default_is_reported_together():
    assert [p.key for p in problems(**{key: "soon" for key in SHADOW_KEYS})] == ["coreweave_" + k for k in SHADOW_KEYS]


def test_the_reader_reads_an_optional_integer_as_none_when_unset():
    r = Reader.of({"shadow_default_max": 99999, "shadow_default_warn": "", "shadow_default_min": "x"})
    assert (r.optional_integer("shadow_default_max"), r.optional_integer("shadow_default_warn"),
            r.optional_integer("shadow_default_lstchg")) == (99999, None, None)
    r.optional_integer("shadow_default_min")
    assert r.problems == [ConfigProblem("coreweave_shadow_default_min",
                                        "coreweave_shadow_default_min must be an integer or empty, got 'x'")]
    with pytest.raises(TypeError, match="coreweave_shadow_default_max is declared integer or empty, but read as "
                                        "integer"):
        r.integer("shadow_default_max")


@pytest.mark.parametrize("field", ["lstchg", "max", "inact", "expire"])
def test_a_zero_that_shadow5_reads_otherwise_is_accepted_with_a_warning(field):
    # nsscache's files cache writes any 0 as an empty field: never "change at next login" or "expired 1970".
    cfg = ok(**{"shadow_default_" + field: 0})
    assert getattr(cfg.shadow, field) == 0
    assert cfg.warnings == (f"coreweave_shadow_default_{field} = 0 is written as an empty field (nsscache writes a 0 "
                            "as empty), not as shadow(5)'s 0",)


@pytest.mark.parametrize("field", ["min", "warn", "flag"])
def test_a_zero_that_means_what_empty_means_is_not_warned_about(field):
    assert ok(**{"shadow_default_" + field: 0}).warnings == ()


def test_an_expire_in_the_past_is_accepted_with_a_warning_that_it_locks_everyone_out():
    cfg = ok(shadow_default_expire=19000)  # 2022-01-08
    assert cfg.shadow.expire == 19000
    assert cfg.warnings == ("coreweave_shadow_default_expire = 19000 (2022-01-08) is not after today: PAM refuses "
                            "every login of every account (account expired)",)


def test_a_max_already_past_is_accepted_with_a_warning_that_it_locks_everyone_out():
    # An empty lstchg reads as -1 (1969-12-31): 90 days later every password is expired.
    assert ok(shadow_default_max=90).warnings == (
        "coreweave_shadow_default_max = 90: every password counts as expired since 1970-04-01 (last change + max): "
        "PAM demands at every login a password change nobody can make (the password is *), so every login fails",)
    assert ok(shadow_default_max=99999).warnings == ()  # the fork's example: until 2243
    assert ok(shadow_default_max=90, shadow_default_lstchg=2**31 - 1).warnings == ()  # changed in the future


@pytest.mark.parametrize(
    "defaults, today, warned",
    [
        pytest.param(dict(expire=20000), 19999, False, id="expire-tomorrow"),
        pytest.param(dict(expire=20000), 20000, True, id="expire-today"),  # pam_unix: today >= expire
        pytest.param(dict(lstchg=19000, max=1000), 20000, False, id="max-reached-today"),
        pytest.param(dict(lstchg=19000, max=1000), 20001, True, id="max-passed"),  # pam_unix: today - lstchg > max
        pytest.param(dict(lstchg=20001, max=0), 20000, False, id="max-zero-is-empty"),
        pytest.param(dict(max=20000), 19999, False, id="max-reached-today-after-an-empty-lstchg"),  # -1 + 20000
        pytest.param(dict(max=20000), 20000, True, id="max-passed-after-an-empty-lstchg"),
    ],
)
def test_the_lockout_warning_is_given_from_the_day_pam_refuses(defaults, today, warned):
    warnings = config._shadow_warnings(config.ShadowDefaults(**defaults), today=today)
    assert any("PAM" in warning for warning in warnings) is warned


@pytest.mark.parametrize(
    "shell",
    [
        pytest.param("/bin/ba:sh", id="colon"),  # would shift passwd's fields for every user
        pytest.param("/bin/bash\nevil", id="newline"),  # a continuation line in nsscache.conf
        pytest.param("/bin/bash\x00", id="nul"),
        pytest.param("/bin/../bin/bash", id="not-normalised"),
    ],
)
def test_a_default_shell_that_cannot_be_written_is_refused(shell):
    # The default shell lands in every user's passwd line unchecked by policy.
    refused = problem(default_shell=shell, allowed_shells="/bin/bash")
    assert refused.key == "coreweave_default_shell"
    assert f"must be an absolute, clean path, got {shell!r}" in refused.message


@pytest.mark.parametrize("key", ["base_url", "mirror_url"])
def test_a_url_with_a_user_and_password_is_refused_without_showing_them(key):
    url = "https://svc:hunter2@scim.example.com/x"
    options = {**MIRROR, key: url} if key == "mirror_url" else {key: url}

    (refused,) = problems(**options)

    assert refused.key == "coreweave_" + key
    assert "must not hold a user or password" in refused.message and "hunter2" not in refused.message


@pytest.mark.parametrize("options, named", [
    pytest.param({"users_query": "filter=active eq \"true\""}, "coreweave_users_query", id="a-users-query"),
    pytest.param({"groups": "*"}, "coreweave_groups = *", id="every-group"),
    pytest.param({"member_match": "display"}, "coreweave_member_match = display", id="a-name-mode"),
])
def test_fetch_members_refuses_what_only_the_full_listing_serves(options, named):
    (refused,) = problems(fetch="members", **options)

    assert refused.key == "coreweave_fetch"
    assert f"coreweave_fetch = members cannot be combined with {named}" in refused.message


@pytest.mark.parametrize("options", [{"groups": "*"}, {"member_match": "display"}, {"users_query": "a=b"}])
def test_fetch_auto_takes_the_full_listing_for_them(options):
    assert parse({**REQUIRED, "fetch": "auto", **options}, environ=ENV).server.fetch == "auto"
