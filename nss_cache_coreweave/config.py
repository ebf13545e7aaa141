"""nsscache.conf options -> one frozen, validated Config.

nsscache hands a source the ``coreweave_*`` options of a map with the prefix
stripped (``coreweave_base_url`` -> ``base_url``), after its ``FixValue``
turned numeric-looking strings into int/float. Every option is one row of
``OPTIONS`` (kind, default, allowed range or values, meaning); a ``Reader``
reads the options through that table and collects every problem, and
``parse`` composes the Config from small builders. docs/configuration.md's
option table is generated from ``OPTIONS`` (scripts/option-table);
conf/nsscache.conf is tested against it.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import ipaddress
import math
import os
import posixpath
import re
import stat
import time
from dataclasses import dataclass
from typing import Any, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

from .errors import ConfigError, ConfigProblem
from .sshkeys import KEY_TYPES

__all__ = [
    "Kind",
    "Option",
    "OPTIONS",
    "KEYS",
    "option",
    "Reader",
    "markdown_table",
    "KeyRules",
    "USER_EXTENSION",
    "TOKEN_ENV_VARS",
    "AttributePath",
    "UserAttributes",
    "GroupAttributes",
    "Server",
    "Config",
    "parse",
    "parse_path",
    "SlurmSync",
    "ShadowDefaults",
    "Publish",
    "Mirror",
    "SHADOW_FIELDS",
]

USER_EXTENSION = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
_EXT = USER_EXTENSION + ":"

# Checked in this order after coreweave_token_file; coreweave_token is last.
TOKEN_ENV_VARS = ("NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN")

_ID_LIMIT = 4294967294  # 2**32 - 2: (uid_t)-1 means "no change" to chown()


class Kind(enum.Enum):
    """What an option holds; the comment names the Reader method that reads it."""

    TEXT = "text"  # Reader.text
    PATH = "absolute path"  # Reader.absolute (or Reader.text when the check differs)
    NAMES = "comma-separated names"  # Reader.names
    ATTRIBUTES = "comma-separated attribute paths"  # Reader.paths
    CHOICE = "one of the choices"  # Reader.choice
    INTEGER = "integer"  # Reader.integer, within low..high
    OPTIONAL_INTEGER = "integer or empty"  # Reader.optional_integer, within low..high; None when unset
    NUMBER = "number"  # Reader.number, within low..high
    BOOLEAN = "boolean"  # Reader.boolean


@dataclass(frozen=True)
class Option:
    """One ``coreweave_<name>`` option: declared here once, read by Reader,
    documented by markdown_table."""

    name: str  # without the coreweave_ prefix, as nsscache hands it over
    kind: Kind
    default: object  # None: required, or unset (``shown`` says which)
    doc: str  # what it means: one line of Markdown
    shown: str = ""  # the default as the docs show it, when not the value itself
    low: float = -math.inf  # INTEGER, NUMBER: the allowed range, inclusive
    high: float = math.inf
    choices: Tuple[str, ...] = ()  # CHOICE: the allowed values; NAMES: the allowed names, if limited

    @property
    def key(self) -> str:
        """The name as written in nsscache.conf and in messages."""
        return "coreweave_" + self.name


_SLURM_ONLY = "`slurm-sync` only: "
_PUBLISH_ONLY = "`publish` only: "
# shadow(5) fields are read by glibc through an int: a larger number would wrap around (2**31 to a date before 1970).
_DAYS = 2**31 - 1
_SHADOW = "the same on every shadow line (0–2147483647; nsscache writes `0` as an empty field): "
_EMPTY = "empty"

# Every option, in the order of the docs. Adding one is a row here and a line in a builder below.
OPTIONS: Tuple[Option, ...] = (
    # where IAM is, and the token
    Option("base_url", Kind.TEXT, None, "SCIM base URL, e.g. `https://api.coreweave.com/scim/<org-id>`; `http://` is "
           "accepted only for a loopback test server (`localhost`, `127.0.0.0/8`, `::1`), any other `http://` host "
           "is a configuration error", shown="required"),
    Option("users_endpoint", Kind.TEXT, "Users", "users endpoint, relative to the base URL (a `?` or `#` in it, or "
           "in the base URL, is refused: parameters go in `coreweave_users_query`)"),
    Option("groups_endpoint", Kind.TEXT, "Groups", "groups endpoint, relative to the base URL (no `?` or `#`)"),
    Option("token_file", Kind.PATH, None, "absolute path of a file holding the bearer token (surrounding whitespace "
           "stripped); recommended, chmod 600 (a group/world-readable file gets a warning)", shown="unset"),
    Option("token", Kind.TEXT, None, "inline token; discouraged (nsscache.conf is world-readable; a `%` in it makes "
           "the stock nsscache print part of it in a traceback); used only when no token file and no environment "
           "variable is set", shown="unset"),
    Option("groups", Kind.NAMES, None, "comma-separated POSIX group names that grant access (exact match on the "
           "group's POSIX name), or `*` for every group", shown="required"),
    # where the values live in SCIM resources
    Option("user_name_attribute", Kind.ATTRIBUTES, _EXT + "sunkPosixUsername", "the POSIX username"),
    Option("uid_attribute", Kind.ATTRIBUTES, _EXT + "sunkPosixUid", "the uid",
           shown="`…:CoreWeaveUser:sunkPosixUid`"),
    Option("gid_attribute", Kind.ATTRIBUTES, _EXT + "sunkPosixGid", "the primary gid",
           shown="`…:CoreWeaveUser:sunkPosixGid`"),
    Option("ssh_keys_attribute", Kind.ATTRIBUTES, _EXT + "sunkSshKeys",
           "SSH public keys (a list of strings, or one string)", shown="`…:CoreWeaveUser:sunkSshKeys`"),
    Option("home_attribute", Kind.ATTRIBUTES, _EXT + "sunkHomeDirectory", "home directory",
           shown="`…:CoreWeaveUser:sunkHomeDirectory`"),
    Option("shell_attribute", Kind.ATTRIBUTES, _EXT + "sunkLoginShell", "login shell",
           shown="`…:CoreWeaveUser:sunkLoginShell`"),
    Option("gecos_attribute", Kind.ATTRIBUTES, "displayName, name.formatted",
           "GECOS: the first present of these, else `name.givenName` + `name.familyName`"),
    Option("group_name_attribute", Kind.ATTRIBUTES, "sunkPosixGroupName, displayName",
           "a group's POSIX name: the first present of these"),
    Option("group_gid_attribute", Kind.ATTRIBUTES, "sunkPosixGid", "a group's gid"),
    Option("member_match", Kind.CHOICE, "auto", "how a group's `members` name users: `auto`, by `id` only when "
           "any member's `value` (or the id ending its `$ref`) is a listed user's `id`, else each `value` as "
           "exactly one listed user's POSIX name (one way per run); `id`, the `id` only (RFC 7643); `value`, "
           "`display` or `userName`, that "
           "sub-attribute of each member holds the POSIX name (CoreWeave's fork: `members/value`, "
           "`members/display`, its default); a bare string member is then the name",
           choices=("auto", "id", "value", "display", "userName")),
    # what the entries look like
    Option("home_directory", Kind.TEXT, None, "home template, `%u` = username (write `%%u`); when set it overrides the "
           "attribute", shown="unset"),
    Option("default_shell", Kind.PATH, "/bin/bash",
           "shell when the attribute is absent, or not an absolute, clean path (logged)"),
    Option("min_uid", Kind.INTEGER, 1000, "lowest accepted uid; 0 and 65534 are never accepted", low=1, high=_ID_LIMIT),
    Option("max_uid", Kind.INTEGER, _ID_LIMIT, "highest accepted uid", low=1, high=_ID_LIMIT),
    Option("min_gid", Kind.INTEGER, 1000, "lowest accepted gid (users' primary gids and groups); 0 and 65534 never",
           low=1, high=_ID_LIMIT),
    Option("max_gid", Kind.INTEGER, _ID_LIMIT, "highest accepted gid (users' primary gids and groups)",
           low=1, high=_ID_LIMIT),
    Option("allowed_shells", Kind.NAMES, None, "comma-separated absolute paths; another shell is replaced by "
           "`coreweave_default_shell` (logged)", shown="the node's `/etc/shells`"),
    Option("local_passwd", Kind.PATH, "/etc/passwd",
           "the node's own accounts: an IAM user with the same name or uid is dropped"),
    Option("local_group", Kind.PATH, "/etc/group",
           "the node's own groups: an IAM group with the same name or gid is dropped"),
    # the shadow map: the same fields on every line (CoreWeave's fork: scim_shadow_default_*)
    Option("shadow_default_lstchg", Kind.OPTIONAL_INTEGER, None, _SHADOW + "last password change, days since "
           "1970-01-01 (empty: password aging off); with `coreweave_shadow_default_max` it dates every password's "
           "expiry", shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_min", Kind.OPTIONAL_INTEGER, None, _SHADOW + "minimum password age, days (no effect: the "
           "password field is `*`)", shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_max", Kind.OPTIONAL_INTEGER, None, _SHADOW + "maximum password age, days; **locks "
           "everyone out** once today is past last change + max (an empty last change counts as 1969-12-31): PAM "
           "then demands at every login a password change nobody can make; `99999` lasts until 2243",
           shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_warn", Kind.OPTIONAL_INTEGER, None, _SHADOW + "days of warning before a password expires",
           shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_inact", Kind.OPTIONAL_INTEGER, None, _SHADOW + "days after a password expired until the "
           "account is disabled (only with `coreweave_shadow_default_max`)", shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_expire", Kind.OPTIONAL_INTEGER, None, _SHADOW + "day every account expires, days since "
           "1970-01-01: from that day PAM refuses **every login of every account**; a day in the past locks "
           "everyone out at once", shown=_EMPTY, low=0, high=_DAYS),
    Option("shadow_default_flag", Kind.OPTIONAL_INTEGER, None, _SHADOW + "reserved field (shadow(5))",
           shown=_EMPTY, low=0, high=_DAYS),
    # SSH keys
    Option("ssh_key_types", Kind.NAMES, "ed25519, ecdsa, sk-ed25519, sk-ecdsa, rsa",
           "accepted SSH key families (DSA is never accepted)", choices=tuple(sorted(set(KEY_TYPES.values())))),
    Option("min_rsa_bits", Kind.INTEGER, 2048, "smallest accepted RSA modulus", low=1024, high=16384),
    Option("allow_key_options", Kind.BOOLEAN, False, "accept `authorized_keys` options (`from=`, `command=`, "
           "`no-pty` …) in front of a key; their names must be OpenSSH's"),
    # whole-run guard, state and metrics
    Option("max_shrink", Kind.NUMBER, 0.25, "refuse a run whose users or groups fall by more than this share of the "
           "last accepted run (`1` disables)", low=0.0, high=1.0),
    Option("state_dir", Kind.PATH, "/var/lib/nsscache", "where the package keeps the counts of the last accepted run "
           "and the record of the last run (`coreweave-state.json`, mode 0600, written atomically); use nsscache's "
           "`timestamp_dir`"),
    Option("metrics_file", Kind.PATH, None, "absolute path of a Prometheus textfile written after every run (atomic "
           "rename, mode 0644), e.g. `/var/lib/prometheus/node-exporter/nsscache_coreweave.prom`", shown="unset"),
    # talking to IAM
    Option("page_size", Kind.INTEGER, 1000, "sent as `count` on every listing request (1–10000)", low=1, high=10000),
    Option("pagination", Kind.CHOICE, "index", "`index` (`startIndex`/`count`, RFC 7644) or `cursor` "
           "(`cursor`/`nextCursor`, RFC 9865)", choices=("index", "cursor")),
    Option("users_query", Kind.TEXT, None, "extra query parameters on every Users listing request, as a query string "
           "(`filter=active eq \"true\"&groups=admin`), URL-encoded when sent; names are ASCII letters, digits, "
           "`_`, `.`, `-`; `startIndex`, `count` and `cursor` are the client's, `attributes` and "
           "`excludedAttributes` could strip `active`: all refused; saves IAM load, never trusted for access",
           shown="unset"),
    Option("groups_query", Kind.TEXT, None, "the same for every Groups listing request, except that `filter`, "
           "`attributes` and `excludedAttributes` are refused: the primary-gid rule needs every group, gid and "
           "members (choose groups with `coreweave_groups`)", shown="unset"),
    Option("fetch", Kind.CHOICE, "auto", "`auto`: when the server advertises filtering (`/ServiceProviderConfig`), "
           "fetch only the allowed groups' members by id, in batches, and list every user instead when an answer "
           "shows the filter is not honoured (logged); Users are asked only for the attributes this configuration "
           "reads (`attributes=`), whole again when the server refuses that or a user comes back without `active`; "
           "`members`: the same, or fail (not with `coreweave_groups = *`, a name mode of `coreweave_member_match` "
           "or a `coreweave_users_query`); `full`: every user, whole, exactly as before (no discovery, no filter, "
           "no projection)",
           choices=("full", "auto", "members")),
    Option("max_pages", Kind.INTEGER, 10000, "more pages than this for one endpoint is refused as an endless listing",
           low=1, high=1_000_000),
    Option("max_users", Kind.INTEGER, 2_000_000, "a Users listing announcing or holding more users is refused; bounds "
           "memory: a user outside the listed groups costs about 120 bytes (its id) for the run",
           low=1, high=100_000_000),
    Option("workers", Kind.INTEGER, 2, "processes that decode a long index listing (9 pages or more) while the next "
           "pages are fetched; `0` decodes everything in the nsscache process", low=0, high=8),
    Option("max_page_bytes", Kind.INTEGER, 64 * 1024 * 1024, "a response larger than this (bytes) is refused",
           low=1024, high=2**31),
    Option("timeout", Kind.NUMBER, 30.0, "seconds per HTTP request (connect and read)", low=0.1, high=3600),
    Option("retries", Kind.INTEGER, 3, "retries after the first attempt, for connection errors, timeouts, 429 and 5xx "
           "(backoff 1, 2, 4 … s with jitter); 400/401/403/404 are never retried", low=0, high=10),
    Option("max_retry_wait", Kind.NUMBER, 60.0,
           "seconds: caps each wait between retries, including a server's `Retry-After`", low=0, high=3600),
    Option("deadline", Kind.NUMBER, 300.0, "seconds for the whole listing of Users and Groups in one run; past it the "
           "run fails (no retries left), so cron runs never pile up", low=1, high=86400),
    Option("ca_bundle", Kind.PATH, None, "absolute path of a CA bundle for the server's certificate", shown="unset"),
    Option("verify_tls", Kind.BOOLEAN, True, "`false` disables certificate checks (tests only)"),
    # one listing for many nodes: `publish` writes a signed bundle, nodes in mirror mode read it
    Option("publish_dir", Kind.PATH, None, _PUBLISH_ONLY + "the directory the signed bundle is written to, served "
           "as static files (docs/many-nodes.md)", shown="unset"),
    Option("publish_key", Kind.PATH, None, _PUBLISH_ONLY + "the publisher's ed25519 private key (OpenSSH format, "
           "unencrypted, from `ssh-keygen -t ed25519`; mode 0600)", shown="unset"),
    Option("publish_keep", Kind.INTEGER, 3, _PUBLISH_ONLY + "older generations kept readable for nodes that fetch "
           "while a publish runs", low=0, high=1000),
    Option("mirror_url", Kind.TEXT, None, "mirror mode: read the bundle `publish` wrote from this URL (`https://`, or "
           "`http://` on loopback) instead of IAM; `coreweave_base_url` and the token are then not needed, "
           "`coreweave_groups` is optional and narrows the published groups", shown="unset"),
    Option("mirror_public_key", Kind.PATH, None, "mirror mode: the publisher's public key file (its `.pub`; one "
           "`ssh-ed25519` key per line, several while keys are rotated); required with `coreweave_mirror_url`",
           shown="unset"),
    Option("mirror_max_age", Kind.NUMBER, 3600.0, "mirror mode: a bundle made longer ago than this (seconds) is "
           "refused: the publisher has stopped", low=60, high=30 * 86400),
    # Slurm accounting: nsscache-coreweave slurm-sync only, not read by the maps
    Option("slurm_accounts", Kind.TEXT, None, _SLURM_ONLY + "comma-separated `group` or `group=account` items; each "
           "named group (which must be in `coreweave_groups`) feeds a Slurm account of that name; the order sets "
           "default accounts", shown="unset: every group of `coreweave_groups`"),
    Option("slurm_cluster", Kind.NAMES, None, _SLURM_ONLY + "comma-separated Slurm cluster names to reconcile (each "
           "must be registered in slurmdbd)", shown="every cluster slurmdbd knows, else `ClusterName` of slurm.conf"),
    Option("slurm_parent_account", Kind.TEXT, "root",
           _SLURM_ONLY + "parent of the accounts it creates (must exist)"),
    Option("slurm_sacctmgr", Kind.TEXT, "sacctmgr",
           _SLURM_ONLY + "the sacctmgr command (name on `PATH`, or absolute path)"),
    Option("slurm_timeout", Kind.NUMBER, 600.0, _SLURM_ONLY + "seconds allowed for one sacctmgr call",
           low=1, high=86400),
)

_BY_NAME: Mapping[str, Option] = {o.name: o for o in OPTIONS}

# key (without the coreweave_ prefix) -> default; None = required or unset.
KEYS: Mapping[str, object] = {o.name: o.default for o in OPTIONS}


def option(name: str) -> Option:
    """The row of coreweave_<name>. :raises KeyError: for an unknown name."""
    return _BY_NAME[name]


def _default(name: str) -> Any:
    """The table's default, for the dataclasses below (code and tests build them directly)."""
    return _BY_NAME[name].default


