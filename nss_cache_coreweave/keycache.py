"""The keys command's lookup: a user's SSH keys from the caches nsscache writes.

``authorized_keys(user, settings, fp)`` answers for one exact name, failing closed
(KeysError) on anything it cannot trust; keys.py is the command line around it.

* Lookups are O(log n): a binary search in the sorted, fixed-width name indexes
  nsscache writes (``sshkey.cache.ixname``, ``passwd.cache.ixname``: lines of
  ``name\\0offset\\0`` + NUL padding), whose offsets are checked against the data
  file. An index that is missing, older than its data file (as libnss-cache ignores
  it), malformed, or whose offset does not point at the name's line (offsets count
  characters; a non-ASCII line before it shifts them) is not trusted: the data file
  is scanned instead.
* One run: keys are read only from an sshkey.cache whose first line names the same
  nsscache run as passwd.cache's (the run marker, see marker.py), both read from the
  same two open files.
* A key line is checked without ``cryptography``: printable ASCII, a type of KEY_TYPES,
  base64 that decodes to that same type. Fingerprints are OpenSSH's (``SHA256:…``, ``MD5:…``).

KEY_TYPES, the key types sshkey.cache may hold, is defined here once: sshkeys.py lets a
key in only with one of them (and the configuration names their families), this module
reads back only those.

Start-up cost matters (sshd runs the command on every authentication attempt): standard
library only, and only ``os``, ``time``, ``binascii`` and ``marker``; with a fingerprint the
interpreter's built-in ``_sha256``/``_sha2`` or ``_md5`` (``hashlib`` loads OpenSSL); ``ast``
only for a key that Python wrote with backslash escapes. (The table is not a module of its
own, nor a MappingProxyType: each import on this path costs about 0.1 ms at every login.)
"""

import binascii
import os
import time

from . import marker

__all__ = [
    "KEY_TYPES",
    "KeysError",
    "CacheUnreadable",
    "MalformedEntry",
    "StaleCache",
    "NotOneRun",
    "UsageError",
    "Settings",
    "Lookup",
    "authorized_keys",
    "find_line",
    "fingerprint",
    "parse_keys",
    "parse_timestamp",
]

# OpenSSH key type -> the family name used in configuration (coreweave_ssh_key_types).
# sshkeys.py lets a key into sshkey.cache only with one of these types. Do not mutate.
KEY_TYPES: "dict[str, str]" = {
    "ssh-ed25519": "ed25519",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
    "sk-ssh-ed25519@openssh.com": "sk-ed25519",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa",
    "ssh-rsa": "rsa",
}

DEFAULT_FILES_DIR = "/etc"
DEFAULT_SUFFIX = "cache"
DEFAULT_TIMESTAMP_DIR = "/var/lib/nsscache"
DEFAULT_SYSTEM_PASSWD = "/etc/passwd"
DEFAULT_MIN_UID = 1000
DEFAULT_SETTLE = 10  # seconds: longer than nsscache takes to write the maps after passwd
SETTLE_POLL = 0.1
TIMESTAMP_NAME = "timestamp-sshkey-update"
MAX_NAME = 256
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@$")
_BASE64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_CHUNK = 8192
MAX_LINE = 1 << 20  # an sshkey line longer than 1 MiB is malformed


class KeysError(Exception):
    """A reason to print no key and exit 1, fit for one stderr line."""


class CacheUnreadable(KeysError, OSError):
    """A cache, index or timestamp file could not be read."""


class MalformedEntry(KeysError, ValueError):
    """The user's line in a cache is not what nsscache writes."""


class StaleCache(KeysError):
    """--max-age is set and the last successful sshkey update is too old (or unknown)."""


class NotOneRun(KeysError):
    """passwd.cache and sshkey.cache do not name the same nsscache run (or one names none)."""


class UsageError(KeysError, ValueError):
    """Bad command line (exit 2)."""


