"""CoreWeave's nsscache fork (``source = scim``) -> ``source = coreweave``.

Pure: the fork's nsscache.conf text in, a Conversion out (the text, notes
for stderr, the exit status of ``nsscache-coreweave convert-config``). Every
fork key is translated by its rows in ``ROWS``; the fork's maps read a key
in their own section or in [DEFAULT], and every map's view of it must agree,
because this package lists Users and Groups once for all maps. The
translation lands in [DEFAULT]; nsscache's own keys stay where they were.
Nothing is ever widened: what cannot be translated is left commented for a
person (exit 1). Last, the translated keys are read back as nsscache reads
them and parsed by config.parse: what it refuses is commented out too (exit
1), so exit 0 never hands over a configuration that fails every run (the
fork's old caches would stay). The token's value is never part of the output
or a note.
docs/migrating-from-the-fork.md is the operator's side of this table.
"""

from __future__ import annotations

import configparser
import re
import textwrap
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Tuple

from . import config as config_mod
from .errors import ConfigError, ConfigProblem
from .policy import POSIX_NAME

__all__ = [
    "EXIT_OK", "EXIT_NEEDS_PERSON", "EXIT_NOT_CONVERTED", "Note", "Conversion", "Found", "Line", "Translated",
    "Row", "ROWS", "convert",
]

EXIT_OK, EXIT_NEEDS_PERSON, EXIT_NOT_CONVERTED = 0, 1, 2

FORK_MAPS = ("passwd", "shadow", "group", "sshkey")  # what the fork's scim source serves
USER_MAPS = ("passwd", "shadow", "sshkey")  # the maps that list Users in the fork
# coreweave_member_match's sub-attribute choices: value, display, userName
MEMBER_FIELDS = tuple(c for c in config_mod.option("member_match").choices if c not in ("auto", "id"))
TOKEN_FILE = "/etc/nsscache-coreweave/token"  # the path conf/nsscache.conf suggests