SHELLS_FILE = "/etc/shells"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_PATH_BAD = re.compile(r"[\x00-\x1f\x7f:,]")
_CORE_SCHEMAS = (
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
)
_LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
# Slurm account, cluster and user names: lower-case (slurmdbd folds case), no ',', '=', '|' or spaces.
_SLURM_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}", re.ASCII)


@dataclass(frozen=True)
class AttributePath:
    """Where a value lives in a SCIM resource: an optional extension schema
    URN (the top-level key holding the extension object) and the attribute
    names below it."""

    schema: Optional[str]
    names: Tuple[str, ...]
    text: str  # as configured, for messages

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class UserAttributes:
    name: Tuple[AttributePath, ...]
    uid: Tuple[AttributePath, ...]
    gid: Tuple[AttributePath, ...]
    ssh_keys: Tuple[AttributePath, ...]
    home: Tuple[AttributePath, ...]
    shell: Tuple[AttributePath, ...]
    gecos: Tuple[AttributePath, ...]


@dataclass(frozen=True)
class GroupAttributes:
    name: Tuple[AttributePath, ...]
    gid: Tuple[AttributePath, ...]
    member_match: str = _default("member_match")  # how members name users: auto, id, value, display, userName


@dataclass(frozen=True)
class Server:
    """Everything needed to list Users and Groups."""

    base_url: str
    users_url: str
    groups_url: str
    token: str = dataclasses.field(repr=False)
    page_size: int = _default("page_size")
    pagination: str = _default("pagination")
    max_pages: int = _default("max_pages")
    max_users: int = _default("max_users")  # a Users listing announcing or holding more is refused
    workers: int = _default("workers")  # processes decoding a long index listing; 0: decode in-process
    max_page_bytes: int = _default("max_page_bytes")
    timeout: float = _default("timeout")  # seconds per request
    retries: int = _default("retries")
    max_retry_wait: float = _default("max_retry_wait")  # seconds, caps Retry-After and backoff
    deadline: float = _default("deadline")  # seconds for the whole listing of Users and Groups
    verify: Union[bool, str] = True  # requests' verify: a CA bundle path or a bool
    users_query: Optional[Tuple[Tuple[str, str], ...]] = None  # extra (name, value) parameters of every Users
    groups_query: Optional[Tuple[Tuple[str, str], ...]] = None  # (Groups) listing request; None: unset
    fetch: str = _default("fetch")  # auto, members, full: which users are fetched (memberfetch.py)