class Settings:
    """Where the caches are and the rules; keys.read_settings() builds them from the command line.
    (Not a dataclass: ``dataclasses`` costs milliseconds to import.)"""

    __slots__ = ("sshkey_cache", "passwd_cache", "system_passwd", "timestamp_dir", "min_uid", "max_age", "settle")

    def __init__(
        self,
        sshkey_cache: str = DEFAULT_FILES_DIR + "/sshkey." + DEFAULT_SUFFIX,
        passwd_cache: str = DEFAULT_FILES_DIR + "/passwd." + DEFAULT_SUFFIX,
        system_passwd: str = DEFAULT_SYSTEM_PASSWD,
        timestamp_dir: str = DEFAULT_TIMESTAMP_DIR,
        min_uid: int = DEFAULT_MIN_UID,
        max_age: "int | None" = None,
        settle: float = DEFAULT_SETTLE,
    ) -> None:
        self.sshkey_cache = sshkey_cache
        self.passwd_cache = passwd_cache
        self.system_passwd = system_passwd
        self.timestamp_dir = timestamp_dir
        self.min_uid = min_uid
        self.max_age = max_age
        self.settle = settle

    def __repr__(self) -> str:
        return "Settings(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


class Lookup:
    """The answer for one user: keys to print, else the refusal reason. ``method`` says how the
    sshkey line was found: "index", "scan" (index missing, stale or inconsistent) or ""."""

    __slots__ = ("keys", "refusal", "method")

    def __init__(self, keys=(), refusal: str = "", method: str = "") -> None:
        self.keys: "list[str]" = list(keys)
        self.refusal = refusal
        self.method = method

    def __repr__(self) -> str:
        return "Lookup(keys=%r, refusal=%r, method=%r)" % (self.keys, self.refusal, self.method)


# --- the answer -----------------------------------------------------------------------------


def authorized_keys(user: str, settings: Settings, fp: "str | None" = None, now: "int | None" = None,
                    clock=time) -> Lookup:
    """The Lookup for user (exact name) under settings; fp: sshd's %f, or None for every key.

    Keys are read only from an sshkey.cache written by the same nsscache run as
    passwd.cache (see _open_one_run). Raises KeysError (fail closed) for unreadable
    caches, caches of different runs, a malformed entry, or a stale cache.
    """
    if fp is not None:
        _check_fingerprint_form(fp)
    if not _valid_name(user):
        return Lookup(refusal="not a valid user name")
    if user == marker.NAME:
        return Lookup(refusal="the run marker of the caches, not an account")
    if settings.max_age is not None:
        _check_age(settings, settings.max_age, _now() if now is None else now)
    if _in_file(settings.system_passwd, user):
        return Lookup(refusal="a local account in %s" % settings.system_passwd)
    passwd_fd, sshkey_fd = _open_one_run(settings, clock)
    try:
        return _lookup(user, settings, passwd_fd, sshkey_fd, fp)
    finally:
        os.close(passwd_fd)
        os.close(sshkey_fd)


def _check_fingerprint_form(fp: str) -> None:
    hash_name = fp.split(":", 1)[0]
    if hash_name not in ("SHA256", "MD5") or ":" not in fp:
        raise UsageError("fingerprint %r is neither SHA256:… nor MD5:…" % fp[:100])


def _valid_name(name: str) -> bool:
    return (
        0 < len(name) <= MAX_NAME
        and not name.startswith("-")
        and all(c in _NAME_CHARS for c in name)
    )


def _lookup(user: str, settings: Settings, passwd_fd: int, sshkey_fd: int, fp: "str | None") -> Lookup:
    """The answer from the two open caches of one run."""
    refusal = _account_refusal(user, settings, passwd_fd)
    if refusal:
        return Lookup(refusal=refusal)
    line, method = _find(sshkey_fd, settings.sshkey_cache, user, settings.sshkey_cache + ".ixname")
    if line is None:
        return Lookup(refusal="no entry in %s" % settings.sshkey_cache, method=method)
    keys = _keys_of(line, user, settings.sshkey_cache)
    if fp is not None:
        keys = [k for k in keys if fingerprint(k, fp.split(":", 1)[0]) == fp]
        if not keys:
            return Lookup(refusal="no key with fingerprint %s" % fp, method=method)
    elif not keys:
        return Lookup(refusal="no keys in %s" % settings.sshkey_cache, method=method)
    return Lookup(keys=keys, method=method)


