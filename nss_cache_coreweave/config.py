"""nsscache.conf options -> one frozen, validated Config.

nsscache hands a source the ``coreweave_*`` options of a map with the prefix
stripped (``coreweave_base_url`` -> ``base_url``), after its ``FixValue``
turned numeric-looking strings into int/float. Every key, default and unit
lives in ``KEYS`` below; README.md and conf/nsscache.conf mirror it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import FrozenSet, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

from .errors import ConfigError
from .sshkeys import KEY_TYPES

__all__ = [
    "KEYS",
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
]

USER_EXTENSION = "urn:coreweave:params:scim:schemas:extension:coreweave:2.0:CoreWeaveUser"
_EXT = USER_EXTENSION + ":"

# Checked in this order after coreweave_token_file; coreweave_token is last.
TOKEN_ENV_VARS = ("NSSCACHE_COREWEAVE_TOKEN", "NSSCACHE_SCIM_AUTH_TOKEN")

# key (without the coreweave_ prefix) -> default; None = required or unset.
KEYS: Mapping[str, object] = {
    "base_url": None,
    "users_endpoint": "Users",
    "groups_endpoint": "Groups",
    "token_file": None,
    "token": None,
    "groups": None,
    "user_name_attribute": _EXT + "sunkPosixUsername",
    "uid_attribute": _EXT + "sunkPosixUid",
    "gid_attribute": _EXT + "sunkPosixGid",
    "ssh_keys_attribute": _EXT + "sunkSshKeys",
    "home_attribute": _EXT + "sunkHomeDirectory",
    "shell_attribute": _EXT + "sunkLoginShell",
    "gecos_attribute": "displayName, name.formatted",
    "group_name_attribute": "sunkPosixGroupName, displayName",
    "group_gid_attribute": "sunkPosixGid",
    "home_directory": None,
    "default_shell": "/bin/bash",
    "min_uid": 1000,
    "max_uid": 4294967294,
    "min_gid": 1000,
    "max_gid": 4294967294,
    "allowed_shells": None,  # None: the node's /etc/shells
    "local_passwd": "/etc/passwd",
    "local_group": "/etc/group",
    "ssh_key_types": "ed25519, ecdsa, sk-ed25519, sk-ecdsa, rsa",
    "min_rsa_bits": 2048,
    "allow_key_options": False,
    "max_shrink": 0.25,
    "state_dir": "/var/lib/nsscache",
    "metrics_file": None,
    # slurm-sync (nsscache-coreweave slurm-sync; not read by the maps)
    "slurm_accounts": None,  # None: every listed group becomes an account of the same name
    "slurm_cluster": None,  # None: the clusters slurmdbd knows, else ClusterName from slurm.conf
    "slurm_parent_account": "root",
    "slurm_sacctmgr": "sacctmgr",
    "slurm_timeout": 600.0,
    "page_size": 1000,
    "pagination": "index",
    "max_pages": 10000,
    "max_users": 2_000_000,
    "workers": 2,
    "max_page_bytes": 64 * 1024 * 1024,
    "timeout": 30.0,
    "retries": 3,
    "max_retry_wait": 60.0,
    "deadline": 300.0,
    "ca_bundle": None,
    "verify_tls": True,
}

SHELLS_FILE = "/etc/shells"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_PATH_BAD = re.compile(r"[\x00-\x1f\x7f:,]")
_CORE_SCHEMAS = (
    "urn:ietf:params:scim:schemas:core:2.0:user",
    "urn:ietf:params:scim:schemas:core:2.0:group",
)
_LOOPBACK_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
_ID_LIMIT = 4294967294  # 2**32 - 2: (uid_t)-1 means "no change" to chown()


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


@dataclass(frozen=True)
class Server:
    """Everything needed to list Users and Groups."""

    base_url: str
    users_url: str
    groups_url: str
    token: str = dataclasses.field(repr=False)
    page_size: int = 1000
    pagination: str = "index"
    max_pages: int = 10000
    max_users: int = 2_000_000  # a Users listing announcing or holding more is refused
    workers: int = 2  # processes decoding a long index listing; 0: decode in-process
    max_page_bytes: int = 64 * 1024 * 1024
    timeout: float = 30.0  # seconds per request
    retries: int = 3
    max_retry_wait: float = 60.0  # seconds, caps Retry-After and backoff
    deadline: float = 300.0  # seconds for the whole listing of Users and Groups
    verify: Union[bool, str] = True  # requests' verify: a CA bundle path or a bool


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
    parent_account: str = "root"
    sacctmgr: str = "sacctmgr"
    timeout: float = 600.0  # seconds per sacctmgr call


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


def parse(options: Mapping[str, object], environ: Mapping[str, str] = os.environ, *, need_token: bool = True) -> Config:
    """Build a Config from a map's prefix-stripped options.

    Every problem is collected and reported in one ConfigError. Without
    ``need_token`` (for ``status``) the token is not read at all.
    """
    problems = []
    warnings = []
    opts = {k: v for k, v in options.items() if k != "name"}
    for key in sorted(set(opts) - set(KEYS)):
        warnings.append(f"unknown option coreweave_{key} is ignored (a typo?)")

    def get(key):
        value = opts.get(key)
        if isinstance(value, str):
            value = value.strip()
            if value == "":
                value = None
        return KEYS[key] if value is None else value

    def number(key, kind, low, high):
        value = get(key)
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError
            result = kind(value)
            if kind is int and result != float(value):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            problems.append(f"coreweave_{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
            return kind(KEYS[key])
        if not low <= result <= high:
            problems.append(f"coreweave_{key} must be between {low} and {high}, got {result}")
        return result

    def boolean(key):
        value = get(key)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        problems.append(f"coreweave_{key} must be true or false, got {value!r}")
        return bool(KEYS[key])

    def paths(key):
        try:
            return tuple(parse_path(p) for p in str(get(key)).split(",") if p.strip())
        except ConfigError as e:
            problems.append(f"coreweave_{key}: {e}")
            return ()

    base_url = get("base_url")
    if base_url is None:
        problems.append("coreweave_base_url is required (the SCIM base URL, e.g. https://api.coreweave.com/scim/<org-id>)")
        base_url = ""
    base_url = str(base_url).rstrip("/")
    if base_url and not base_url.startswith(("https://", "http://")):
        problems.append(
            f"coreweave_base_url must start with https:// (or http:// for a loopback test server), got {base_url!r}"
        )
    elif base_url.startswith("http://") and not _is_loopback(_url_host(base_url)):
        problems.append(
            f"coreweave_base_url must use https:// for host {_url_host(base_url)!r}: http:// is accepted only for a "
            f"loopback test server (localhost, 127.0.0.0/8, ::1), got {base_url!r}"
        )

    groups = get("groups")
    allowed: Optional[Tuple[str, ...]]
    if groups is None:
        problems.append(
            "coreweave_groups is required: the POSIX groups whose members may log in, comma-separated, or *"
        )
        allowed = ()
    elif str(groups).strip() == "*":
        allowed = None
    else:
        allowed = tuple(dict.fromkeys(g.strip() for g in str(groups).split(",") if g.strip()))
        if not allowed:
            problems.append("coreweave_groups names no group")

    pagination = str(get("pagination")).lower()
    if pagination not in ("index", "cursor"):
        problems.append(f"coreweave_pagination must be index or cursor, got {pagination!r}")

    verify: Union[bool, str] = boolean("verify_tls")
    ca_bundle = get("ca_bundle")
    if ca_bundle is not None:
        ca_bundle = str(ca_bundle)
        if not os.path.isabs(ca_bundle):
            problems.append(f"coreweave_ca_bundle must be an absolute path, got {ca_bundle!r}")
        elif verify:
            verify = ca_bundle

    default_shell = str(get("default_shell"))
    if not clean_path(default_shell):
        # It lands in the passwd line of every user whose own shell is not allowed.
        problems.append(f"coreweave_default_shell must be an absolute, clean path, got {default_shell!r}")

    home_template = get("home_directory")
    if home_template is not None:
        home_template = str(home_template)
        if not home_template.startswith("/") or "%u" not in home_template:
            # Without %u every user would share one home: each would be dropped.
            problems.append(f"coreweave_home_directory must be an absolute path template holding %%u (the username), "
                            f"got {home_template!r}")

    token = _read_token(opts, environ, problems, warnings) if need_token else ""

    def endpoint(key):
        return base_url + "/" + str(get(key)).strip("/")

    def absolute(key):
        value = str(get(key))
        if not value.startswith("/"):
            problems.append(f"coreweave_{key} must be an absolute path, got {value!r}")
        return value

    server = Server(
        base_url=base_url,
        users_url=endpoint("users_endpoint"),
        groups_url=endpoint("groups_endpoint"),
        token=token,
        page_size=number("page_size", int, 1, 10000),
        pagination=pagination,
        max_pages=number("max_pages", int, 1, 1_000_000),
        max_users=number("max_users", int, 1, 100_000_000),
        workers=number("workers", int, 0, 8),
        max_page_bytes=number("max_page_bytes", int, 1024, 2**31),
        timeout=number("timeout", float, 0.1, 3600),
        retries=number("retries", int, 0, 10),
        max_retry_wait=number("max_retry_wait", float, 0, 3600),
        deadline=number("deadline", float, 1, 86400),
        verify=verify,
    )
    key_types = frozenset(t.strip().lower() for t in str(get("ssh_key_types")).split(",") if t.strip())
    unknown_types = key_types - set(KEY_TYPES.values())
    if unknown_types or not key_types:
        problems.append(
            f"coreweave_ssh_key_types must name some of {', '.join(sorted(set(KEY_TYPES.values())))}, "
            f"got {str(get('ssh_key_types'))!r}"
        )
    keys = KeyRules(
        types=key_types,
        min_rsa_bits=number("min_rsa_bits", int, 1024, 16384),
        allow_options=boolean("allow_key_options"),
    )
    shells = _allowed_shells(get("allowed_shells"), problems)
    if default_shell not in shells:
        warnings.append(f"coreweave_default_shell {default_shell} is not among the allowed shells")
    users = UserAttributes(
        name=paths("user_name_attribute"),
        uid=paths("uid_attribute"),
        gid=paths("gid_attribute"),
        ssh_keys=paths("ssh_keys_attribute"),
        home=paths("home_attribute"),
        shell=paths("shell_attribute"),
        gecos=paths("gecos_attribute"),
    )
    group_attrs = GroupAttributes(name=paths("group_name_attribute"), gid=paths("group_gid_attribute"))
    min_uid = number("min_uid", int, 1, _ID_LIMIT)
    max_uid = number("max_uid", int, 1, _ID_LIMIT)
    min_gid = number("min_gid", int, 1, _ID_LIMIT)
    max_gid = number("max_gid", int, 1, _ID_LIMIT)
    if min_uid > max_uid or min_gid > max_gid:
        problems.append("coreweave_min_uid/min_gid must not exceed coreweave_max_uid/max_gid")
    for key, value in (("user_name_attribute", users.name), ("uid_attribute", users.uid), ("gid_attribute", users.gid)):
        if not value:
            problems.append(f"coreweave_{key} must name an attribute")
    if not group_attrs.name or not group_attrs.gid:
        problems.append("coreweave_group_name_attribute and coreweave_group_gid_attribute must name an attribute")

    local_passwd, local_group = absolute("local_passwd"), absolute("local_group")
    max_shrink = number("max_shrink", float, 0.0, 1.0)
    state_dir = absolute("state_dir")
    metrics_file = absolute("metrics_file") if get("metrics_file") is not None else None
    slurm = _slurm_sync(get, number, allowed, problems)

    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Config(
        server=server,
        users=users,
        groups=group_attrs,
        allowed_groups=allowed,
        home_template=home_template,
        default_shell=default_shell,
        min_uid=min_uid,
        max_uid=max_uid,
        min_gid=min_gid,
        max_gid=max_gid,
        allowed_shells=shells,
        local_passwd=local_passwd,
        local_group=local_group,
        keys=keys,
        max_shrink=max_shrink,
        state_dir=state_dir,
        metrics_file=metrics_file,
        warnings=tuple(warnings),
        slurm=slurm,
    )


# Slurm account, cluster and user names: lower-case (slurmdbd folds case), no ',', '=', '|' or spaces.
_SLURM_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,63}", re.ASCII)


def _slurm_sync(get, number, allowed, problems) -> SlurmSync:
    """The coreweave_slurm_* keys; problems are appended to ``problems``."""

    def names(key):
        value = get(key)
        if value is None:
            return None
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        bad = [v for v in items if not _SLURM_NAME.fullmatch(v)]
        if bad or not items:
            problems.append(f"coreweave_{key} must list lower-case Slurm names (a-z 0-9 _ . -), got {value!r}")
        return tuple(dict.fromkeys(items))

    accounts = None
    raw = get("slurm_accounts")
    if raw is not None:
        pairs: List[Tuple[str, str]] = []
        for item in (i.strip() for i in str(raw).split(",")):
            if not item:
                continue
            group, _, account = (p.strip() for p in item.partition("="))
            account = account or group
            if not group or not _SLURM_NAME.fullmatch(account):
                problems.append(f"coreweave_slurm_accounts: {item!r} is not `group` or `group=account` "
                                f"(account: lower-case a-z 0-9 _ . -)")
            elif allowed is not None and group not in allowed:
                problems.append(f"coreweave_slurm_accounts names group {group!r}, which is not in coreweave_groups")
            elif any(g == group for g, _ in pairs):
                problems.append(f"coreweave_slurm_accounts names group {group!r} twice")
            else:
                pairs.append((group, account))
        if not str(raw).replace(",", "").strip():
            problems.append("coreweave_slurm_accounts names no group")
        accounts = tuple(pairs)
    parent = str(get("slurm_parent_account")).strip()
    if not _SLURM_NAME.fullmatch(parent):
        problems.append(f"coreweave_slurm_parent_account must be a Slurm account name, got {parent!r}")
    sacctmgr = str(get("slurm_sacctmgr")).strip()
    if "/" in sacctmgr and not sacctmgr.startswith("/"):
        problems.append(f"coreweave_slurm_sacctmgr must be a command name or an absolute path, got {sacctmgr!r}")
    return SlurmSync(
        accounts=accounts,
        clusters=names("slurm_cluster"),
        parent_account=parent,
        sacctmgr=sacctmgr,
        timeout=number("slurm_timeout", float, 1, 86400),
    )


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


def _allowed_shells(value, problems) -> FrozenSet[str]:
    """The configured list, else the node's /etc/shells."""
    if value is not None:
        shells = [s.strip() for s in str(value).split(",") if s.strip()]
    else:
        try:
            with open(SHELLS_FILE, encoding="utf-8") as f:
                shells = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        except OSError as e:
            problems.append(f"{SHELLS_FILE} cannot be read ({e.strerror}): set coreweave_allowed_shells")
            return frozenset()
    bad = [s for s in shells if not s.startswith("/")]
    if bad:
        problems.append(f"coreweave_allowed_shells must list absolute paths, got {', '.join(bad)}")
    return frozenset(shells)


