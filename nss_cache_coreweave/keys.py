"""nsscache-coreweave-keys: sshd's AuthorizedKeysCommand for the caches nsscache writes.

    AuthorizedKeysCommand /usr/local/sbin/nsscache-coreweave-keys %u %f
    AuthorizedKeysCommandUser nsscache-keys

``nsscache-coreweave-keys [options] USER [FINGERPRINT]`` prints USER's public keys
from ``sshkey.cache``, one per line, and nothing else:

* only for an exact name found in the nsscache-managed ``passwd.cache`` with a uid
  of at least ``--min-uid`` (default 1000), and not in the local ``/etc/passwd``
  (so an IAM user called ``root`` gets nothing);
* with FINGERPRINT (sshd's ``%f``: ``SHA256:…``, or ``MD5:…`` under
  ``FingerprintHash md5``) only the key with that fingerprint;
* only from an ``sshkey.cache`` that names the same nsscache run as ``passwd.cache``
  on its first line (the run marker, see marker.py): keys are never paired with an
  account list from another run (a removed key kept by a failed write, a name
  given to someone else since). While nsscache is between the two writes the
  disagreement is waited out for up to ``--settle`` seconds;
* with ``--max-age SECONDS``, nothing once nsscache's last successful sshkey update
  (``<timestamp_dir>/timestamp-sshkey-update``) is older than that.

It fails closed: an unreadable cache, caches of different runs (or without a run
marker), a malformed entry for USER, a missing or too old timestamp print no key,
one line on stderr, and exit 1 (sshd ignores the output of a command that exits
non-zero). A refusal (unknown or local user, low uid, no
matching key) prints no key, one line on stderr, and exits 0. Usage errors exit 2.
It never touches the network.

Lookups are O(log n): a binary search in the sorted, fixed-width name indexes
nsscache writes (``sshkey.cache.ixname``, ``passwd.cache.ixname``: lines of
``name\\0offset\\0`` + NUL padding), whose offsets are checked against the data
file. An index that is missing, older than its data file (as libnss-cache ignores
it), malformed, or whose offset does not point at the name's line (offsets count
characters; a non-ASCII line before it shifts them) is not trusted: the data file
is scanned instead.

Start-up cost matters (sshd runs this on every authentication attempt): the module
imports only ``os``, ``sys``, ``time``, ``binascii`` and ``marker`` on the lookup path (plus a SHA-256
or MD5 implementation for FINGERPRINT); ``configparser`` only with ``-c``, ``ast``
only for a key that Python wrote with backslash escapes. Run it through the wrapper
``--install-wrapper`` writes: pip's console-script wrapper imports ``re``. That option and
``--check-path`` check, through sshd_path.py (imported only for them), that sshd may run the
wrapper and that everything it runs and imports is as safe as sshd requires of the wrapper
itself, then try it as the AuthorizedKeysCommandUser.
"""

import binascii
import os
import sys
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
    "fingerprint",
    "find_line",
    "install_wrapper",
    "parse_keys",
    "parse_timestamp",
    "read_settings",
    "sshd_path_problems",
    "wrapper_text",
    "main",
]

PROG = "nsscache-coreweave-keys"

# What sshkeys.py lets into sshkey.cache (OpenSSH names), kept here without importing it
# (it needs cryptography).
KEY_TYPES = frozenset({
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-rsa",
})

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
    """Where the caches are and the rules; built by read_settings()."""

    __slots__ = ("sshkey_cache", "passwd_cache", "system_passwd", "timestamp_dir", "min_uid", "max_age", "settle")

    def __init__(
        self,
        sshkey_cache=DEFAULT_FILES_DIR + "/sshkey." + DEFAULT_SUFFIX,
        passwd_cache=DEFAULT_FILES_DIR + "/passwd." + DEFAULT_SUFFIX,
        system_passwd=DEFAULT_SYSTEM_PASSWD,
        timestamp_dir=DEFAULT_TIMESTAMP_DIR,
        min_uid=DEFAULT_MIN_UID,
        max_age=None,
        settle=DEFAULT_SETTLE,
    ):
        self.sshkey_cache = sshkey_cache
        self.passwd_cache = passwd_cache
        self.system_passwd = system_passwd
        self.timestamp_dir = timestamp_dir
        self.min_uid = min_uid
        self.max_age = max_age
        self.settle = settle

    def __repr__(self):
        return "Settings(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in self.__slots__)

    def __eq__(self, other):
        return isinstance(other, Settings) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