def _account_refusal(user: str, settings: Settings, passwd_fd: int) -> str:
    """Why user's passwd.cache entry gets no key (absent, uid too low), or "" when it does."""
    line, _ = _find(passwd_fd, settings.passwd_cache, user, settings.passwd_cache + ".ixname")
    if line is None:
        return "not in %s" % settings.passwd_cache
    fields = line.split(b":")
    if len(fields) != 7 or not fields[2].isdigit():
        raise MalformedEntry("%s: malformed passwd entry" % settings.passwd_cache)
    uid = int(fields[2])
    if uid < settings.min_uid or uid == 0:
        return "uid %d is below the minimum %d" % (uid, settings.min_uid)
    return ""


def _keys_of(line: bytes, user: str, path: str) -> "list[str]":
    """The keys of user's sshkey.cache line. Raises MalformedEntry."""
    try:
        value = line.decode("utf-8")[len(user) + 1:]
    except UnicodeDecodeError:
        raise MalformedEntry("%s: entry is not UTF-8" % path) from None
    try:
        return parse_keys(value)
    except MalformedEntry as e:
        raise MalformedEntry("%s: malformed entry: %s" % (path, e)) from None


def _in_file(path: str, name: str) -> bool:
    """Whether a passwd-format file has a line for name (exact match)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e
    prefix = name.encode("utf-8") + b":"
    return data.startswith(prefix) or (b"\n" + prefix) in data


def _now() -> int:
    return int(time.time())


# --- one run --------------------------------------------------------------------------------


def _open_one_run(settings: Settings, clock) -> "tuple[int, int]":
    """(passwd fd, sshkey fd), open on caches whose run markers name the same run.

    nsscache writes the maps one after another, so for a moment after passwd.cache is
    renamed into place the sshkey cache is still the previous run's: a disagreement
    younger than settings.settle seconds (by the newer file's mtime, never later than
    now) is waited out, at most settle seconds. Older, it is a failed or foreign write:
    NotOneRun, and no key for anyone.
    """
    give_up = None
    while True:
        fds, runs, newest = _open_both(settings)
        if runs[0] == runs[1] and runs[0] is not None:
            return fds
        for fd in fds:
            os.close(fd)
        now = clock.time()
        if give_up is None:
            give_up = min(newest, now) + settings.settle
        if now >= give_up:
            raise NotOneRun(_disagreement(settings, runs))
        clock.sleep(SETTLE_POLL)


def _open_both(settings: Settings) -> "tuple[tuple[int, int], tuple[str | None, str | None], float]":
    """((passwd fd, sshkey fd), the runs their markers name, the newer mtime)."""
    paths, fds = (settings.passwd_cache, settings.sshkey_cache), []
    try:
        for path in paths:
            fds.append(_open(path))
        runs = (_run_of(fds[0], paths[0]), _run_of(fds[1], paths[1]))
        newest = max(os.fstat(fd).st_mtime for fd in fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return (fds[0], fds[1]), runs, newest


def _disagreement(settings: Settings, runs: "tuple[str | None, str | None]") -> str:
    for path, run in zip((settings.passwd_cache, settings.sshkey_cache), runs):
        if run is None:
            return ("%s has no run marker (%s:*<run> on its first line): written by another source or an "
                    "earlier version; run nsscache update" % (path, marker.NAME))
    return ("%s is from run %s, %s from run %s: not one nsscache run, so no key is served until a run "
            "writes both" % (settings.sshkey_cache, runs[1], settings.passwd_cache, runs[0]))


def _run_of(fd: int, path: str) -> "str | None":
    """The run named by the marker, the first line of an open cache (see marker.py), or None."""
    try:
        head = _pread_all(fd, 256, 0)
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e
    return marker.run_of(head.split(b"\n", 1)[0])


# --- finding a user's line ------------------------------------------------------------------


def find_line(data_path: str, name: str, index_path: "str | None" = None) -> "tuple[bytes | None, str]":
    """(line, method) for the line of data_path that starts with ``name:`` (name: str), or
    (None, method). method is "index" when the name index answered, "scan" otherwise.

    Raises CacheUnreadable when data_path cannot be read.
    """
    fd = _open(data_path)
    try:
        return _find(fd, data_path, name, index_path)
    finally:
        os.close(fd)


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e


def _find(fd: int, data_path: str, name: str, index_path: "str | None") -> "tuple[bytes | None, str]":
    """find_line on an open data file (so that several lookups read one version of it)."""
    prefix = name.encode("utf-8") + b":"
    try:
        st = os.fstat(fd)
        if index_path is not None:
            found = _find_indexed(fd, st, index_path, prefix)
            if found is not None:
                return found
        return _scan(fd, prefix), "scan"
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (data_path, e.strerror or e)) from e


def _find_indexed(fd: int, st: os.stat_result, index_path: str, prefix: bytes) -> "tuple[bytes | None, str] | None":
    """(line or None, "index") when the index answers for prefix, else None (use a scan)."""
    try:
        ifd = os.open(index_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        ist = os.fstat(ifd)
        # libnss-cache ignores an index older than its data file; so do we.
        if ist.st_mtime_ns < st.st_mtime_ns:
            return None
        offset = _index_search(ifd, ist.st_size, prefix[:-1])
        if offset == -1:
            return None, "index"
        line = _line_at(fd, st.st_size, offset, prefix) if offset is not None else None
        return (line, "index") if line is not None else None
    finally:
        os.close(ifd)


def _index_search(ifd: int, index_size: int, name: bytes) -> "int | None":
    """Binary search of nsscache's name index for name (bytes).

    Returns the offset (int) recorded for name, -1 when the index says name is absent,
    or None when the index is malformed (not fixed-width, unsorted where probed, bad offset).
    """
    head = _pread_all(ifd, min(index_size, _CHUNK), 0)
    width = _record_width(head, index_size)
    if width is None:
        return None
    lo, hi = 0, index_size // width
    while lo < hi:
        mid = (lo + hi) // 2
        record = _record(ifd, head, mid, width)
        key = _record_name(record, width)
        if key is None:
            return None
        if key == name:
            return _record_offset(record, len(key))
        if key < name:
            lo = mid + 1
        else:
            hi = mid
    return -1


def _record_width(head: bytes, index_size: int) -> "int | None":
    """The record width of an index of index_size bytes starting with head; None when it is
    not fixed-width (or empty)."""
    end = head.find(b"\n")
    if end < 2 or index_size % (end + 1):
        return None
    return end + 1


def _record(ifd: int, head: bytes, i: int, width: int) -> bytes:
    """Record i of the index: from head when head holds it (no read), else read."""
    start = i * width
    if start + width <= len(head):
        return head[start:start + width]
    return _pread_all(ifd, width, start)


def _record_name(record: bytes, width: int) -> "bytes | None":
    """The name of a ``name\\0offset\\0`` + padding + newline record, or None when malformed."""
    if len(record) != width or record[-1:] != b"\n":
        return None
    nul = record.find(b"\0")
    return record[:nul] if nul > 0 else None


def _record_offset(record: bytes, nul: int) -> "int | None":
    """The offset of a record whose name ends at nul, or None when malformed."""
    second = record.find(b"\0", nul + 1)
    digits = record[nul + 1:second]
    if second < 0 or not digits.isdigit() or record[second:-1].strip(b"\0"):
        return None
    return int(digits)


def _line_at(fd: int, data_size: int, offset: int, prefix: bytes) -> "bytes | None":
    """The line starting at offset if it is a whole line starting with prefix, else None."""
    if offset >= data_size:
        return None
    if offset:
        buf = _pread_all(fd, min(_CHUNK, data_size - offset + 1), offset - 1)
        if buf[:1] != b"\n":
            return None
        buf = buf[1:]
    else:
        buf = _pread_all(fd, min(_CHUNK, data_size), 0)
    if not buf.startswith(prefix):
        return None
    available = data_size - offset
    while b"\n" not in buf and len(buf) < available:
        if len(buf) >= MAX_LINE:
            raise MalformedEntry("line longer than %d bytes" % MAX_LINE)
        more = _pread_all(fd, _CHUNK, offset + len(buf))
        if not more:
            break
        buf += more
    end = buf.find(b"\n")
    return buf if end < 0 else buf[:end]  # the last line may lack its newline


def _scan(fd: int, prefix: bytes) -> "bytes | None":
    """Linear search: the first line starting with prefix, else None."""
    with open(fd, "rb", closefd=False) as f:
        data = f.read()
    if data.startswith(prefix):
        pos = 0
    else:
        pos = data.find(b"\n" + prefix)
        if pos < 0:
            return None
        pos += 1
    end = data.find(b"\n", pos)
    return data[pos:] if end < 0 else data[pos:end]


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Up to size bytes at offset (short only at end of file)."""
    parts = []
    while size > 0:
        chunk = os.pread(fd, size, offset)
        if not chunk:
            break
        parts.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