@dataclass(frozen=True)
class KeyRules:
    types: FrozenSet[str]  # families: ed25519, ecdsa, sk-ed25519, sk-ecdsa, rsa
    min_rsa_bits: int
    allow_options: bool


@dataclass(frozen=True)
class SlurmSync:
    """The coreweave_slurm_* keys, for ``nsscache-coreweave slurm-sync``."""

    accounts: Optional[Tuple[Tuple[str, str], ...]] = None  # (group, account); None: every listed group
    clusters: Optional[Tuple[str, ...]] = None  # None: the clusters slurmdbd knows
    parent_account: str = _default("slurm_parent_account")
    sacctmgr: str = _default("slurm_sacctmgr")
    timeout: float = _default("slurm_timeout")  # seconds per sacctmgr call


@dataclass(frozen=True)
class Publish:
    """The coreweave_publish_* keys, for ``nsscache-coreweave publish``."""

    directory: str = ""  # "" when unset: publish refuses to run
    key_file: str = ""
    keep: int = _default("publish_keep")  # older generations kept


@dataclass(frozen=True)
class Mirror:
    """Mirror mode: the maps come from a signed bundle at ``url``, not from IAM."""

    url: str  # without the trailing '/'
    public_keys: Tuple[bytes, ...]  # the trusted ssh-ed25519 keys (SSH wire blobs)
    public_key_file: str
    max_age: float = _default("mirror_max_age")  # seconds