class Lookup:
    """The answer for one user: keys to print, else the refusal reason. ``method`` says how the
    sshkey line was found: "index", "scan" (index missing, stale or inconsistent) or ""."""

    __slots__ = ("keys", "refusal", "method")

    def __init__(self, keys=(), refusal="", method=""):
        self.keys = list(keys)
        self.refusal = refusal
        self.method = method

    def __repr__(self):
        return "Lookup(keys=%r, refusal=%r, method=%r)" % (self.keys, self.refusal, self.method)


# --- finding a user's line ------------------------------------------------------------------


def _pread_all(fd, size, offset):
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


def _index_search(ifd, index_size, name):
    """Binary search of nsscache's name index for name (bytes).

    Returns the offset (int) recorded for name, -1 when the index says name is absent,
    or None when the index is malformed (not fixed-width, unsorted where probed, bad offset).
    """
    if index_size == 0:
        return None
    head = _pread_all(ifd, min(index_size, _CHUNK), 0)
    end = head.find(b"\n")
    if end < 2:
        return None
    width = end + 1
    if index_size % width:
        return None
    lo, hi = 0, index_size // width
    while lo < hi:
        mid = (lo + hi) // 2
        record = head[mid * width:(mid + 1) * width] if (mid + 1) * width <= len(head) else b""
        if not record:
            record = _pread_all(ifd, width, mid * width)
        if len(record) != width or record[-1:] != b"\n":
            return None
        nul = record.find(b"\0")
        if nul <= 0:
            return None
        key = record[:nul]
        if key == name:
            second = record.find(b"\0", nul + 1)
            digits = record[nul + 1:second]
            if second < 0 or not digits.isdigit() or record[second:-1].strip(b"\0"):
                return None
            return int(digits)
        if key < name:
            lo = mid + 1
        else:
            hi = mid
    return -1


def _line_at(fd, data_size, offset, prefix):
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


def _scan(fd, prefix):
    """Linear search: the first line starting with prefix, else None."""
    data = b""
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


def _open(path):
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e


def find_line(data_path, name, index_path=None):
    """(line, method) for the line of data_path that starts with ``name:`` (name: str), or
    (None, method). method is "index" when the name index answered, "scan" otherwise.

    Raises CacheUnreadable when data_path cannot be read.
    """
    fd = _open(data_path)
    try:
        return _find(fd, data_path, name, index_path)
    finally:
        os.close(fd)


def _find(fd, data_path, name, index_path):
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


def _find_indexed(fd, st, index_path, prefix):
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


def _in_file(path, name):
    """Whether a passwd-format file has a line for name (exact match)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e
    prefix = name.encode("utf-8") + b":"
    return data.startswith(prefix) or (b"\n" + prefix) in data


# --- parsing an sshkey line -----------------------------------------------------------------


def _parse_list_repr(value):
    """Python's repr of a list of str, as nsscache writes it (``['k1', 'k2']``), without eval."""
    if "\\" in value:
        # Only keys with unusual characters get escapes: let the literal parser decide.
        import ast

        try:
            result = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise MalformedEntry("not a list of strings: %s" % e.__class__.__name__) from None
        if not isinstance(result, list) or not all(isinstance(k, str) for k in result):
            raise MalformedEntry("not a list of strings")
        return result
    keys: "list[str]" = []
    pos, end = 1, len(value)
    if value[-1:] != "]":
        raise MalformedEntry("list does not end with ]")
    if value == "[]":
        return keys
    while True:
        quote = value[pos:pos + 1]
        if quote not in ("'", '"'):
            raise MalformedEntry("expected a quoted key at character %d" % pos)
        close = value.find(quote, pos + 1)
        if close < 0:
            raise MalformedEntry("unterminated string")
        keys.append(value[pos + 1:close])
        pos = close + 1
        if pos == end - 1:  # the closing ]
            return keys
        if value[pos:pos + 2] != ", ":
            raise MalformedEntry("expected ', ' or ']' at character %d" % pos)
        pos += 2


def _skip_options(line):
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