# --- parsing an sshkey line -----------------------------------------------------------------


def parse_keys(value: str) -> "list[str]":
    """The key lines in the value part of an sshkey.cache line (after ``name:``).

    nsscache writes a str key raw (``name:ssh-ed25519 AAAA…``) and a list as its Python
    repr (``name:['k1', 'k2']``); ``name:`` and ``name:[]`` have no key. Each key is checked
    (see _key_blob); any bad key makes the whole entry malformed.

    >>> parse_keys("['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjGRY4rgjHEIWvmEWEtTptozl8p4osxNIQxXFU93R1A a@b']")
    ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjGRY4rgjHEIWvmEWEtTptozl8p4osxNIQxXFU93R1A a@b']
    """
    if value.startswith("["):
        keys = _parse_list_repr(value)
    elif value:
        keys = [value]
    else:
        keys = []
    for key in keys:
        _key_blob(key)
    return keys


def _parse_list_repr(value: str) -> "list[str]":
    """Python's repr of a list of str, as nsscache writes it (``['k1', 'k2']``), without eval."""
    if "\\" in value:
        # Only keys with unusual characters get escapes: let the literal parser decide.
        return _literal_list(value)
    if value[-1:] != "]":
        raise MalformedEntry("list does not end with ]")
    keys: "list[str]" = []
    if value == "[]":
        return keys
    pos = 1
    while True:
        key, pos = _quoted_at(value, pos)
        keys.append(key)
        if pos == len(value) - 1:  # the closing ]
            return keys
        if value[pos:pos + 2] != ", ":
            raise MalformedEntry("expected ', ' or ']' at character %d" % pos)
        pos += 2