# The shadow(5) fields after the password, in line order: coreweave_shadow_default_<field>.
SHADOW_FIELDS = ("lstchg", "min", "max", "warn", "inact", "expire", "flag")


@dataclass(frozen=True)
class ShadowDefaults:
    """The coreweave_shadow_default_* keys: the same shadow(5) fields on every
    account's line, in days; None is an empty field (the default)."""

    lstchg: Optional[int] = None  # last password change, days since 1970-01-01
    min: Optional[int] = None
    max: Optional[int] = None
    warn: Optional[int] = None
    inact: Optional[int] = None
    expire: Optional[int] = None  # the day every account expires, days since 1970-01-01
    flag: Optional[int] = None


@dataclass(frozen=True)
class Config:
    server: Server
    users: UserAttributes
    groups: GroupAttributes
    allowed_groups: Optional[Tuple[str, ...]]  # None means "*": every group
    home_template: Optional[str]
    default_shell: str
    min_uid: int
    max_uid: int
    min_gid: int
    max_gid: int
    allowed_shells: FrozenSet[str]
    local_passwd: str  # the node's own accounts: IAM names and uids must not clash
    local_group: str
    keys: KeyRules
    max_shrink: float  # refuse a run losing more than this share of users or groups
    state_dir: str
    metrics_file: Optional[str]  # Prometheus textfile, e.g. for node_exporter
    warnings: Tuple[str, ...] = ()
    slurm: SlurmSync = SlurmSync()
    shadow: ShadowDefaults = ShadowDefaults()
    publish: Publish = Publish()
    mirror: Optional[Mirror] = None  # mirror mode: the maps come from a published bundle


def parse_path(text: str) -> AttributePath:
    """Parse an attribute path in SCIM notation or SUNK's ``/`` notation.

    >>> parse_path("urn:x:2.0:CoreWeaveUser:sunkSshKeys")
    AttributePath(schema='urn:x:2.0:CoreWeaveUser', names=('sunkSshKeys',), text='urn:x:2.0:CoreWeaveUser:sunkSshKeys')
    >>> parse_path("name.givenName").names
    ('name', 'givenName')
    >>> parse_path("urn:x:2.0:CoreWeaveUser/sunkSshKeys").schema
    'urn:x:2.0:CoreWeaveUser'
    """
    text = text.strip()
    if "/" in text:
        head, *names = text.split("/")
        schema = head if head.lower().startswith("urn:") else None
        if schema is None:
            names = [head, *names]
    elif text.lower().startswith("urn:"):
        # The URN itself holds ':' and '.' ("...:coreweave:2.0:..."), so
        # split it off at the last ':' before treating '.' as a separator.
        schema, _, attr = text.rpartition(":")
        names = attr.split(".")
    else:
        schema, names = None, text.split(".")
    if schema is not None and schema.lower() in _CORE_SCHEMAS:
        schema = None  # core attributes are top level in the JSON body
    if not names or not all(names) or (schema is not None and not schema[4:].strip(":")):
        raise ConfigError(f"attribute path {text!r} is malformed")
    return AttributePath(schema, tuple(names), text)