def _key_blob(line):
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
    key_type, body = fields[0], fields[1]
    try:
        blob = binascii.a2b_base64(body.encode("ascii"), strict_mode=True)
    except (binascii.Error, TypeError):
        try:  # Python < 3.11 has no strict_mode
            if body.strip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="):
                raise binascii.Error("non-base64 character")
            blob = binascii.a2b_base64(body.encode("ascii"))
        except binascii.Error:
            raise MalformedEntry("a %s key is not base64" % key_type) from None
    wire_type = key_type.encode("ascii")
    if not _is_string_at(blob, 0, wire_type):
        raise MalformedEntry("a %s key does not decode as %s" % (key_type, key_type))
    at = key_type.find("nistp")  # ECDSA: the curve is named again after the type
    if at >= 0 and not _is_string_at(blob, 4 + len(wire_type), wire_type[at:at + 8]):
        raise MalformedEntry("a %s key names another curve" % key_type)
    return key_type, blob


def _is_string_at(blob, offset, value):
    """Whether ``blob`` holds the SSH wire string ``value`` at ``offset``."""
    end = offset + 4 + len(value)
    return blob[offset:offset + 4] == len(value).to_bytes(4, "big") and blob[offset + 4:end] == value


def parse_keys(value):
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


# --- fingerprints ---------------------------------------------------------------------------


def _sha256(data):
    try:
        from _sha256 import sha256  # CPython <= 3.11: no OpenSSL load (hashlib costs ~3 ms)
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data).digest()


def _md5(data):
    try:
        from _md5 import md5
    except ImportError:
        from hashlib import md5
    return md5(data).digest()


def fingerprint(key_line, hash_name="SHA256"):
    """OpenSSH's fingerprint of a key line, as sshd's %f gives it: ``SHA256:<unpadded base64>``
    or ``MD5:aa:bb:…``."""
    blob = _key_blob(key_line)[1]
    if hash_name == "SHA256":
        return "SHA256:" + binascii.b2a_base64(_sha256(blob), newline=False).decode("ascii").rstrip("=")
    if hash_name == "MD5":
        return "MD5:" + ":".join("%02x" % b for b in _md5(blob))
    raise UsageError("unsupported fingerprint hash %r" % hash_name)


# --- staleness ------------------------------------------------------------------------------


def parse_timestamp(text):
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


def _check_age(settings, now):
    path = os.path.join(settings.timestamp_dir, TIMESTAMP_NAME)
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace")
    except OSError as e:
        raise StaleCache("no last update time (%s: %s)" % (path, e.strerror or e)) from None
    age = now - parse_timestamp(text)
    if age > settings.max_age:
        raise StaleCache(
            "sshkey cache is stale: last successful update %s, %d s ago, more than --max-age %d"
            % (text.strip(), age, settings.max_age)
        )


# --- the answer -----------------------------------------------------------------------------


def _valid_name(name):
    return (
        0 < len(name) <= MAX_NAME
        and not name.startswith("-")
        and all(c in _NAME_CHARS for c in name)
    )


def authorized_keys(user, settings, fp=None, now=None, clock=time):
    """The Lookup for user (exact name) under settings; fp: sshd's %f, or None for every key.

    Keys are read only from an sshkey.cache written by the same nsscache run as
    passwd.cache (see _open_one_run). Raises KeysError (fail closed) for unreadable
    caches, caches of different runs, a malformed entry, or a stale cache.
    """
    if fp is not None:
        hash_name = fp.split(":", 1)[0]
        if hash_name not in ("SHA256", "MD5") or ":" not in fp:
            raise UsageError("fingerprint %r is neither SHA256:… nor MD5:…" % fp[:100])
    if not _valid_name(user):
        return Lookup(refusal="not a valid user name")
    if user == marker.NAME:
        return Lookup(refusal="the run marker of the caches, not an account")
    if settings.max_age is not None:
        _check_age(settings, _now() if now is None else now)
    if _in_file(settings.system_passwd, user):
        return Lookup(refusal="a local account in %s" % settings.system_passwd)
    passwd_fd, sshkey_fd = _open_one_run(settings, clock)
    try:
        return _lookup(user, settings, passwd_fd, sshkey_fd, fp)
    finally:
        os.close(passwd_fd)
        os.close(sshkey_fd)


def _lookup(user, settings, passwd_fd, sshkey_fd, fp):
    line, _ = _find(passwd_fd, settings.passwd_cache, user, settings.passwd_cache + ".ixname")
    if line is None:
        return Lookup(refusal="not in %s" % settings.passwd_cache)
    fields = line.split(b":")
    if len(fields) != 7 or not fields[2].isdigit():
        raise MalformedEntry("%s: malformed passwd entry" % settings.passwd_cache)
    uid = int(fields[2])
    if uid < settings.min_uid or uid == 0:
        return Lookup(refusal="uid %d is below the minimum %d" % (uid, settings.min_uid))
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