def _quoted_at(value: str, pos: int) -> "tuple[str, int]":
    """(the string quoted at pos, the position after its closing quote)."""
    quote = value[pos:pos + 1]
    if quote not in ("'", '"'):
        raise MalformedEntry("expected a quoted key at character %d" % pos)
    close = value.find(quote, pos + 1)
    if close < 0:
        raise MalformedEntry("unterminated string")
    return value[pos + 1:close], close + 1


def _literal_list(value: str) -> "list[str]":
    """A list of str written with backslash escapes, by Python's literal parser (imported only here)."""
    import ast

    try:
        result = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise MalformedEntry("not a list of strings: %s" % e.__class__.__name__) from None
    if not isinstance(result, list) or not all(isinstance(k, str) for k in result):
        raise MalformedEntry("not a list of strings")
    return result


def _skip_options(line: str) -> int:
    """Index just past an authorized_keys options field (quoted strings may hold spaces)."""
    quoted = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and quoted:
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            return i
        i += 1
    raise MalformedEntry("options without a key")


def _key_blob(line: str) -> "tuple[str, bytes]":
    """(type, decoded blob) of one key line ``[options ]type base64[ comment]``, checked:
    printable ASCII, allowed type, base64 that decodes to that same type."""
    if not line or not line.isascii() or not line.isprintable() or line != line.strip():
        raise MalformedEntry("a key is empty or not printable ASCII")
    fields = line.split(" ")
    if fields[0] not in KEY_TYPES:
        rest = line[_skip_options(line):].lstrip(" ")
        fields = rest.split(" ")
        if fields[0] not in KEY_TYPES:
            raise MalformedEntry("a key has an unknown type")
    if len(fields) < 2:
        raise MalformedEntry("a %s key has no body" % fields[0])
    key_type = fields[0]
    blob = _base64(key_type, fields[1])
    wire_type = key_type.encode("ascii")
    if not _is_string_at(blob, 0, wire_type):
        raise MalformedEntry("a %s key does not decode as %s" % (key_type, key_type))
    at = key_type.find("nistp")  # ECDSA: the curve is named again after the type
    if at >= 0 and not _is_string_at(blob, 4 + len(wire_type), wire_type[at:at + 8]):
        raise MalformedEntry("a %s key names another curve" % key_type)
    return key_type, blob


