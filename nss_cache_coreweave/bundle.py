"""The bundle: what ``publish`` writes and a node in mirror mode reads
(docs/many-nodes.md). Pure: no HTTP, no files; publish.py writes it,
mirror.py fetches it.

    manifest.json, manifest.json.sig           the latest generation
    generations/<N>/manifest.json[.sig]        every kept generation, immutable
    generations/<N>/passwd, group, shadow, sshkey

The maps are nsscache's files format, written by nsscache's own files cache
(run marker first, as in every cache), so any consumer of nsscache's caches
can read them. ``manifest.json`` names the generation, when it was made, the
run of the marker lines, the counts, and the path, size and sha256 of every
map; its SSHSIG signature (sshsig.py) covers all of it.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from nss_cache.caches import files

from . import marker
from .config import SHADOW_FIELDS, ShadowDefaults
from .errors import BundleError, BundleReason
from .policy import Account, Directory, PosixGroup, valid_name

__all__ = [
    "FORMAT", "MAPS", "MANIFEST", "SIGNATURE", "FileEntry", "Manifest", "Published", "generation_dir",
    "manifest_bytes", "parse_manifest", "map_bytes", "sha256", "read_bundle",
]

FORMAT = "nsscache-coreweave-bundle/1"
MAPS = ("passwd", "group", "shadow", "sshkey")
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
MAX_GENERATION = 2**53  # exact in every JSON reader
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_RUN = re.compile(r"[0-9A-Za-z_.-]{1,64}", re.ASCII)
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\n]")
# nsscache's files cache writes each map's lines; calling its own writers keeps the format its own.
_WRITERS = {
    "passwd": files.FilesPasswdMapHandler._WriteData,
    "group": files.FilesGroupMapHandler._WriteData,
    "shadow": files.FilesShadowMapHandler._WriteData,
    "sshkey": files.FilesSshkeyMapHandler._WriteData,
}


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle's root: generations/<N>/<map>
    sha256: str  # hex
    bytes: int


@dataclass(frozen=True)
class Manifest:
    generation: int  # grows with every publish
    created: float  # time.time() of the publish
    run: str  # the run id on the first line of every map
    users: int
    groups: int
    keys: int
    files: Mapping[str, FileEntry]  # map name -> its file


@dataclass(frozen=True)
class Published:
    """A bundle's maps as the publisher decided them."""

    directory: Directory
    shadow: ShadowDefaults


