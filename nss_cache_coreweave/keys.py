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

This module is the command line (the console script's and the wrapper's entry point,
``main``); the lookup, O(log n) in nsscache's name indexes, is keycache.py.

Start-up cost matters (sshd runs this on every authentication attempt): on the lookup path
only ``os``, ``sys``, ``time``, ``binascii`` and the package's ``marker`` and ``keycache``
are imported (plus a SHA-256 or MD5 implementation for FINGERPRINT);
``configparser`` only with ``-c``, ``ast`` only for a key that Python wrote with backslash
escapes. Run it through the wrapper ``--install-wrapper`` writes: pip's console-script
wrapper imports ``re``. That option and ``--check-path`` check, through sshd_path.py (imported
only for them), that sshd may run the wrapper and that everything it runs and imports is as
safe as sshd requires of the wrapper itself, then try it as the AuthorizedKeysCommandUser.
"""

import os
import sys

from .keycache import (
    DEFAULT_FILES_DIR,
    DEFAULT_SUFFIX,
    DEFAULT_TIMESTAMP_DIR,
    CacheUnreadable,
    KeysError,
    Settings,
    UsageError,
    authorized_keys,
)

__all__ = [
    "PROG",
    "read_settings",
    "sshd_path_problems",
    "wrapper_text",
    "install_wrapper",
    "main",
]

PROG = "nsscache-coreweave-keys"


# --- settings -------------------------------------------------------------------------------


def read_settings(conf_path: "str | None" = None, **overrides) -> Settings:
    """Settings from an nsscache.conf (optional) and command-line overrides.

    From the file: ``files_dir`` and ``files_cache_filename_suffix`` of the [sshkey] and [passwd]
    maps, ``timestamp_dir``, ``coreweave_min_uid`` (of [passwd]). Overrides: sshkey_cache,
    passwd_cache, system_passwd, timestamp_dir, min_uid, max_age, settle (None = not given).
    An sshkey_cache given without passwd_cache brings the passwd* file beside it.
    """
    values = _conf_values(conf_path) if conf_path is not None else {}
    values.update((key, value) for key, value in overrides.items() if value is not None)
    if overrides.get("sshkey_cache") is not None and overrides.get("passwd_cache") is None:
        values["passwd_cache"] = _passwd_beside(values["sshkey_cache"])
    return Settings(**values)


def _passwd_beside(sshkey_cache: str) -> str:
    directory, base = os.path.split(sshkey_cache)
    if not base.startswith("sshkey"):
        raise UsageError("--cache %s is not named sshkey*: give --passwd-cache too" % sshkey_cache)
    return os.path.join(directory, "passwd" + base[len("sshkey"):])


def _conf_values(conf_path: str) -> dict:
    """The settings an nsscache.conf gives (configparser is imported only here, for -c)."""
    import configparser

    parser = configparser.ConfigParser()
    try:
        with open(conf_path, encoding="utf-8") as f:
            parser.read_file(f)
        values: dict = {
            map_name + "_cache": _cache_path(
                _option(parser, map_name, "files_dir", DEFAULT_FILES_DIR),
                map_name,
                _option(parser, map_name, "files_cache_filename_suffix", DEFAULT_SUFFIX),
            )
            for map_name in ("sshkey", "passwd")
        }
        values["timestamp_dir"] = _option(parser, "DEFAULT", "timestamp_dir", DEFAULT_TIMESTAMP_DIR)
        min_uid = _option(parser, "passwd", "coreweave_min_uid", None)
    except (OSError, UnicodeDecodeError, configparser.Error) as e:
        raise CacheUnreadable("cannot read %s: %s" % (conf_path, e)) from None
    if min_uid is not None:
        values["min_uid"] = _number("coreweave_min_uid in " + conf_path, min_uid)
    return values


def _option(parser, section: str, key: str, default):
    """An option of section (of [DEFAULT] when there is no such section), quotes stripped."""
    section = section if parser.has_section(section) else "DEFAULT"
    if parser.has_option(section, key):
        return _strip_quotes(parser.get(section, key).strip())
    return default


def _strip_quotes(value: str) -> str:
    # As nsscache's FixValue: one pair of surrounding quotes.
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _cache_path(files_dir: str, map_name: str, suffix: str) -> str:
    return os.path.join(files_dir, map_name + ("." + suffix if suffix else ""))


def _number(what: str, text: str) -> int:
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


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        opts, positional = _parse_args(argv)
        if opts.get("help"):
            sys.stdout.write(USAGE % {"prog": PROG, "pad": " " * len(PROG)})
            return 0
        if "install_wrapper" in opts or "check_path" in opts:
            return _admin(opts, positional)
        user, fp = _user_and_fingerprint(opts, positional)
        settings = _settings(opts)
    except UsageError as e:
        _log("%s (see --help): no keys" % e)
        return 2
    except KeysError as e:
        _log("%s: no keys" % e)
        return 1
    return _answer(user, settings, fp)


def _user_and_fingerprint(opts: dict, positional: list) -> "tuple[str, str | None]":
    if "python" in opts or "user" in opts:
        raise UsageError("--python and --user go with --install-wrapper or --check-path")
    if not 1 <= len(positional) <= 2:
        raise UsageError("expected USER [FINGERPRINT]")
    return positional[0], (positional[1] if len(positional) == 2 else None)


def _settings(opts: dict) -> Settings:
    """The lookup's Settings from the command line's options."""
    numbers = {key: _number(option, opts[key])
               for key, option in (("min_uid", "--min-uid"), ("max_age", "--max-age"), ("settle", "--settle"))
               if key in opts}
    return read_settings(
        opts.get("conf"),
        sshkey_cache=opts.get("sshkey_cache"),
        passwd_cache=opts.get("passwd_cache"),
        system_passwd=opts.get("system_passwd"),
        timestamp_dir=opts.get("timestamp_dir"),
        **numbers,
    )


def _answer(user: str, settings: Settings, fp: "str | None") -> int:
    """Look user up, print the keys or log why none, and return the exit status."""
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