_NO_DEFAULT_SECTION = "\x00"  # no file can name it: [DEFAULT] reads as an ordinary section
_NAME_EQ = re.compile(r'\s*displayName\s+eq\s+"([^"\\,]+)"\s*', re.ASCII | re.IGNORECASE)
_OR = re.compile(r"\s+or\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Note:
    """A line for stderr: about fork key ``key`` ("" for the file)."""

    key: str
    message: str
    needs_person: bool = False  # exit 1: the output is incomplete until a person decides

    def __str__(self) -> str:
        about = f"{self.key}: " if self.key else ""
        return ("needs a person: " if self.needs_person else "note: ") + about + self.message


@dataclass(frozen=True)
class Conversion:
    text: str  # the configuration for source = coreweave ("" when not converted)
    notes: Tuple[Note, ...]
    status: int  # EXIT_OK, EXIT_NEEDS_PERSON or EXIT_NOT_CONVERTED


@dataclass(frozen=True)
class Found:
    """A fork key as the maps of its row read it (each map: its section, else [DEFAULT])."""

    key: str
    values: Tuple[str, ...]  # the distinct values nsscache hands the fork; () when unset
    sections: Tuple[str, ...]  # where it is set
    read: bool  # some map of the row uses source = scim

    @property
    def value(self) -> Optional[str]:
        return self.values[0] if len(self.values) == 1 else None

    @property
    def origin(self) -> str:
        where = ", ".join(f"[{s}]" for s in self.sections)
        return f"{self.key} in {where}" if where else f"{self.key} (unset)"


@dataclass(frozen=True)
class Line:
    """A ``coreweave_<key>`` line under its comments; value None: left commented for a person."""

    key: str  # without the coreweave_ prefix
    value: Optional[str]
    comments: Tuple[str, ...] = ()
    shown: str = ""  # after the '=' of a line left commented (never a token)
    origin: str = ""  # the fork key(s) it comes from, as a Note names them


@dataclass(frozen=True)
class Translated:
    lines: Tuple[Line, ...] = ()
    notes: Tuple[Note, ...] = ()


@dataclass(frozen=True)
class Row:
    """One fork key, as some maps read it, and its translation."""

    key: str  # the fork key, scim_ prefix included
    maps: Tuple[str, ...]  # the fork maps that read it
    translate: Callable[[Row, Found], Translated]
    target: str = ""  # the coreweave key it becomes, without the prefix
    default: Optional[str] = None  # the fork's value when unset, when it differs from this package's
    required: bool = False  # the fork's map fails without it
    differs: str = ""  # what the fork does differently on purpose
    always: bool = False  # translated even when unset or unread (no fallback exists)


# --- the translations ---------------------------------------------------------------------------------------


def _fail(row: Row, found: Found, message: str, shown: str = "") -> Translated:
    """The target left commented for a person, and a note saying why."""
    line = Line(row.target, None, (f"{found.origin}: {message}",), shown, found.origin) if row.target else None
    return Translated((line,) if line else (), (Note(found.origin, message, needs_person=True),))


def _one(row: Row, found: Found, value: str, *more: str) -> Translated:
    """The target set to value, under the origin and what the fork does differently."""
    comments = (found.origin,) + more + ((f"the fork: {row.differs}",) if row.differs else ())
    return Translated((Line(row.target, value, comments, origin=found.origin),))


def _same(row: Row, found: Found) -> Translated:
    return _one(row, found, str(found.value))


def _attribute(row: Row, found: Found) -> Translated:
    """A ``/`` path as it is (this package reads that notation too)."""
    try:
        config_mod.parse_path(str(found.value))
    except ConfigError:
        return _fail(row, found, f"{found.value!r} is not an attribute path", shown=str(found.value))
    unset = () if found.sections else (f"the fork's default: {found.value}",)
    return _one(row, found, str(found.value), *unset)


def _member_match(row: Row, found: Found) -> Translated:
    """[group] scim_path_username: which sub-attribute of each member holds the name."""
    text = str(found.value)
    head, slash, field = text.partition("/")
    field = field if slash else head
    if (slash and head != "members") or field not in MEMBER_FIELDS:
        return _fail(row, found, f"the fork reads group members through {text!r}; coreweave_member_match reads "
                                 "members[*].value, .display or .userName: choose it (or id) yourself")
    if field == "value":
        # auto reads members[*].value as a user id (RFC 7643) first, then as exactly one listed user's POSIX name
        # (the fork's reading): the converted configuration works whichever convention IAM uses.
        return _one(row, found, "auto", "the fork writes members[*].value as the member's name, unchecked; auto "
                                        "takes it as a listed user's id, else as exactly one listed user's POSIX name")
    return _one(row, found, field, f"the fork writes members[*].{field} as the member's name, unchecked; this "
                                   "package keeps it only when it is exactly one listed user's POSIX name")


def _home_template(row: Row, found: Found) -> Translated:
    text = str(found.value)
    if not text.startswith("/") or "%u" not in text:
        return _fail(row, found, f"{text!r} is not an absolute path holding %u: every user would share one home "
                                 "(this package drops them all)", shown=text)
    return _same(row, found)


def _number(text: str, low: float, high: float, integer: bool) -> Optional[float]:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        return None
    return value if low <= value <= high else None


def _timeout(row: Row, found: Found) -> Translated:
    """The fork's curl timeout (whole request; 0: none) -> seconds per request."""
    seconds = _number(str(found.value), 0.1, 3600, False)
    if seconds is None:
        return _fail(row, found, f"{found.value!r}: this package needs 0.1 to 3600 seconds per request")
    return _one(row, found, f"{seconds:g}", "seconds per request (connect and read); coreweave_deadline (300) "
                                            "bounds the whole listing")


def _retries(row: Row, found: Found) -> Translated:
    """Attempts in total -> retries after the first attempt."""
    attempts = _number(str(found.value), 1, 11, True)
    if attempts is None:
        return _fail(row, found, f"{found.value!r} attempts: this package makes 1 to 11 (0 to 10 retries)")
    return _one(row, found, str(int(attempts) - 1), f"the fork counts attempts ({int(attempts)}), this package "
                                                    "retries after the first attempt")


def _retry_delay(row: Row, found: Found) -> Translated:
    comment = (f"{found.origin} = {found.value}: no equivalent: the fork waits a fixed {found.value} s between "
               "attempts; this package backs off 1, 2, 4 ... s with jitter, each wait capped by "
               "coreweave_max_retry_wait")
    return Translated((Line("", None, (comment,)),))


def _verify(row: Row, found: Found) -> Translated:
    text = str(found.value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return _one(row, found, "true")
    return _fail(row, found, f"{found.value!r} turns certificate checks off, for tests only: set "
                             "coreweave_verify_tls = false yourself if you mean it", shown="false")


def _token(row: Row, found: Found) -> Translated:
    """Never the value: whether there is one, and where this package looks."""
    if not found.sections:
        return Translated((Line("", None, (
            f"{found.origin}: the fork read NSSCACHE_SCIM_AUTH_TOKEN from the environment; so does this package "
            "(after coreweave_token_file and NSSCACHE_COREWEAVE_TOKEN)",)),))
    message = ("an inline token (not copied): put it in a root-only file (chmod 600) named by "
               "coreweave_token_file; in the fork an inline token wins over the environment, here a token file or "
               "NSSCACHE_COREWEAVE_TOKEN / NSSCACHE_SCIM_AUTH_TOKEN wins over an inline coreweave_token")
    line = Line("token_file", None, (f"{found.origin}: {message}",), TOKEN_FILE, found.origin)
    return Translated((line,), (Note(found.origin, message, needs_person=True),))


# --- the query parameters: the allow-list, paging, what is left for the server ---------------------------------


def _fork_items(text: Optional[str]) -> List[Tuple[str, Optional[str]]]:
    """The fork's split: ``&`` between items, the first ``=`` within one; a bare name has no value
    (a bare ``cursor`` is the fork's switch to cursor paging). What is left for the server is checked
    by config.parse at the end, as every run reads it."""
    items = []
    for item in (text or "").split("&"):
        name, eq, value = item.partition("=")
        if name.strip():
            items.append((name.strip(), value if eq else None))
    return items


def _query_text(items: List[Tuple[str, Optional[str]]]) -> str:
    return "&".join(name if value is None else f"{name}={value}" for name, value in items)


def _leftover(items: List[Tuple[str, Optional[str]]]) -> List[Tuple[str, Optional[str]]]:
    """What is neither a bare ``cursor`` nor ``count=`` (the paging step takes those)."""
    return [(n, v) for n, v in items if not ((n == "cursor" and v is None) or n == "count")]


def _query(row: Row, found: Found, items: List[Tuple[str, Optional[str]]]) -> Translated:
    """Items left for the server (config.parse refuses the pager's own and bare names)."""
    if not items:
        return Translated()
    return _one(row, found, _query_text(items), "sent with every listing request; never trusted for access")


def _users_parameters(row: Row, found: Found) -> Translated:
    return _query(row, found, _leftover(_fork_items(found.value)))


def _filter_groups(text: str) -> Optional[Tuple[str, ...]]:
    """``displayName eq "a" or displayName eq "b"`` -> ("a", "b"); None for any other filter."""
    names = []
    for part in _OR.split(text):
        match = _NAME_EQ.fullmatch(part)
        if match is None or match.group(1).strip() != match.group(1):
            return None
        names.append(match.group(1))
    return tuple(dict.fromkeys(names))


def _groups_parameters(row: Row, found: Found) -> Translated:
    """The filter becomes the allow-list, never a filter on the server: that would hide the groups that hold
    users' primary gids (a user whose primary group is not listed is dropped). The rest is left for the server."""
    items = _leftover(_fork_items(found.value))
    filters = [v or "" for n, v in items if n.lower() == "filter"]
    allow = _allow_list(row, found, filters)
    query = _query(replace(row, target="groups_query"), found, [(n, v) for n, v in items if n.lower() != "filter"])
    return Translated(allow.lines + query.lines, allow.notes + query.notes)


_NAME_THEM = ": name the POSIX groups whose members may log in (never * unless every group is meant)"


def _allow_list(row: Row, found: Found, filters: List[str]) -> Translated:
    """coreweave_groups from the one displayName filter; POSIX group names only, else left to a person."""
    if not filters:
        return _fail(row, found, "the fork has no groups filter: it wrote every user IAM listed" + _NAME_THEM)
    shown = " and ".join(repr(f) for f in filters)
    groups = _filter_groups(filters[0]) if len(filters) == 1 else None
    if groups is None:
        return _fail(row, found, f"the fork's groups filter {shown} is not displayName eq \"a\" or displayName eq "
                                 "\"b\"; not sent to the server (it would hide the groups of users' primary gids)"
                     + _NAME_THEM)
    bad = [name for name in groups if not POSIX_NAME.fullmatch(name)]
    if bad:
        return _fail(row, found, f"the fork's groups filter {shown} names {', '.join(map(repr, bad))}, not a POSIX "
                                 "group name (a-z 0-9 _ . -, at most 32)" + _NAME_THEM)
    names = ", ".join(groups)
    return Translated((Line("groups", names, (
        f"{found.origin}: {filters[0]}", "matched as POSIX group names (coreweave_group_name_attribute), "
        "not on the server"), origin=found.origin),), (Note(found.origin, f"coreweave_groups = {names}: matched as "
                                                           "POSIX group names (coreweave_group_name_attribute), "
                                                           "not displayName"),))


_PARAMETERS = "scim_users_parameters, scim_groups_parameters"


def _paging(users: Found, groups: Found) -> Translated:
    """Bare ``cursor`` and ``count=`` of both listings: one pagination and page size here."""
    origin = ", ".join(f.origin for f in (users, groups) if f.values)
    per_listing = [_fork_items(f.value) for f in (users, groups)]
    cursors = [any(n == "cursor" and v is None for n, v in items) for items in per_listing]
    counts = sorted({v.strip() for items in per_listing for n, v in items if n == "count" and v is not None})
    lines: List[Line] = []
    notes: List[Note] = []
    if all(cursors):
        lines.append(Line("pagination", "cursor", (f"{origin}: cursor",), origin=origin))
    elif any(cursors):
        message = "the fork pages one listing by cursor, the other by index; coreweave_pagination is both's"
        lines.append(Line("pagination", None, (f"{origin}: {message}",), "cursor", origin))
        notes.append(Note(_PARAMETERS, message, needs_person=True))
    if len(counts) == 1:  # its range is config.parse's to check
        lines.append(Line("page_size", counts[0], (f"{origin}: count={counts[0]}",), origin=origin))
    elif counts:
        message = f"count={' and count='.join(counts)}: this package sends one count to both endpoints"
        lines.append(Line("page_size", None, (f"{origin}: {message}",), counts[0], origin))
        notes.append(Note(_PARAMETERS, message, needs_person=True))
    return Translated(tuple(lines), tuple(notes))


_UID = ("falls back to id, externalId, then the enterprise employeeNumber (the first that parses as an integer); "
        "this package drops a user without this attribute")
_GID = "falls back to the uid (gid = uid); this package drops a user without this attribute"
_HOME = ("falls back to the enterprise homeDirectory; both then use /home/<user>")
_SHELL = ("falls back to the enterprise loginShell; both then use the default shell (this package also for a shell "
          "not in /etc/shells)")
_ALL = FORK_MAPS

# Every fork key, with the maps that read it. Order: the order of the output.
ROWS: Tuple[Row, ...] = (
    Row("scim_base_url", _ALL, _same, "base_url", required=True),
    Row("scim_auth_token", _ALL, _token, always=True),
    Row("scim_users_endpoint", USER_MAPS, _same, "users_endpoint"),
    Row("scim_groups_endpoint", ("group",), _same, "groups_endpoint"),
    Row("scim_groups_parameters", ("group",), _groups_parameters, "groups", always=True),
    Row("scim_users_parameters", USER_MAPS, _users_parameters, "users_query"),
    Row("scim_path_username", USER_MAPS, _attribute, "user_name_attribute", default="userName",
        differs="falls back to userName; this package drops a user without this attribute"),
    Row("scim_path_uid", ("passwd",), _attribute, "uid_attribute", required=True, differs=_UID),
    Row("scim_path_gid", ("passwd",), _attribute, "gid_attribute", required=True, differs=_GID),
    Row("scim_path_home_directory", ("passwd",), _attribute, "home_attribute", required=True, differs=_HOME),
    Row("scim_path_login_shell", ("passwd",), _attribute, "shell_attribute", required=True, differs=_SHELL),
    Row("scim_path_ssh_keys", ("sshkey",), _attribute, "ssh_keys_attribute", required=True),
    Row("scim_path_groupname", ("group",), _attribute, "group_name_attribute", default="displayName",
        differs="falls back to displayName, name, then id; this package drops a group without this attribute"),
    Row("scim_path_gid", ("group",), _attribute, "group_gid_attribute", required=True,
        differs="the same key as the user's gid, in [group]: the group's gid"),
    Row("scim_path_username", ("group",), _member_match, "member_match", default="userName"),
    Row("scim_override_home_directory", ("passwd",), _home_template, "home_directory"),
    Row("scim_default_shell", ("passwd",), _same, "default_shell"),
    *(Row(f"scim_shadow_default_{field}", ("shadow",), _same, f"shadow_default_{field}")
      for field in config_mod.SHADOW_FIELDS),
    Row("scim_timeout", _ALL, _timeout, "timeout"),
    Row("scim_retry_max", _ALL, _retries, "retries"),
    Row("scim_retry_delay", _ALL, _retry_delay),
    Row("scim_max_cursor_pages", _ALL, _same, "max_pages"),
    Row("scim_verify_ssl", _ALL, _verify, "verify_tls"),
)

KNOWN_KEYS = frozenset(row.key for row in ROWS)

_BEHAVIOUR = (
    "What the fork does differently on purpose (docs/migrating-from-the-fork.md): it writes every user IAM lists and",
    "checks nothing (uid 0, duplicate uids, any shell or key), guesses a missing uid from id/externalId and a",
    "missing gid from the uid; this package writes only active members of coreweave_groups, checks every entry and",
    "drops what fails (nsscache-coreweave check lists each drop with its reason).",
)


# --- reading the fork's file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fork:
    """The fork's file: each section's own keys, raw and as nsscache hands them over."""

    raw: Dict[str, Dict[str, str]]  # section -> key -> text as written ("DEFAULT" first)
    values: Dict[str, Dict[str, str]]  # section -> key -> interpolated, quotes stripped
    maps: Tuple[str, ...]
    scim_maps: Tuple[str, ...]

    def get(self, section: str, key: str) -> Optional[Tuple[str, str]]:
        """(value, section it is set in) as map ``section`` reads key."""
        for where in (section, "DEFAULT"):
            if key in self.values.get(where, {}):
                return self.values[where][key], where
        return None


def _fix(value: str) -> str:
    """nsscache's FixValue on text: surrounding quotes stripped."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _read(text: str) -> Tuple[Optional[_Fork], Tuple[Note, ...]]:
    """The fork's file, or why it is not one (no value is ever quoted: one may be the token)."""
    raw = configparser.ConfigParser(interpolation=None, default_section=_NO_DEFAULT_SECTION)
    parser = configparser.ConfigParser()  # as nsscache reads it
    try:
        raw.read_string(text)
        parser.read_string(text)
        sections = ["DEFAULT"] + [s for s in raw.sections() if s != "DEFAULT"]
        values = {s: {k: _fix(parser.get(s, k)) for k in raw[s]} for s in sections if raw.has_section(s)}
    except configparser.Error as e:
        where = " ".join(f"{name} {getattr(e, name)!r}" for name in ("section", "option") if hasattr(e, name))
        return None, (Note("", f"not readable as nsscache reads it: {type(e).__name__} {where}".rstrip()),)
    values.setdefault("DEFAULT", {})
    if "source" not in values["DEFAULT"] or "maps" not in values["DEFAULT"]:
        return None, (Note("", "not an nsscache configuration: [DEFAULT] needs source and maps"),)
    maps = tuple(m.strip() for m in values["DEFAULT"]["maps"].split(",") if m.strip())
    scim_maps = tuple(m for m in maps if (values.get(m, {}).get("source") or values["DEFAULT"]["source"]) == "scim")
    if not scim_maps:
        return None, (Note("", "not a configuration of the fork's scim source: no map uses source = scim"),)
    fork = _Fork({s: dict(raw[s]) for s in values}, values, maps, scim_maps)
    return fork, ()


def _found(fork: _Fork, row: Row) -> Found:
    """Each map of the row that uses the fork: its value of the key."""
    seen = [fork.get(m, row.key) for m in row.maps if m in fork.scim_maps]
    hits = [s for s in seen if s is not None]
    return Found(row.key, tuple(dict.fromkeys(v for v, _ in hits)), tuple(dict.fromkeys(w for _, w in hits)),
                 read=bool(seen))


def _translate(fork: _Fork, row: Row) -> Translated:
    """The row's translation; a disagreement between maps, or a missing required key, needs a person."""
    found = _found(fork, row)
    if not found.read and not row.always:
        return Translated()
    if len(found.values) > 1:
        return _fail(row, found, "the maps set different values (this package lists once for all maps): "
                                 "choose one")
    if not found.values and row.default is not None:
        found = replace(found, values=(row.default,))
    elif not found.values and row.required:
        return _fail(row, found, f"unset, which fails the fork's {'/'.join(row.maps)} map: set it")
    elif not found.values and not row.always:
        return Translated()
    return row.translate(row, found)


def _unread_keys(fork: _Fork) -> Tuple[Note, ...]:
    """scim_* keys no row reads where they are: unknown ones need a person, misplaced ones are noted."""
    notes = []
    for section, keys in fork.raw.items():
        for key in (k for k in keys if k.startswith("scim_")):
            readers = [r for r in ROWS if r.key == key and (section == "DEFAULT" or section in r.maps)]
            if key not in KNOWN_KEYS:
                notes.append(Note(key, f"in [{section}]: not a key of the fork's scim source as this converter "
                                       "knows it (not translated)", needs_person=True))
            elif not readers or (section != "DEFAULT" and section not in fork.scim_maps):
                notes.append(Note(key, f"in [{section}]: the fork does not read it there (dropped)"))
    return tuple(notes)


# --- writing the result -----------------------------------------------------------------------------------------


def _escaped(value: str) -> str:
    """As ConfigParser needs it: a literal % doubled (%u -> %%u), continuation lines indented."""
    return value.replace("%", "%%").replace("\n", "\n    ")


def _line_text(line: Line) -> List[str]:
    text = [w for c in line.comments for w in textwrap.wrap(c, 110, initial_indent="# ", subsequent_indent="#   ",
                                                            break_long_words=False, break_on_hyphens=False)]
    if line.key and line.value is not None:
        text.append(f"coreweave_{line.key} = {_escaped(line.value)}".rstrip())
    elif line.key:
        text.append(f"# coreweave_{line.key} = {_escaped(line.shown)}".rstrip())
    return text


def _own_keys(fork: _Fork, section: str) -> List[str]:
    """nsscache's own keys of a section as written; ``source = scim`` becomes coreweave."""
    text = []
    for key, value in fork.raw[section].items():
        if key.startswith("scim_"):
            continue
        if key == "source" and fork.values[section][key] == "scim":
            value = "coreweave"
        text.append(f"{key} = {value.replace(chr(10), chr(10) + '    ')}".rstrip())
    return text


def _render(fork: _Fork, lines: List[Line]) -> str:
    out = ["# nsscache.conf for source = coreweave, converted from a configuration of CoreWeave's nsscache fork",
           "# (source = scim) by nsscache-coreweave convert-config; see docs/migrating-from-the-fork.md.", "",
           "[DEFAULT]", *_own_keys(fork, "DEFAULT"), "",
           "# --- translated from the fork's scim_* keys ---", *(f"# {c}" for c in _BEHAVIOUR)]
    for line in lines:
        out += ["", *_line_text(line)]
    for section in fork.raw:
        own = _own_keys(fork, section) if section != "DEFAULT" else []
        if own:
            out += ["", f"[{section}]", *own]
    return "\n".join(out) + "\n"


# --- the translation as every run will read it -------------------------------------------------------------------

_PREFIX = "coreweave_"
# Neither is ever part of the output: a token for config.parse to find (the real one is the operator's to place),
# and a shell list so that the check does not read the converting machine's /etc/shells.
_CHECK_ENVIRON = {config_mod.TOKEN_ENV_VARS[0]: "convert-config-check"}
_CHECK_SHELLS = "/bin/sh"


def _nsscache_value(text: str) -> object:
    """nsscache's FixValue: quotes stripped, then an int, else a float, else the text."""
    text = _fix(text)
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def _refused(lines: List[Line]) -> Tuple[ConfigProblem, ...]:
    """What config.parse refuses in the lines set, read back from their text as nsscache reads [DEFAULT]."""
    parser = configparser.ConfigParser()
    parser.read_string("[DEFAULT]\n" + "\n".join(t for line in lines for t in _line_text(line)) + "\n")
    options = {key[len(_PREFIX):]: _nsscache_value(value) for key, value in parser.defaults().items()
               if key.startswith(_PREFIX)}
    options.setdefault("allowed_shells", _CHECK_SHELLS)
    try:
        config_mod.parse(options, _CHECK_ENVIRON)
    except ConfigError as e:
        return e.problems
    return ()


def _checked(lines: List[Line]) -> Translated:
    """The lines with each one config.parse refuses commented out under its message, and a note for a person.
    A key already left commented is already a person's (its problem is that it is unset)."""
    problems = _refused(lines)
    left = {_PREFIX + line.key for line in lines if line.key and line.value is None}
    notes = [Note(problem.key, problem.message, needs_person=True) for problem in problems
             if problem.key not in left and not any(_PREFIX + line.key == problem.key for line in lines)]
    checked = []
    for line in lines:
        refused = [p.message for p in problems if line.key and line.value is not None and p.key == _PREFIX + line.key]
        if refused:
            comments = line.comments + tuple(f"this package refuses it: {message}" for message in refused)
            line = replace(line, value=None, comments=comments, shown=str(line.value))
            notes += [Note(line.origin or _PREFIX + line.key, message, needs_person=True) for message in refused]
        checked.append(line)
    return Translated(tuple(checked), tuple(notes))


def convert(text: str) -> Conversion:
    """The configuration for source = coreweave equivalent to the fork's ``text``."""
    fork, notes = _read(text)
    if fork is None:
        return Conversion("", notes, EXIT_NOT_CONVERTED)
    lines: List[Line] = []
    found_notes: List[Note] = []
    other = [m for m in fork.scim_maps if m not in FORK_MAPS]
    if other:
        found_notes.append(Note("", f"map(s) {', '.join(other)} use source = scim, which this package does not "
                                    "serve", needs_person=True))
    parameters = {row.key: _found(fork, row) for row in ROWS if row.key.endswith("_parameters")}
    for translated in [_translate(fork, row) for row in ROWS] + [
            _paging(parameters["scim_users_parameters"], parameters["scim_groups_parameters"])]:
        lines += translated.lines
        found_notes += translated.notes
    found_notes += _unread_keys(fork)
    checked = _checked(lines)
    lines, found_notes = list(checked.lines), found_notes + list(checked.notes)
    status = EXIT_NEEDS_PERSON if any(n.needs_person for n in found_notes) else EXIT_OK
    return Conversion(_render(fork, lines), tuple(found_notes), status)