def generation_dir(generation: int) -> str:
    return f"generations/{generation}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: Manifest) -> bytes:
    """The manifest as published: sorted keys, one field per line."""
    document = {
        "format": FORMAT, "generation": manifest.generation, "created": manifest.created, "run": manifest.run,
        "counts": {"users": manifest.users, "groups": manifest.groups, "keys": manifest.keys},
        "files": {name: {"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for name, f in manifest.files.items()},
    }
    return (json.dumps(document, sort_keys=True, indent=1) + "\n").encode("ascii")


def parse_manifest(data: bytes, where: str = "bundle " + MANIFEST) -> Manifest:
    """A manifest, checked field by field. :raises BundleError: MALFORMED"""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BundleError(where, BundleReason.MALFORMED, detail="not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BundleError(where, BundleReason.MALFORMED, detail=f"not a manifest of format {FORMAT}")
    generation = _count(document.get("generation"), where, "generation", low=1)
    counts = document.get("counts")
    if not isinstance(counts, dict):
        raise BundleError(where, BundleReason.MALFORMED, detail="'counts' is not an object")
    return Manifest(
        generation=generation,
        created=_created(document.get("created"), where),
        run=_run(document.get("run"), where),
        users=_count(counts.get("users"), where, "counts.users"),
        groups=_count(counts.get("groups"), where, "counts.groups"),
        keys=_count(counts.get("keys"), where, "counts.keys"),
        files=_files(document.get("files"), generation, where),
    )


def _count(value: object, where: str, name: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_GENERATION:
        raise BundleError(where, BundleReason.MALFORMED, detail=f"{name} {value!r} is not an integer >= {low}")
    return value


def _created(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 2**40:
        raise BundleError(where, BundleReason.MALFORMED, detail=f"created {value!r} is not a time")
    return float(value)


def _run(value: object, where: str) -> str:
    if not isinstance(value, str) or not _RUN.fullmatch(value):
        raise BundleError(where, BundleReason.MALFORMED, detail=f"run {value!r} is not a run id")
    return value


def _files(value: object, generation: int, where: str) -> Dict[str, FileEntry]:
    """Exactly the four maps, each in its own generation's directory (never a path of the node's choosing)."""
    if not isinstance(value, dict) or sorted(value) != sorted(MAPS):
        raise BundleError(where, BundleReason.MALFORMED, detail=f"'files' must name exactly {', '.join(MAPS)}")
    found = {}
    for name in MAPS:
        entry = value[name]
        path = f"{generation_dir(generation)}/{name}"
        if not isinstance(entry, dict) or entry.get("path") != path:
            raise BundleError(where, BundleReason.MALFORMED, detail=f"files.{name}.path must be {path!r}")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise BundleError(where, BundleReason.MALFORMED, detail=f"files.{name}.sha256 is not 64 hex digits")
        found[name] = FileEntry(path, digest, _count(entry.get("bytes"), where, f"files.{name}.bytes"))
    return found


def map_bytes(map_name: str, nss_map) -> bytes:
    """An nsscache map as its files cache writes it (without the index files)."""
    out = io.BytesIO()
    write = _WRITERS[map_name]
    for entry in nss_map:
        write(None, out, entry)
    return out.getvalue()


# --- reading the maps back -----------------------------------------------------------------------------------


def read_bundle(manifest: Manifest, texts: Mapping[str, bytes]) -> Published:
    """The Directory and shadow fields of a bundle whose files match
    ``manifest`` (mirror.py checked their sha256). Every line is checked:
    the maps must agree with each other and with the manifest's counts.
    :raises BundleError: MALFORMED"""
    lines = {name: _lines(name, manifest, texts[name]) for name in MAPS}
    for name in ("shadow", "sshkey"):  # a second line must not replace the first unseen
        _unique(name, [row.fields[0] for row in lines[name]])
    shadow = _shadow_fields(lines["shadow"])
    keys = _keys(lines["sshkey"])
    accounts = [_account(row, keys.get(row.fields[0], ())) for row in lines["passwd"]]
    names = {a.name for a in accounts}
    _same_names("shadow", set(shadow), names)
    _same_names("sshkey", set(keys) - names, set())
    groups = [_group(row, names) for row in lines["group"]]
    _unique("passwd", [a.name for a in accounts])
    _unique("group", [g.name for g in groups])
    published = Directory(tuple(sorted(accounts, key=lambda a: a.name)),
                          tuple(sorted(groups, key=lambda g: g.name)), drops=(), missing_groups=())
    _check_counts(manifest, published)
    return Published(published, _one_set(shadow))


class _Row(NamedTuple):  # one per line: a tuple is built 3 times faster than a frozen dataclass
    map_name: str
    number: int  # 1-based line number
    fields: List[str]

    def problem(self, detail: str) -> BundleError:
        return BundleError(f"bundle {self.map_name}", BundleReason.MALFORMED, detail=f"line {self.number}: {detail}")


_FIELDS = {"passwd": 7, "group": 4, "shadow": 9}


def _lines(map_name: str, manifest: Manifest, data: bytes) -> List[_Row]:
    """The entries after the marker line, which must name the manifest's run."""
    where = f"bundle {map_name}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(where, BundleReason.MALFORMED, detail="not UTF-8") from None
    if not text.endswith("\n"):
        raise BundleError(where, BundleReason.MALFORMED, detail="does not end with a newline")
    odd = _UNPRINTABLE.search(text[:-1])  # what policy lets through is printable ASCII: one pass over the file
    if odd is not None:
        number = text.count("\n", 0, odd.start()) + 1
        raise _Row(map_name, number, []).problem("holds a control or non-ASCII character")
    lines = text[:-1].split("\n")
    if marker.run_of(lines[0].encode()) != manifest.run:
        raise BundleError(where, BundleReason.MALFORMED, detail=f"line 1 is not the marker of run {manifest.run}")
    rows, size = [], _FIELDS.get(map_name, 2)
    named_here = map_name in ("passwd", "group")  # shadow and sshkey must name passwd's users (read_bundle)
    for number, line in enumerate(lines[1:], 2):
        fields = line.split(":", 1) if map_name == "sshkey" else line.split(":")
        row = _Row(map_name, number, fields)
        if len(fields) != size or (named_here and not valid_name(fields[0])):
            raise row.problem("not an entry of a valid name and the format's fields")
        rows.append(row)
    return rows


def _account(row: _Row, keys: Tuple[str, ...]) -> Account:
    name, password, uid, gid, gecos, home, shell = row.fields
    if password != "x":
        raise row.problem("the password field must be 'x'")
    return Account(name, _number(row, uid), _number(row, gid), gecos, home, shell, keys)


def _group(row: _Row, accounts: set) -> PosixGroup:
    name, password, gid, members = row.fields
    if password != "x":
        raise row.problem("the password field must be 'x'")
    names = tuple(members.split(",")) if members else ()
    strangers = [m for m in names if m not in accounts]
    if strangers:
        raise row.problem(f"member {strangers[0]!r} has no passwd entry")
    return PosixGroup(name, _number(row, gid), names)


def _shadow_fields(rows: List[_Row]) -> Dict[str, Tuple[Optional[int], ...]]:
    found = {}
    for row in rows:
        if row.fields[1] != "*":
            raise row.problem("the password field must be '*'")
        found[row.fields[0]] = tuple(_number(row, f, 2**31 - 1) if f else None for f in row.fields[2:])
    return found


def _one_set(fields: Dict[str, Tuple[Optional[int], ...]]) -> ShadowDefaults:
    """The publisher writes one set of shadow fields on every line (coreweave_shadow_default_*)."""
    distinct = set(fields.values())
    if len(distinct) > 1:
        raise BundleError("bundle shadow", BundleReason.MALFORMED, detail="the lines carry different shadow fields")
    return ShadowDefaults(**dict(zip(SHADOW_FIELDS, distinct.pop()))) if distinct else ShadowDefaults()


def _keys(rows: List[_Row]) -> Dict[str, Tuple[str, ...]]:
    """name:['key', 'key']: the repr of a list of strings, as nsscache writes it."""
    found = {}
    for row in rows:
        value = _key_list(row.fields[1])
        if not isinstance(value, list) or not value or not all(isinstance(k, str) and k and k.isprintable()
                                                                for k in value):
            raise row.problem("the keys are not a list of strings")
        found[row.fields[0]] = tuple(value)
    return found


def _key_list(text: str):
    """The list a repr of a list of strings stands for, or None. The common form
    (``['k1', 'k2']``, no quote or backslash inside) is split; others are
    read as a Python literal, which is 20 times slower."""
    if text.startswith("['") and text.endswith("']"):
        parts = text[2:-2].split("', '")
        if not any("'" in p or "\\" in p for p in parts):
            return parts
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _number(row: _Row, text: str, high: int = 2**32 - 1) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or int(text) > high:
        raise row.problem(f"{text!r} is not a number up to {high}")
    return int(text)


def _same_names(map_name: str, names: set, expected: set) -> None:
    if names != expected:
        odd = sorted(names ^ expected)[0]
        raise BundleError(f"bundle {map_name}", BundleReason.MALFORMED,
                          detail=f"{odd!r} is not in both passwd and {map_name}")


def _unique(map_name: str, names: List[str]) -> None:
    if len(set(names)) != len(names):
        raise BundleError(f"bundle {map_name}", BundleReason.MALFORMED, detail="a name appears twice")


def _check_counts(manifest: Manifest, published: Directory) -> None:
    found = (len(published.accounts), len(published.groups), sum(len(a.keys) for a in published.accounts))
    if found != (manifest.users, manifest.groups, manifest.keys):
        raise BundleError("bundle " + MANIFEST, BundleReason.MALFORMED,
                          detail=f"counts users/groups/keys {manifest.users}/{manifest.groups}/{manifest.keys}, the "
                                 f"maps hold {found[0]}/{found[1]}/{found[2]}")