@dataclass
class Reader:
    """A map's options, read through OPTIONS. Each getter returns the typed
    value (the table's default when the option is unset or cannot be read as
    its kind) and records what is wrong in ``problems``; nothing is raised, so
    one run reports every problem."""

    options: Mapping[str, object]  # prefix-stripped, without nsscache's "name"
    problems: List[ConfigProblem] = dataclasses.field(default_factory=list)
    warnings: List[str] = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, options: Mapping[str, object]) -> Reader:
        """A reader of a map's options; each unknown key is a warning, in sorted order."""
        reader = cls({key: value for key, value in options.items() if key != "name"})
        for key in sorted(set(reader.options) - set(_BY_NAME)):
            reader.warn(f"unknown option coreweave_{key} is ignored (a typo?)")
        return reader

    def problem(self, name: str, message: str) -> None:
        """Record what is wrong with coreweave_<name>."""
        self.problems.append(ConfigProblem(_BY_NAME[name].key, message))

    def problem_about(self, key: str, message: str) -> None:
        """Record a problem that is not one option's: key is a file path, or ""."""
        self.problems.append(ConfigProblem(key, message))

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def raw(self, name: str) -> Any:
        """The value as nsscache handed it over (a str stripped), else the default."""
        value = self.options.get(name)
        if isinstance(value, str):
            value = value.strip() or None  # an empty value means unset
        return _BY_NAME[name].default if value is None else value

    def text(self, name: str) -> str:
        """The value as text; "" only when unset without a default."""
        value = self.raw(name)
        return "" if value is None else str(value).strip()

    def names(self, name: str) -> Tuple[str, ...]:
        """The comma-separated items, stripped, in order, empty ones skipped."""
        self._option(name, Kind.NAMES)
        return tuple(item.strip() for item in self.text(name).split(",") if item.strip())

    def paths(self, name: str) -> Tuple[AttributePath, ...]:
        """The comma-separated attribute paths, in order."""
        option = self._option(name, Kind.ATTRIBUTES)
        try:
            return tuple(parse_path(p) for p in self.text(name).split(",") if p.strip())
        except ConfigError as e:
            self.problem(name, f"{option.key}: {e}")
            return ()

    def absolute(self, name: str) -> str:
        """An absolute path; "" when unset without a default."""
        option = self._option(name, Kind.PATH)
        value = self.text(name)
        if value and not value.startswith("/"):
            self.problem(name, f"{option.key} must be an absolute path, got {value!r}")
        return value

    def choice(self, name: str) -> str:
        """One of the option's choices, case-insensitively."""
        option = self._option(name, Kind.CHOICE)
        value = self.text(name).lower()
        spelled = {choice.lower(): choice for choice in option.choices}  # as the table spells it: userName
        if value not in spelled:
            either = ", ".join(option.choices[:-1]) + " or " + option.choices[-1]
            self.problem(name, f"{option.key} must be {either}, got {value!r}")
        return spelled.get(value, value)

    def boolean(self, name: str) -> bool:
        """true/false, yes/no, on/off, 1/0 in any case."""
        option = self._option(name, Kind.BOOLEAN)
        value = self.raw(name)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        self.problem(name, f"{option.key} must be true or false, got {value!r}")
        return bool(option.default)

    def integer(self, name: str) -> int:
        """A whole number (``1000.0`` is 1000), checked against the option's range."""
        return int(self._number(self._option(name, Kind.INTEGER), int))

    def number(self, name: str) -> float:
        """A number, checked against the option's range."""
        return float(self._number(self._option(name, Kind.NUMBER), float))

    def optional_integer(self, name: str) -> Optional[int]:
        """A whole number checked against the option's range, or None when unset or empty."""
        option = self._option(name, Kind.OPTIONAL_INTEGER)
        if self.raw(name) is None:
            return None
        return int(self._number(option, int))

    def _number(self, option: Option, kind: type) -> float:
        """The value as kind (int or float); out of range it is kept as given, and reported."""
        value = self.raw(option.name)
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError
            result = kind(value)
            if kind is int and isinstance(value, float) and result != value:  # 1.5; not 1e3, nor an int no float holds
                raise ValueError
        except (TypeError, ValueError, OverflowError):  # a word, 1.5 for an integer, inf, nan for an integer
            what = "an integer or empty" if option.kind is Kind.OPTIONAL_INTEGER else (
                "an integer" if kind is int else "a number")
            self.problem(option.name, f"{option.key} must be {what}, got {value!r}")
            # The result is never used once a problem is recorded; an optional option has no default.
            return kind(option.low if option.default is None else option.default)
        if not option.low <= result <= option.high:  # nan is in no range
            self.problem(option.name, f"{option.key} must be between {option.low} and {option.high}, got {result}")
        return result

    def _option(self, name: str, kind: Kind) -> Option:
        option = _BY_NAME[name]
        if option.kind is not kind:  # a bug here, not in nsscache.conf
            raise TypeError(f"{option.key} is declared {option.kind.value}, but read as {kind.value}")
        return option


def parse(options: Mapping[str, object], environ: Mapping[str, str] = os.environ, *, need_token: bool = True) -> Config:
    """Build a Config from a map's prefix-stripped options.

    Every problem is collected and reported in one ConfigError. Without
    ``need_token`` (for ``status``) the token is not read at all.
    """
    r = Reader.of(options)
    mirror = _mirror(r)  # in mirror mode the maps come from a published bundle, not from IAM
    base_url = _base_url(r, required=mirror is None)  # the required settings first: where, who, the credential
    allowed = _allowed_groups(r, required=mirror is None)
    token = _token(r, environ) if need_token and mirror is None else ""
    config = Config(
        server=_server(r, base_url, token),
        users=_user_attributes(r),
        groups=_group_attributes(r),
        allowed_groups=allowed,
        home_template=_home_template(r),
        default_shell=_default_shell(r),
        min_uid=r.integer("min_uid"),
        max_uid=r.integer("max_uid"),
        min_gid=r.integer("min_gid"),
        max_gid=r.integer("max_gid"),
        allowed_shells=_allowed_shells(r),
        local_passwd=r.absolute("local_passwd"),
        local_group=r.absolute("local_group"),
        keys=_key_rules(r),
        max_shrink=r.number("max_shrink"),
        state_dir=r.absolute("state_dir"),
        metrics_file=r.absolute("metrics_file") or None,
        slurm=_slurm_sync(r, allowed),
        shadow=_shadow_defaults(r),
        publish=Publish(r.absolute("publish_dir"), r.absolute("publish_key"), r.integer("publish_keep")),
        mirror=mirror,
    )
    _check_together(r, config)
    if r.problems:
        raise ConfigError.invalid(r.problems)
    return dataclasses.replace(config, warnings=tuple(r.warnings))


# --- builders: each reads its options through the Reader ------------------------------------------------------


def _server(r: Reader, base_url: str, token: str) -> Server:
    """The endpoints below base_url, and the limits of listing them."""
    return Server(
        base_url=base_url,
        users_url=_endpoint_url(r, base_url, "users_endpoint"),
        groups_url=_endpoint_url(r, base_url, "groups_endpoint"),
        token=token,
        page_size=r.integer("page_size"),
        pagination=r.choice("pagination"),
        max_pages=r.integer("max_pages"),
        max_users=r.integer("max_users"),
        workers=r.integer("workers"),
        max_page_bytes=r.integer("max_page_bytes"),
        timeout=r.number("timeout"),
        retries=r.integer("retries"),
        max_retry_wait=r.number("max_retry_wait"),
        deadline=r.number("deadline"),
        verify=_verify(r),
        users_query=_query(r, "users_query"),
        groups_query=_query(r, "groups_query"),
        fetch=_fetch(r),
    )


# What coreweave_fetch = members cannot be combined with: each means the full listing by nature.
_NOT_WITH_MEMBERS = (
    ("users_query", lambda text: bool(text), "its filter and ours would have to be joined"),
    ("groups", lambda text: text == "*", "every user is wanted"),
    ("member_match", lambda text: text in ("value", "display", "userName"), "members name users by POSIX name, "
                                                                          "which only the full listing resolves"),
)


def _fetch(r: Reader) -> str:
    """coreweave_fetch; ``members`` refuses what only the full listing can serve."""
    fetch = r.choice("fetch")
    for name, clashes, why in _NOT_WITH_MEMBERS if fetch == "members" else ():
        if clashes(r.text(name)):
            r.problem("fetch", f"coreweave_fetch = members cannot be combined with coreweave_{name} = "
                               f"{r.text(name)} ({why}): use auto, which lists every user then")
    return fetch