def _keys_of(line, user, path):
    """The keys of user's sshkey.cache line. Raises MalformedEntry."""
    try:
        value = line.decode("utf-8")[len(user) + 1:]
    except UnicodeDecodeError:
        raise MalformedEntry("%s: entry is not UTF-8" % path) from None
    try:
        return parse_keys(value)
    except MalformedEntry as e:
        raise MalformedEntry("%s: malformed entry: %s" % (path, e)) from None


def _open_one_run(settings, clock):
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


def _open_both(settings):
    """((passwd fd, sshkey fd), the runs their markers name, the newer mtime)."""
    paths, fds = (settings.passwd_cache, settings.sshkey_cache), []
    try:
        for path in paths:
            fds.append(_open(path))
        runs = tuple(_run_of(fd, path) for fd, path in zip(fds, paths))
        newest = max(os.fstat(fd).st_mtime for fd in fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return tuple(fds), runs, newest


def _disagreement(settings, runs):
    for path, run in zip((settings.passwd_cache, settings.sshkey_cache), runs):
        if run is None:
            return ("%s has no run marker (%s:*<run> on its first line): written by another source or an "
                    "earlier version; run nsscache update" % (path, marker.NAME))
    return ("%s is from run %s, %s from run %s: not one nsscache run, so no key is served until a run "
            "writes both" % (settings.sshkey_cache, runs[1], settings.passwd_cache, runs[0]))


def _run_of(fd, path):
    """The run named by the marker, the first line of an open cache (see marker.py), or None."""
    try:
        head = _pread_all(fd, 256, 0)
    except OSError as e:
        raise CacheUnreadable("cannot read %s: %s" % (path, e.strerror or e)) from e
    return marker.run_of(head.split(b"\n", 1)[0])


def _now():
    return int(time.time())


# --- settings -------------------------------------------------------------------------------


def _strip_quotes(value):
    # As nsscache's FixValue: one pair of surrounding quotes.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _cache_path(files_dir, map_name, suffix):
    return os.path.join(files_dir, map_name + ("." + suffix if suffix else ""))


def read_settings(conf_path=None, **overrides):
    """Settings from an nsscache.conf (optional) and command-line overrides.

    From the file: ``files_dir`` and ``files_cache_filename_suffix`` of the [sshkey] and [passwd]
    maps, ``timestamp_dir``, ``coreweave_min_uid`` (of [passwd]). Overrides: sshkey_cache,
    passwd_cache, system_passwd, timestamp_dir, min_uid, max_age, settle (None = not given).
    """
    settings = Settings()
    if conf_path is not None:
        import configparser

        parser = configparser.ConfigParser()
        try:
            with open(conf_path, encoding="utf-8") as f:
                parser.read_file(f)
        except (OSError, UnicodeDecodeError, configparser.Error) as e:
            raise CacheUnreadable("cannot read %s: %s" % (conf_path, e)) from None

        def get(section, key, default):
            try:
                section = section if parser.has_section(section) else "DEFAULT"
                if parser.has_option(section, key):
                    return _strip_quotes(parser.get(section, key).strip())
            except configparser.Error as e:
                raise CacheUnreadable("cannot read %s: %s" % (conf_path, e)) from None
            return default

        for map_name in ("sshkey", "passwd"):
            path = _cache_path(
                get(map_name, "files_dir", DEFAULT_FILES_DIR),
                map_name,
                get(map_name, "files_cache_filename_suffix", DEFAULT_SUFFIX),
            )
            setattr(settings, map_name + "_cache", path)
        settings.timestamp_dir = get("DEFAULT", "timestamp_dir", DEFAULT_TIMESTAMP_DIR)
        min_uid = get("passwd", "coreweave_min_uid", None)
        if min_uid is not None:
            settings.min_uid = _number("coreweave_min_uid in " + conf_path, min_uid)
    sshkey_given = overrides.get("sshkey_cache") is not None
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    if sshkey_given and overrides.get("passwd_cache") is None:
        directory, base = os.path.split(settings.sshkey_cache)
        if not base.startswith("sshkey"):
            raise UsageError("--cache %s is not named sshkey*: give --passwd-cache too" % settings.sshkey_cache)
        settings.passwd_cache = os.path.join(directory, "passwd" + base[len("sshkey"):])
    return settings


def _number(what, text):
    text = str(text).strip()
    if not (text.isascii() and text.isdigit()):
        raise UsageError("%s must be a non-negative integer, not %r" % (what, text))
    return int(text)


# --- sshd path rules and the wrapper --------------------------------------------------------


def sshd_path_problems(path):
    """Why sshd would refuse path as an AuthorizedKeysCommand (empty when it would not), one
    line each: an absolute path to a regular file; the file and every directory on the way
    owned by root and not group- or world-writable (OpenSSH's safe_path). The interpreter
    and what it imports are checked by sshd_path.check_wrapper()."""
    from . import sshd_path

    return [str(problem) for problem in sshd_path.path_problems(path)]


def wrapper_text(python):
    """The AuthorizedKeysCommand wrapper for an interpreter that can import this package."""
    if not os.path.isabs(python) or any(c.isspace() for c in python):
        raise UsageError("the interpreter path must be absolute and without spaces: %r" % python)
    return (
        "#!%s -I\n"
        "# %s: sshd's AuthorizedKeysCommand (nss-cache-coreweave), written by\n"
        "# `%s --install-wrapper`. Faster than pip's console script, which imports re.\n"
        "import sys\n"
        "from nss_cache_coreweave.keys import main\n"
        "sys.exit(main())\n" % (python, PROG, PROG)
    )


def install_wrapper(path, python=None):
    """Write the wrapper at path (mode 0755; root-owned when run as root), atomically; return
    sshd_path_problems(path). The command line checks the interpreter first and the whole
    wrapper after (sshd_path)."""
    text = wrapper_text(python or sys.executable)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with open(fd, "w", encoding="ascii") as f:
            f.write(text)
            # On the descriptor, not the path: in a directory others can write
            # to, the path may no longer name the file written here.
            if os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            os.fchmod(f.fileno(), 0o755)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return sshd_path_problems(path)


# --- command line ---------------------------------------------------------------------------

USAGE = """\
usage: %(prog)s [-c NSSCACHE_CONF] [--cache SSHKEY_CACHE] [--passwd-cache PASSWD_CACHE]
       %(pad)s [--system-passwd FILE] [--min-uid UID] [--max-age SECONDS]
       %(pad)s [--settle SECONDS] [--timestamp-dir DIR] USER [FINGERPRINT]
       %(prog)s --install-wrapper PATH [--python PYTHON] [--user USER]
       %(prog)s --check-path PATH [--user USER]

Print USER's SSH public keys from nsscache's sshkey.cache for sshd's AuthorizedKeysCommand:
    AuthorizedKeysCommand /usr/local/sbin/%(prog)s %%u %%f
    AuthorizedKeysCommandUser nsscache-keys

  -c FILE            read files_dir, files_cache_filename_suffix, timestamp_dir and
                     coreweave_min_uid from this nsscache.conf (default: none; the
                     defaults match libnss-cache: /etc/sshkey.cache, /etc/passwd.cache)
  --cache FILE       the sshkey cache (default /etc/sshkey.cache); the passwd cache is
                     the passwd* file beside it unless --passwd-cache is given
  --passwd-cache F   the nsscache passwd cache (default /etc/passwd.cache)
  --system-passwd F  local accounts, never served (default /etc/passwd)
  --min-uid UID      refuse uids below this (default 1000)
  --max-age SECONDS  print nothing once the last successful sshkey update
                     (TIMESTAMP_DIR/timestamp-sshkey-update) is older (default: off)
  --settle SECONDS   how long a passwd cache and an sshkey cache of different
                     nsscache runs are waited on (nsscache writes one map after
                     the other) before failing closed (default 10)
  --timestamp-dir D  nsscache's timestamp_dir (default /var/lib/nsscache)
  --install-wrapper PATH   write a fast wrapper script for sshd at PATH (--python:
                     its interpreter, default this one; nothing is written when
                     that interpreter fails the checks below), then --check-path it
  --check-path PATH  check PATH as sshd's AuthorizedKeysCommand: it, its
                     interpreter, that Python's prefix, sys.path, .pth files, this
                     package and every file it loads must be root-owned and not
                     group- or world-writable, every directory above them too
                     (sshd's rule for the command); then run PATH as USER with a
                     name it refuses: it must exit 0 and print nothing
  --user USER        the AuthorizedKeysCommandUser (default nsscache-keys)

Exit status: 0 answered (keys printed, or refused with a reason on stderr);
1 failed closed (unreadable cache, caches of different runs, malformed entry,
stale cache): no keys; 2 usage.
"""

_VALUE_OPTIONS = {
    "-c": "conf",
    "--config": "conf",
    "--cache": "sshkey_cache",
    "--passwd-cache": "passwd_cache",
    "--system-passwd": "system_passwd",
    "--min-uid": "min_uid",
    "--max-age": "max_age",
    "--settle": "settle",
    "--timestamp-dir": "timestamp_dir",
    "--install-wrapper": "install_wrapper",
    "--python": "python",
    "--check-path": "check_path",
    "--user": "user",
}


def _parse_args(argv):
    """(options dict, positional list); argparse would import re and gettext."""
    opts = {}
    positional = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if arg in ("-h", "--help"):
            opts["help"] = True
            continue
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.partition("=")
            if name not in _VALUE_OPTIONS:
                raise UsageError("unknown option %s" % name)
            if not eq:
                if i >= len(argv):
                    raise UsageError("%s needs a value" % name)
                value = argv[i]
                i += 1
            opts[_VALUE_OPTIONS[name]] = value
            continue
        positional.append(arg)
    return opts, positional


def _log(message):
    try:
        sys.stderr.write("%s: %s\n" % (PROG, message.replace("\n", " ")))
        sys.stderr.flush()
    except Exception:
        pass


def main(argv=None):
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts, positional = _parse_args(argv)
        if opts.get("help"):
            sys.stdout.write(USAGE % {"prog": PROG, "pad": " " * len(PROG)})
            return 0
        if "install_wrapper" in opts or "check_path" in opts:
            return _admin(opts, positional)
        if "python" in opts or "user" in opts:
            raise UsageError("--python and --user go with --install-wrapper or --check-path")
        if not 1 <= len(positional) <= 2:
            raise UsageError("expected USER [FINGERPRINT]")
        user = positional[0]
        fp = positional[1] if len(positional) == 2 else None
        settings = read_settings(
            opts.get("conf"),
            sshkey_cache=opts.get("sshkey_cache"),
            passwd_cache=opts.get("passwd_cache"),
            system_passwd=opts.get("system_passwd"),
            timestamp_dir=opts.get("timestamp_dir"),
            min_uid=_number("--min-uid", opts["min_uid"]) if "min_uid" in opts else None,
            max_age=_number("--max-age", opts["max_age"]) if "max_age" in opts else None,
            settle=_number("--settle", opts["settle"]) if "settle" in opts else None,
        )
    except UsageError as e:
        _log("%s (see --help): no keys" % e)
        return 2
    except KeysError as e:
        _log("%s: no keys" % e)
        return 1
    try:
        answer = authorized_keys(user, settings, fp)
    except UsageError as e:
        _log("%s (see --help): no keys" % e)
        return 2
    except KeysError as e:
        _log("%s: %s: no keys" % (user, e))
        return 1
    except Exception as e:  # fail closed on anything unexpected
        _log("%s: unexpected %s: %s: no keys" % (user, e.__class__.__name__, e))
        return 1
    if answer.refusal:
        _log("%s: %s: no keys" % (user, answer.refusal))
        return 0
    try:
        sys.stdout.write("".join(key + "\n" for key in answer.keys))
        sys.stdout.flush()
    except (OSError, ValueError) as e:
        _log("%s: cannot write the keys: %s" % (user, e))
        return 1
    return 0


def _admin(opts, positional):
    """--install-wrapper and --check-path (sshd_path.py): every problem on stderr, exit 1."""
    if positional:
        raise UsageError("unexpected argument %r" % positional[0])
    from . import sshd_path

    user = opts.get("user", sshd_path.DEFAULT_USER)
    if "check_path" in opts:
        path = opts["check_path"]
    else:
        path = opts["install_wrapper"]
        python = opts.get("python") or sys.executable
        first_line = wrapper_text(python).split("\n", 1)[0]
        problems = sshd_path.check_python(python, user)
        if problems:
            return _report(problems, "%s not written" % path)
        try:
            install_wrapper(path, python)
        except OSError as e:
            _log("cannot write %s: %s" % (path, e.strerror or e))
            return 1
        sys.stdout.write("wrote %s (%s)\n" % (path, first_line))
    problems = sshd_path.check_wrapper(path, user)
    if problems:
        return _report(problems, "sshd must not run %s as it is" % path)
    if "check_path" in opts:
        sys.stdout.write("%s: sshd's ownership and permission rules are met\n" % path)
    return 0


def _report(problems, conclusion):
    for problem in problems:
        _log(str(problem))
    _log(conclusion)
    return 1


if __name__ == "__main__":
    sys.exit(main())