def _base64(key_type: str, body: str) -> bytes:
    """The decoded body of a key_type key; MalformedEntry when it is not base64."""
    try:
        return binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
    except (binascii.Error, TypeError):
        pass
    try:  # Python < 3.11 has no strict_mode
        if body.strip(_BASE64_CHARS):
            raise binascii.Error("non-base64 character")
        return binascii.a2b_base64(body.encode("ascii"))
    except binascii.Error:
        raise MalformedEntry("a %s key is not base64" % key_type) from None


def _is_string_at(blob: bytes, offset: int, value: bytes) -> bool:
    """Whether ``blob`` holds the SSH wire string ``value`` at ``offset``."""
    end = offset + 4 + len(value)
    return blob[offset:offset + 4] == len(value).to_bytes(4, "big") and blob[offset + 4:end] == value


# --- fingerprints ---------------------------------------------------------------------------


def fingerprint(key_line: str, hash_name: str = "SHA256") -> str:
    """OpenSSH's fingerprint of a key line, as sshd's %f gives it: ``SHA256:<unpadded base64>``
    or ``MD5:aa:bb:…``."""
    blob = _key_blob(key_line)[1]
    if hash_name == "SHA256":
        return "SHA256:" + binascii.b2a_base64(_sha256(blob), newline=False).decode("ascii").rstrip("=")
    if hash_name == "MD5":
        return "MD5:" + ":".join("%02x" % b for b in _md5(blob))
    raise UsageError("unsupported fingerprint hash %r" % hash_name)


def _sha256(data: bytes) -> bytes:
    try:
        from _sha256 import sha256  # CPython <= 3.11: no OpenSSL load (hashlib costs ~3 ms)
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data).digest()


def _md5(data: bytes) -> bytes:
    try:
        from _md5 import md5
    except ImportError:
        from hashlib import md5
    return md5(data).digest()


# --- staleness ------------------------------------------------------------------------------


def parse_timestamp(text: str) -> int:
    """Seconds since the epoch of nsscache's ``YYYY-MM-DDThh:mm:ssZ`` (UTC) timestamp.

    >>> parse_timestamp("1970-01-02T00:00:01Z\\n")
    86401
    """
    s = text.strip()
    if len(s) != 20 or s[4] != "-" or s[7] != "-" or s[10] != "T" or s[13] != ":" or s[16] != ":" or s[19] != "Z":
        raise StaleCache("unparseable timestamp %r" % s[:40])
    digits = s[0:4] + s[5:7] + s[8:10] + s[11:13] + s[14:16] + s[17:19]
    if not (digits.isascii() and digits.isdigit()):
        raise StaleCache("unparseable timestamp %r" % s)
    y, m, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
    hh, mm, ss = int(s[11:13]), int(s[14:16]), int(s[17:19])
    if not (1 <= m <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise StaleCache("unparseable timestamp %r" % s)
    # Days from civil (Howard Hinnant's algorithm), proleptic Gregorian.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return days * 86400 + hh * 3600 + mm * 60 + ss


def _check_age(settings: Settings, max_age: int, now: int) -> None:
    """StaleCache unless nsscache's last successful sshkey update is at most max_age seconds old."""
    path = os.path.join(settings.timestamp_dir, TIMESTAMP_NAME)
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace")
    except OSError as e:
        raise StaleCache("no last update time (%s: %s)" % (path, e.strerror or e)) from None
    age = now - parse_timestamp(text)
    if age > max_age:
        raise StaleCache(
            "sshkey cache is stale: last successful update %s, %d s ago, more than --max-age %d"
            % (text.strip(), age, max_age)
        )