def _read_token(opts, environ, problems, warnings) -> str:
    """First found wins: token file, env vars, inline option."""
    path = opts.get("token_file")
    if path not in (None, ""):
        path = str(path)
        if not os.path.isabs(path):
            # nsscache runs sources from a temporary working directory.
            problems.append(f"coreweave_token_file must be an absolute path, got {path!r}")
            return ""
        try:
            with open(path, encoding="utf-8") as f:
                mode = os.fstat(f.fileno()).st_mode
                token = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(
                f"coreweave_token_file {path!r} cannot be read: {getattr(e, 'strerror', None) or type(e).__name__}"
            )
            return ""
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"coreweave_token_file {path!r} is readable by group or others: chmod 600 it")
        source = f"coreweave_token_file {path!r}"
    else:
        for var in TOKEN_ENV_VARS:
            if environ.get(var, "").strip():
                token, source = environ[var].strip(), f"environment variable {var}"
                break
        else:
            inline = opts.get("token")
            if inline in (None, ""):
                problems.append(
                    "no bearer token: set coreweave_token_file (recommended), "
                    "or NSSCACHE_COREWEAVE_TOKEN / NSSCACHE_SCIM_AUTH_TOKEN in the environment"
                )
                return ""
            warnings.append("coreweave_token is set inline in a world-readable nsscache.conf: use coreweave_token_file")
            token, source = str(inline).strip(), "coreweave_token"
    if not token:
        problems.append(f"the bearer token from {source} is empty")
    elif not all(0x21 <= ord(c) <= 0x7E for c in token):
        # Checked here so that requests never echoes the header value in an error.
        problems.append(f"the bearer token from {source} contains spaces or non-printable characters")
    return token