def _endpoint_url(r: Reader, base_url: str, name: str) -> str:
    """base_url/<endpoint>, the endpoint without surrounding '/'."""
    endpoint = r.text(name).strip("/")
    _refuse_url_query(r, name, endpoint)
    return base_url + "/" + endpoint


def _refuse_url_query(r: Reader, name: str, text: str) -> None:
    """A '?' or '#' would carry parameters past the checks of the query options."""
    if "?" in text or "#" in text:
        r.problem(name, f"{_BY_NAME[name].key} must not hold '?' or '#', got {text!r}: query parameters go in "
                        "coreweave_users_query / coreweave_groups_query")


# The listing's own parameters (RFC 7644 §3.4.2.4, RFC 9865): never set by a query option.
_PAGING_PARAMETERS = frozenset({"startindex", "count", "cursor"})
# Parameters that could hide what a decision reads, by lower-case name, with why. A filtered Users
# listing only narrows (a user it leaves out is never a member), a filtered Groups listing does not:
# the primary-gid rule needs the gid and members of every group (docs/configuration.md).
_GROUPS_STRIPPED = ("it can strip the gids and members the primary-gid rule and membership read; choose groups "
                    "with coreweave_groups")
_USERS_STRIPPED = "it can strip `active` (a user without it counts as active) and the attributes the checks read"
_HIDING_PARAMETERS = {
    "groups_query": {"filter": "the primary-gid rule needs every group; choose groups with coreweave_groups",
                     "attributes": _GROUPS_STRIPPED, "excludedattributes": _GROUPS_STRIPPED},
    "users_query": {"attributes": _USERS_STRIPPED, "excludedattributes": _USERS_STRIPPED},
}
# ASCII only: a server folding case the Unicode way (Java's equalsIgnoreCase) would read `ſtartIndex`
# (long s) as startIndex, `fılter` (dotless i) as filter.
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def _query(r: Reader, name: str) -> Optional[Tuple[Tuple[str, str], ...]]:
    """A query string (``a=b&c=d``, as CoreWeave's fork writes it) as (name,
    value) pairs, as written: requests URL-encodes them when sending."""
    text = r.text(name)
    if not text:
        return None
    pairs = []
    for item in (item.strip() for item in text.split("&")):
        if not item:
            continue
        param, has_value, value = item.partition("=")
        problem = _query_item_problem(name, item, param.strip(), bool(has_value))
        if problem:
            r.problem(name, problem)
        else:
            pairs.append((param.strip(), value.strip()))
    return tuple(pairs)


def _query_item_problem(name: str, item: str, param: str, has_value: bool) -> str:
    """What is wrong with one name=value item of coreweave_<name>; "" when nothing."""
    key = _BY_NAME[name].key
    if param.lower() in _PAGING_PARAMETERS:
        return f"{key} must not set {param!r}: paging is the client's (coreweave_page_size, coreweave_pagination)"
    why = _HIDING_PARAMETERS[name].get(param.lower())
    if why:
        return f"{key} must not set {param!r}: {why}"
    if not param or not has_value:
        return f"{key}: {item!r} is not name=value"
    if not _PARAMETER_NAME.fullmatch(param):
        return f"{key}: parameter name {param!r} must be ASCII letters, digits, '_', '.' or '-'"
    return ""


def _base_url(r: Reader, *, required: bool = True) -> str:
    """https://, or http:// to a loopback test server; without the trailing '/'."""
    text = r.text("base_url")
    if not text:
        if required:
            r.problem("base_url", "coreweave_base_url is required (the SCIM base URL, e.g. "
                                  "https://api.coreweave.com/scim/<org-id>)")
        return ""
    return _url(r, "base_url", text)


def _url(r: Reader, name: str, text: str) -> str:
    """``text`` without the trailing '/', or a problem of coreweave_<name>."""
    url, key = text.rstrip("/"), _BY_NAME[name].key
    if "?" in url or "#" in url:
        _refuse_url_query(r, name, url)
    elif not url.startswith(("https://", "http://")):
        r.problem(name, f"{key} must start with https:// (or http:// for a loopback test server), got {url!r}")
    elif url.startswith("http://") and not _is_loopback(_url_host(url)):
        r.problem(name, f"{key} must use https:// for host {_url_host(url)!r}: http:// is accepted only for a "
                        f"loopback test server (localhost, 127.0.0.0/8, ::1), got {url!r}")
    elif "@" in _authority(url):
        r.problem(name, f"{key} must not hold a user or password (it would be logged and is never sent): "
                        f"got {_url_host(url)!r}")
    return url


def _mirror(r: Reader) -> Optional[Mirror]:
    """Mirror mode, when coreweave_mirror_url is set: the URL and the trusted keys (read now, like the token)."""
    text = r.text("mirror_url")
    if not text:
        return None
    url = _url(r, "mirror_url", text)
    path = r.absolute("mirror_public_key")
    if not path:
        r.problem("mirror_public_key", "coreweave_mirror_public_key is required with coreweave_mirror_url: the "
                                       "publisher's public key file (its .pub)")
    keys = _trusted_keys(r, path) if path.startswith("/") else ()
    return Mirror(url, keys, path, r.number("mirror_max_age"))


def _trusted_keys(r: Reader, path: str) -> Tuple[bytes, ...]:
    """The keys of coreweave_mirror_public_key; a file others may write would let them choose the publisher."""
    from . import sshsig  # cryptography: only in mirror mode (the keys command imports this module)

    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            keys = sshsig.read_public_keys(f.read(), path=path)
    except (OSError, UnicodeDecodeError, sshsig.KeyFileError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        r.problem("mirror_public_key", f"coreweave_mirror_public_key {path!r} cannot be used: {reason}")
        return ()
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        r.problem("mirror_public_key", f"coreweave_mirror_public_key {path!r} is writable by group or others: "
                                       "chmod 644 it (whoever can write it chooses the publisher)")
    if not keys:
        r.problem("mirror_public_key", f"coreweave_mirror_public_key {path!r} holds no ssh-ed25519 key")
    return keys


def _verify(r: Reader) -> Union[bool, str]:
    """requests' verify: False, else the CA bundle when one is set, else True."""
    verify = r.boolean("verify_tls")
    ca_bundle = r.absolute("ca_bundle")
    if verify and ca_bundle.startswith("/"):
        return ca_bundle
    return verify


def _token(r: Reader, environ: Mapping[str, str]) -> str:
    """First found wins: token file, environment variables, inline option."""
    if r.text("token_file"):
        return _file_token(r)
    for var in TOKEN_ENV_VARS:
        if environ.get(var, "").strip():
            return _checked_token(r, "", environ[var].strip(), f"environment variable {var}")
    inline = r.text("token")
    if not inline:
        r.problem_about("", "no bearer token: set coreweave_token_file (recommended), "
                            "or NSSCACHE_COREWEAVE_TOKEN / NSSCACHE_SCIM_AUTH_TOKEN in the environment")
        return ""
    r.warn("coreweave_token is set inline in a world-readable nsscache.conf: use coreweave_token_file")
    return _checked_token(r, "coreweave_token", inline, "coreweave_token")


def _file_token(r: Reader) -> str:
    """The token file's contents; a relative path is refused, not searched for."""
    path = r.absolute("token_file")  # nsscache runs sources from a temporary working directory
    if not path.startswith("/"):
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        r.problem("token_file", f"coreweave_token_file {path!r} cannot be read: {reason}")
        return ""
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        r.warn(f"coreweave_token_file {path!r} is readable by group or others: chmod 600 it")
    return _checked_token(r, "coreweave_token_file", token, f"coreweave_token_file {path!r}")


def _checked_token(r: Reader, key: str, token: str, source: str) -> str:
    """The token, or a problem under key naming where it came from (never the token)."""
    if not token:
        r.problem_about(key, f"the bearer token from {source} is empty")
    elif not all(0x21 <= ord(c) <= 0x7E for c in token):
        # Checked here so that requests never echoes the header value in an error.
        r.problem_about(key, f"the bearer token from {source} contains spaces or non-printable characters")
    return token


def _allowed_groups(r: Reader, *, required: bool = True) -> Optional[Tuple[str, ...]]:
    """The groups whose members may log in, each once; None for ``*``: every group
    (and, in mirror mode, when unset: every published group)."""
    text = r.text("groups")
    if not text and not required:
        return None
    if not text:
        r.problem("groups", "coreweave_groups is required: the POSIX groups whose members may log in, "
                            "comma-separated, or *")
        return ()
    if text == "*":
        return None
    groups = tuple(dict.fromkeys(r.names("groups")))
    if not groups:
        r.problem("groups", "coreweave_groups names no group")
    return groups


def _user_attributes(r: Reader) -> UserAttributes:
    users = UserAttributes(
        name=r.paths("user_name_attribute"),
        uid=r.paths("uid_attribute"),
        gid=r.paths("gid_attribute"),
        ssh_keys=r.paths("ssh_keys_attribute"),
        home=r.paths("home_attribute"),
        shell=r.paths("shell_attribute"),
        gecos=r.paths("gecos_attribute"),
    )
    for name, paths in (("user_name_attribute", users.name), ("uid_attribute", users.uid),
                        ("gid_attribute", users.gid)):
        if not paths:
            r.problem(name, f"coreweave_{name} must name an attribute")
    return users


def _group_attributes(r: Reader) -> GroupAttributes:
    groups = GroupAttributes(name=r.paths("group_name_attribute"), gid=r.paths("group_gid_attribute"),
                             member_match=r.choice("member_match"))
    if not groups.name or not groups.gid:
        r.problem("group_gid_attribute" if groups.name else "group_name_attribute",
                  "coreweave_group_name_attribute and coreweave_group_gid_attribute must name an attribute")
    return groups


def _home_template(r: Reader) -> Optional[str]:
    template = r.text("home_directory")
    if not template:
        return None
    if not template.startswith("/") or "%u" not in template:
        # Without %u every user would share one home: each would be dropped.
        r.problem("home_directory", "coreweave_home_directory must be an absolute path template holding %%u "
                                    f"(the username), got {template!r}")
    return template


def _default_shell(r: Reader) -> str:
    shell = r.text("default_shell")
    if not clean_path(shell):
        # It lands in the passwd line of every user whose own shell is not allowed.
        r.problem("default_shell", f"coreweave_default_shell must be an absolute, clean path, got {shell!r}")
    return shell


def _allowed_shells(r: Reader) -> FrozenSet[str]:
    """The configured list, else the node's /etc/shells."""
    shells = r.names("allowed_shells") if r.text("allowed_shells") else _etc_shells(r)
    bad = [shell for shell in shells if not shell.startswith("/")]
    if bad:
        r.problem("allowed_shells", f"coreweave_allowed_shells must list absolute paths, got {', '.join(bad)}")
    return frozenset(shells)


def _etc_shells(r: Reader) -> Tuple[str, ...]:
    try:
        with open(SHELLS_FILE, encoding="utf-8") as f:
            return tuple(line.strip() for line in f if line.strip() and not line.startswith("#"))
    except OSError as e:
        r.problem_about(SHELLS_FILE, f"{SHELLS_FILE} cannot be read ({e.strerror}): set coreweave_allowed_shells")
        return ()


def _key_rules(r: Reader) -> KeyRules:
    families = option("ssh_key_types").choices
    types = frozenset(t.lower() for t in r.names("ssh_key_types"))
    if not types or not types <= set(families):
        r.problem("ssh_key_types", f"coreweave_ssh_key_types must name some of {', '.join(families)}, "
                                   f"got {r.text('ssh_key_types')!r}")
    return KeyRules(types=types, min_rsa_bits=r.integer("min_rsa_bits"), allow_options=r.boolean("allow_key_options"))


# What the publisher decides and a node in mirror mode does not read (docs/configuration.md, "Mirror mode").
_PUBLISHERS_OPTIONS = (
    "base_url", "users_endpoint", "groups_endpoint", "token_file", "token", "user_name_attribute", "uid_attribute",
    "gid_attribute", "ssh_keys_attribute", "home_attribute", "shell_attribute", "gecos_attribute",
    "group_name_attribute", "group_gid_attribute", "member_match", "home_directory",
    *("shadow_default_" + f for f in SHADOW_FIELDS), "ssh_key_types", "min_rsa_bits", "allow_key_options",
    "page_size", "pagination", "users_query", "groups_query", "max_pages", "max_users", "workers",
    "publish_dir", "publish_key", "publish_keep",
)


def _check_together(r: Reader, config: Config) -> None:
    """What no single option shows: the id ranges' order, the default shell among the allowed."""
    if config.min_uid > config.max_uid or config.min_gid > config.max_gid:
        r.problem("min_uid" if config.min_uid > config.max_uid else "min_gid",
                  "coreweave_min_uid/min_gid must not exceed coreweave_max_uid/max_gid")
    if config.default_shell not in config.allowed_shells:
        r.warn(f"coreweave_default_shell {config.default_shell} is not among the allowed shells")
    ignored = [_BY_NAME[name].key for name in _PUBLISHERS_OPTIONS if name in r.options]
    if config.mirror is not None and ignored:
        r.warn(f"{', '.join(ignored)}: read by the publisher, ignored in mirror mode (the bundle carries what they "
               "decide)")


def _slurm_sync(r: Reader, allowed: Optional[Tuple[str, ...]]) -> SlurmSync:
    """The coreweave_slurm_* keys (slurm-sync reads them; the maps do not)."""
    accounts = _slurm_accounts(r, allowed)
    parent = r.text("slurm_parent_account")
    if not _SLURM_NAME.fullmatch(parent):
        r.problem("slurm_parent_account",
                  f"coreweave_slurm_parent_account must be a Slurm account name, got {parent!r}")
    sacctmgr = r.text("slurm_sacctmgr")
    if "/" in sacctmgr and not sacctmgr.startswith("/"):
        r.problem("slurm_sacctmgr", f"coreweave_slurm_sacctmgr must be a command name or an absolute path, "
                                    f"got {sacctmgr!r}")
    return SlurmSync(
        accounts=accounts,
        clusters=_slurm_names(r, "slurm_cluster"),
        parent_account=parent,
        sacctmgr=sacctmgr,
        timeout=r.number("slurm_timeout"),
    )


def _slurm_accounts(r: Reader, allowed: Optional[Tuple[str, ...]]) -> Optional[Tuple[Tuple[str, str], ...]]:
    """(group, account) pairs in the configured order; None when unset: every listed group."""
    text = r.text("slurm_accounts")
    if not text:
        return None
    pairs: List[Tuple[str, str]] = []
    for item in (i.strip() for i in text.split(",")):
        pair = _slurm_account(r, item, allowed, pairs) if item else None
        if pair is not None:
            pairs.append(pair)
    if not text.replace(",", "").strip():
        r.problem("slurm_accounts", "coreweave_slurm_accounts names no group")
    return tuple(pairs)


def _slurm_account(r: Reader, item: str, allowed: Optional[Tuple[str, ...]],
                   pairs: Sequence[Tuple[str, str]]) -> Optional[Tuple[str, str]]:
    """One ``group`` or ``group=account`` item; None when it is refused."""
    group, _, account = (p.strip() for p in item.partition("="))
    account = account or group
    if not group or not _SLURM_NAME.fullmatch(account):
        r.problem("slurm_accounts", f"coreweave_slurm_accounts: {item!r} is not `group` or `group=account` "
                                    f"(account: lower-case a-z 0-9 _ . -)")
    elif allowed is not None and group not in allowed:
        r.problem("slurm_accounts", f"coreweave_slurm_accounts names group {group!r}, which is not in coreweave_groups")
    elif any(g == group for g, _ in pairs):
        r.problem("slurm_accounts", f"coreweave_slurm_accounts names group {group!r} twice")
    else:
        return group, account
    return None


def _slurm_names(r: Reader, name: str) -> Optional[Tuple[str, ...]]:
    """Comma-separated Slurm names, each once; None when unset."""
    text = r.text(name)
    if not text:
        return None
    items = r.names(name)
    if not items or not all(_SLURM_NAME.fullmatch(item) for item in items):
        r.problem(name, f"coreweave_{name} must list lower-case Slurm names (a-z 0-9 _ . -), got {text!r}")
    return tuple(dict.fromkeys(items))


def _shadow_defaults(r: Reader) -> ShadowDefaults:
    """The coreweave_shadow_default_* keys. What would lock everyone out today
    is a warning, not a problem: refusing the configuration on a calendar day
    would freeze every cache, and removed users with it."""
    defaults = ShadowDefaults(**{field: r.optional_integer("shadow_default_" + field) for field in SHADOW_FIELDS})
    for warning in _shadow_warnings(defaults, today=int(time.time() // 86400)):
        r.warn(warning)
    return defaults


def _shadow_warnings(defaults: ShadowDefaults, today: int) -> List[str]:
    """What the fields do to every login on day ``today`` (days since 1970-01-01),
    as pam_unix's account check reads them (an empty field is -1)."""
    warnings = [f"coreweave_shadow_default_{field} = 0 is written as an empty field (nsscache writes a 0 as "
                "empty), not as shadow(5)'s 0" for field in ("lstchg", "max", "inact", "expire")
                if getattr(defaults, field) == 0]
    expire, maximum = defaults.expire, defaults.max
    if expire and expire <= today:
        warnings.append(f"coreweave_shadow_default_expire = {expire} ({_day(expire)}) is not after today: PAM "
                        "refuses every login of every account (account expired)")
    changed = defaults.lstchg or -1  # a 0 is written empty, and glibc reads an empty field as -1
    if maximum and changed <= today and today - changed > maximum:
        warnings.append(f"coreweave_shadow_default_max = {maximum}: every password counts as expired since "
                        f"{_day(changed + maximum + 1)} (last change + max): PAM demands at every login a password "
                        "change nobody can make (the password is *), so every login fails")
    return warnings


def _day(days: int) -> str:
    """A day number of shadow(5) as a date: 19000 -> 2022-01-08."""
    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=days)).isoformat()


# --- the option reference in docs/configuration.md --------------------------------------------------------------


def markdown_table(options: Sequence[Option] = OPTIONS) -> str:
    """The option reference as a Markdown table: key | default | meaning.

    >>> print(markdown_table([Option("retries", Kind.INTEGER, 3, "retries after the first attempt")]), end="")
    | key | default | meaning |
    |---|---|---|
    | `coreweave_retries` | `3` | retries after the first attempt |
    """
    rows = [f"| `{o.key}` | {o.shown or _shown(o.default)} | {o.doc} |" for o in options]
    return "\n".join(["| key | default | meaning |", "|---|---|---|", *rows]) + "\n"


def _shown(value: object) -> str:
    """A default as nsscache.conf would spell it: true/false, 30 for 30.0."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    return f"`{text}`"


# --- small checks ------------------------------------------------------------------------------------------------


def _authority(url: str) -> str:
    """What lies between ``scheme://`` and the next '/' (user, password, host, port)."""
    return url.partition("://")[2].split("/", 1)[0]


def _url_host(url: str) -> str:
    """The host of url, lower-case, without brackets ('' when there is none)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:  # an unbalanced '[' or a bad port
        return ""


def _is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (not an IPv4-mapped form: Pythons disagree on it)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _LOOPBACK_NETWORKS)


def clean_path(path) -> bool:
    """An absolute, normalised ASCII path without ':', ',' or control
    characters: safe in a passwd field. ASCII because nsscache's index
    offsets count characters, not bytes (and its writer cannot encode a
    lone surrogate)."""
    return (
        isinstance(path, str)
        and path.isascii()
        and path.startswith("/")
        and not _PATH_BAD.search(path)
        and posixpath.normpath(path) == path
        and not path.startswith("//")
    )
