"""Can sshd safely run a keys wrapper? ``nsscache-coreweave-keys --install-wrapper`` and
``--check-path``; the keys command's lookup path never imports this module.

sshd runs an AuthorizedKeysCommand only when the file and every directory above its real
path are owned by root and not group- or world-writable (OpenSSH's ``safe_path()``; a
sticky bit does not help). sshd stops there, but the kernel then runs the wrapper's
interpreter, which imports this package: whoever can change any of those files decides
what is printed as anyone's authorized keys. So the same rule is applied here to
everything that decides the code sshd runs, for every login, as the
AuthorizedKeysCommandUser:

1. the wrapper, and every directory a lookup of its path passes through (symlinks are
   followed, and the directories holding them count too);
2. the interpreter on its ``#!`` line, the same way (the real file and the directories
   of the path as written), and the virtualenv's ``pyvenv.cfg`` beside it.
   Nothing is run until these pass.
3. What that interpreter reports when run as the AuthorizedKeysCommandUser (never as
   root: a site directory's ``.pth`` files run at start-up): ``sys.prefix`` and
   ``sys.base_prefix``, every ``sys.path`` directory and site directory ``.pth`` file,
   the package directory and every file in it, every module file the command loads.
4. The wrapper itself, run as sshd runs it (that user's uid, gid and groups, sshd's
   environment, working directory /) with :data:`TRIAL_NAME`, which the command refuses
   before reading any cache: it must exit 0 and print nothing.

When the user cannot run or import something, the paths it cannot reach are named too.
Each finding is a :class:`Problem` carrying the path, its owner and mode and the fix.
"""

import errno
import grp
import json
import os
import pwd
import stat
import subprocess

__all__ = [
    "DEFAULT_USER",
    "TRIAL_NAME",
    "Problem",
    "UnsafePath",
    "MissingPath",
    "BadInterpreter",
    "UnknownUser",
    "CannotSwitchUser",
    "RunFailed",
    "Unreachable",
    "Account",
    "lookups",
    "path_problems",
    "check_python",
    "check_wrapper",
]

DEFAULT_USER = "nsscache-keys"  # the shipped sshd_config's AuthorizedKeysCommandUser
TRIAL_NAME = "(install-check)"  # not a valid user name: refused before any cache is read
TIMEOUT = 30.0
SSHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"  # OpenSSH's _PATH_STDPATH, the command's PATH
MAX_LINKS = 40  # as Linux's ELOOP limit
PACKAGE = "nss_cache_coreweave"
REFUSED = "sshd refuses to run the command, so no key login works"
INJECTABLE = "whoever can write to it chooses the code sshd runs at every login"

# Run by the wrapper's interpreter as the AuthorizedKeysCommandUser: imports what the wrapper
# imports, then reports where everything came from (one JSON line).
_PROBE = r"""
import sys
import nss_cache_coreweave.keys
files = [f for m in list(sys.modules.values()) for f in (getattr(m, "__file__", None), getattr(m, "__cached__", None))
         if isinstance(f, str)]
import json, os, site
sites = site.getsitepackages() if hasattr(site, "getsitepackages") else []
print(json.dumps({"prefix": sys.prefix, "base_prefix": sys.base_prefix, "path": sys.path, "sites": sites,
                  "package": os.path.dirname(os.path.abspath(nss_cache_coreweave.__file__)), "files": files}))
"""


class Problem(Exception):
    """One reason sshd must not run the wrapper as it is, or cannot use it; str() is one line
    naming the path and what to do."""

    def __init__(self, path, message):
        super().__init__(message)
        self.path = path


class UnsafePath(Problem):
    """A file or directory that breaks sshd's rule: not owned by root, or group/world-writable."""

    def __init__(self, path, role, st, reasons, consequence, fix):
        self.role, self.uid, self.gid, self.mode = role, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
        self.reasons, self.consequence, self.fix = tuple(reasons), consequence, fix
        super().__init__(path, "%s (%s) is %s (%s %04o): %s; fix: %s" % (
            path, role, " and ".join(reasons), _owner(st), self.mode, consequence, fix))


class MissingPath(Problem):
    """A path that must exist (the wrapper, the interpreter) cannot be looked up."""

    def __init__(self, path, role, error):
        self.role, self.error = role, error
        super().__init__(path, "%s (%s) cannot be checked: %s" % (path, role, error))


class BadInterpreter(Problem):
    """The wrapper's ``#!`` line names no usable absolute interpreter."""

    def __init__(self, path, detail):
        self.detail = detail
        super().__init__(path, "%s: %s; rewrite it: nsscache-coreweave-keys --install-wrapper %s --python PYTHON"
                         % (path, detail, path))


class UnknownUser(Problem):
    """The AuthorizedKeysCommandUser does not exist."""

    def __init__(self, user):
        self.user = user
        super().__init__(None, "user %s does not exist, and sshd runs the command as its AuthorizedKeysCommandUser: "
                         "create it (useradd --system --user-group --no-create-home --home-dir /nonexistent "
                         "--shell /usr/sbin/nologin %s) or name yours with --user" % (user, user))


class CannotSwitchUser(Problem):
    """Not root, so the command cannot be tried as the AuthorizedKeysCommandUser."""

    def __init__(self, user, euid):
        self.user, self.euid = user, euid
        super().__init__(None, "cannot try the command as %s while running as uid %d: run this as root" % (user, euid))


class RunFailed(Problem):
    """The interpreter or the wrapper, run as the AuthorizedKeysCommandUser, failed or misbehaved."""

    def __init__(self, path, user, what, detail):
        self.user, self.what, self.detail = user, what, detail
        super().__init__(path, "%s cannot run %s: %s; no key login works" % (user, what, detail))


class Unreachable(Problem):
    """A path the AuthorizedKeysCommandUser needs but may not search, read or execute."""

    def __init__(self, path, role, st, user, need, fix):
        self.role, self.uid, self.gid, self.mode = role, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
        self.user, self.need, self.fix = user, need, fix
        super().__init__(path, "%s (%s) is %s %04o: %s cannot %s it; fix: %s" % (
            path, role, _owner(st), self.mode, user, need, fix))


class Account:
    """The AuthorizedKeysCommandUser as sshd runs the command: uid, gid, groups (initgroups), home."""

    __slots__ = ("name", "uid", "gid", "groups", "home")

    def __init__(self, name):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise UnknownUser(name) from None
        self.name, self.uid, self.gid, self.home = name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        self.groups = tuple(os.getgrouplist(name, pw.pw_gid))

    def env(self):
        """sshd's environment for the command (OpenSSH misc.c, subprocess())."""
        env = {"PATH": SSHD_PATH, "USER": self.name, "LOGNAME": self.name, "HOME": self.home}
        if "LANG" in os.environ:
            env["LANG"] = os.environ["LANG"]
        return env

    def can(self, st, bits):
        """Whether the mode bits (4 read, 1 execute/search, as for "other") are granted to this user."""
        shift = 6 if st.st_uid == self.uid else 3 if st.st_gid in self.groups else 0
        return (st.st_mode >> shift) & bits == bits


def _owner(st):
    return "%s:%s" % (_name(pwd.getpwuid, st.st_uid), _name(grp.getgrgid, st.st_gid))


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def _parts(path):
    return [p for p in path.split("/") if p not in ("", ".")]


def lookups(path):
    """(real path or None, directories searched) for an absolute path resolved as the kernel
    does, following symlinks: every directory a name is looked up in, in order, which
    includes each one holding a link and every parent of the real path. The real path is
    None when a component does not exist (the directories searched up to it are returned).
    Raises OSError for anything else (a loop, a file used as a directory)."""
    pending, current, searched, links = _parts(path), "/", [], 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            current = os.path.dirname(current)
            continue
        if current not in searched:
            searched.append(current)
        candidate = os.path.join(current, name)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            return None, searched
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            target = os.readlink(candidate)
            current = "/" if target.startswith("/") else current
            pending[:0] = _parts(target)
        else:
            current = candidate
    return current, searched


def _within(path, tree):
    return path == tree or path.startswith(tree.rstrip("/") + "/")


class _Checker:
    """Applies sshd's rule to paths, each once; collects the problems and what was walked."""

    def __init__(self):
        self.problems, self.seen, self.trees, self.walked, self.recursive_fixes = [], set(), [], [], set()

    def tree_of(self, path):
        """The outermost virtualenv or package directory holding path, for a recursive fix."""
        return next((t for t in self.trees if _within(path, t)), None)

    def path(self, path, role, must_exist=True, sshd=False, need=4):
        """Check every directory on the way to path and the file itself; return its real path
        (None when missing). sshd: the command itself, whose real path sshd checks too. need:
        what the AuthorizedKeysCommandUser must be allowed to do with it (4 read, 1 execute or
        search: "other" mode bits), named when a run fails."""
        try:
            real, searched = lookups(path)
        except OSError as e:
            self.problems.append(MissingPath(path, role, e.strerror or e))
            return None
        if real is None and must_exist:
            self.problems.append(MissingPath(path, role, os.strerror(errno.ENOENT)))
        ancestors = [d for d in searched if real is not None and _within(real, d)]
        for directory in searched:
            self._one(directory, "a directory on the way to %s" % role, sshd and directory in ancestors, 1)
        if real is not None:
            self._one(real, role, sshd, need)
        return real

    def _one(self, path, role, sshd, need):
        if path in self.seen:
            return
        self.seen.add(path)
        try:
            st = os.stat(path)
        except OSError as e:
            self.problems.append(MissingPath(path, role, e.strerror or e))
            return
        self.walked.append((path, role, need))
        tree = self.tree_of(path)
        problem = _unsafe(path, role, st, REFUSED if sshd else INJECTABLE, tree)
        if problem is not None and (tree is None or problem.fix not in self.recursive_fixes):
            self.problems.append(problem)  # one line per recursive fix: it mends the whole tree
            if tree is not None:
                self.recursive_fixes.add(problem.fix)


def _unsafe(path, role, st, consequence, tree):
    """An UnsafePath when st breaks sshd's rule (root-owned, not group/world-writable), else None."""
    reasons, fixes = [], []
    if st.st_uid != 0:
        reasons.append("owned by %s, not root" % _name(pwd.getpwuid, st.st_uid))
        fixes.append("chown -R root:root %s" % tree if tree else "chown root:root %s" % path)
    writable = [who for who, bit in (("group", 0o020), ("world", 0o002)) if st.st_mode & bit]
    if writable:
        reasons.append("- and ".join(writable) + "-writable")
        fixes.append("chmod -R go-w %s" % tree if tree else "chmod go-w %s" % path)
    if not reasons:
        return None
    if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and writable:
        fixes = ["use a directory only root can write to (%s is shared on purpose: leave its mode)" % path]
    return UnsafePath(path, role, st, reasons, consequence, " && ".join(fixes))


def path_problems(path):
    """sshd's own rule for an AuthorizedKeysCommand path (OpenSSH's safe_path()), as Problems:
    an absolute path to a regular file; it and every directory on the way root-owned and not
    group- or world-writable."""
    if not os.path.isabs(path):
        return [Problem(path, "%s is not an absolute path" % path)]
    checker = _Checker()
    real = checker.path(path, "the AuthorizedKeysCommand", sshd=True)
    if real is not None and not stat.S_ISREG(os.stat(real).st_mode):
        checker.problems.append(Problem(path, "%s is not a regular file" % path))
    return checker.problems


def _interpreter(wrapper):
    """The command line of the wrapper's ``#!`` line (the interpreter and its one argument)."""
    from .install import script_interpreter

    try:
        argv = script_interpreter(wrapper)
    except (OSError, ValueError) as e:
        raise BadInterpreter(wrapper, "cannot read its #! line (%s)" % e) from None
    if os.path.basename(argv[0]) == "env":
        raise BadInterpreter(wrapper, "its #! line runs %s, so the interpreter is whichever python comes first on "
                             "sshd's PATH" % " ".join(argv))
    if not os.path.isabs(argv[0]):
        raise BadInterpreter(wrapper, "its #! line names %s, not an absolute path" % argv[0])
    return argv


def _check_interpreter(argv, checker):
    """Step 2: the interpreter as the kernel finds it, and the pyvenv.cfg Python reads beside it."""
    python = argv[0]
    candidates = [os.path.dirname(python), os.path.dirname(os.path.dirname(python))]
    venv = next((d for d in candidates if os.path.lexists(os.path.join(d, "pyvenv.cfg"))), None)
    if venv is not None:
        checker.trees.append(venv)
    checker.path(python, "the interpreter %s" % python, need=1)
    if venv is not None:
        checker.path(os.path.join(venv, "pyvenv.cfg"), "the virtualenv's pyvenv.cfg", need=4)


def _run(argv, account, timeout, path, what):
    """argv run as sshd runs an AuthorizedKeysCommand: as account (uid, gid, its groups),
    sshd's environment, working directory /, no input. RunFailed unless it exits 0."""
    switch = {}
    if os.geteuid() == 0:
        switch = {"user": account.uid, "group": account.gid, "extra_groups": list(account.groups)}
    elif os.geteuid() != account.uid:
        raise CannotSwitchUser(account.name, os.geteuid())
    try:
        result = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", cwd="/",
            env=account.env(), timeout=timeout, check=False, **switch,
        )
    except subprocess.TimeoutExpired:
        raise RunFailed(path, account.name, what, "no answer within %g s" % timeout) from None
    except OSError as e:
        raise RunFailed(path, account.name, what, str(e)) from None
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise RunFailed(path, account.name, what, "exit %d: %s" % (result.returncode, lines[-1] if lines else
                                                                     "no message"))
    return result


def _is_report(report):
    """Whether report has _PROBE's shape: absolute paths, and lists of strings."""
    return (
        isinstance(report, dict)
        and all(isinstance(report.get(k), str) and os.path.isabs(report[k])
                for k in ("prefix", "base_prefix", "package"))
        and all(isinstance(report.get(k), list) and all(isinstance(v, str) for v in report[k])
                for k in ("path", "sites", "files"))
    )


def _probe(argv, account, timeout):
    """Step 3's report: what the interpreter, run as account, imports and from where."""
    what = "%s (importing %s.keys)" % (" ".join(argv), PACKAGE)
    result = _run(argv + ["-c", _PROBE], account, timeout, argv[0], what)
    try:
        report = json.loads((result.stdout.strip().splitlines() or [""])[-1])
    except ValueError:
        report = None
    if not _is_report(report):
        raise RunFailed(argv[0], account.name, what, "no report (%r)" % result.stdout[-200:])
    return report


def _pth_files(site_dir):
    try:
        names = sorted(n for n in os.listdir(site_dir) if n.endswith(".pth"))
    except OSError:
        return []
    return [os.path.join(site_dir, n) for n in names]


def _check_environment(report, checker):
    """Step 3's rules: the prefixes, sys.path, .pth files, the package and every file loaded."""
    checker.path(report["prefix"], "the Python environment (sys.prefix)", need=1)
    checker.path(report["base_prefix"], "the base Python (sys.base_prefix)", need=1)
    package = report["package"]
    checker.trees.append(package)
    for entry in filter(os.path.isabs, report["path"]):  # "" (the working directory) only without -I
        checker.path(entry, "a directory on sys.path", must_exist=False, need=5)
    for site_dir in report["sites"]:
        for pth in _pth_files(site_dir):
            checker.path(pth, "a .pth file Python runs at start-up", need=4)
    checker.path(package, "the package %s" % PACKAGE, need=5)
    for directory, dirs, files in os.walk(package):
        for name in sorted(dirs):
            checker.path(os.path.join(directory, name), "a directory of the package %s" % PACKAGE, need=5)
        for name in sorted(files):
            checker.path(os.path.join(directory, name), "a file of the package %s" % PACKAGE)
    for path in filter(os.path.isabs, report["files"]):
        checker.path(path, "a file the command loads", must_exist=False)


def _trial(wrapper, account, timeout):
    """Step 4: the wrapper as sshd runs it, with a name it refuses before reading any cache."""
    what = "%s (given the name %s, which it must refuse)" % (wrapper, TRIAL_NAME)
    result = _run([wrapper, TRIAL_NAME], account, timeout, wrapper, what)
    if result.stdout:
        raise RunFailed(wrapper, account.name, what, "it printed %r" % result.stdout[:200])


def _verb(st, need):
    if stat.S_ISDIR(st.st_mode):
        return "list" if need == 4 else "search" if need == 1 else "search and list"
    return "read" if need == 4 else "execute" if need == 1 else "read and execute"


def _access_problem(path, role, need, account, checker):
    """An Unreachable when account may not do need (mode bits) with path, else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if account.can(st, need):
        return None
    tree = checker.tree_of(path)
    bits = ("r" if need & 4 else "") + ("x" if need & 1 else "")
    fix = ("chmod -R o+rX %s" % tree if tree else
           "chmod o+%s %s, or install the command where %s can reach it" % (bits, path, account.name))
    return Unreachable(path, role, st, account.name, _verb(st, need), fix)


def _unreachable(checker, account):
    """For a failed run: the paths walked (and every directory of a virtualenv) that account
    may not search, read or execute; only the topmost of each blocked subtree."""
    problems: "list[Problem]" = []

    def reachable(path, role, need):
        if any(_within(path, p.path) for p in problems):
            return False  # blocked above
        problem = _access_problem(path, role, need, account, checker)
        if problem is not None:
            problems.append(problem)
        return problem is None

    for path, role, need in checker.walked:
        reachable(path, role, need)
    for tree in checker.trees:
        for directory, dirs, _ in os.walk(tree):
            dirs[:] = [d for d in sorted(dirs) if reachable(os.path.join(directory, d), "a directory of %s" % tree, 1)]
    return problems


def _runtime(argv, wrapper, user, checker, timeout):
    """Steps 3 and 4, as user; a failed run adds what that user cannot reach."""
    account = Account(user)
    try:
        _check_environment(_probe(argv, account, timeout), checker)
        if wrapper is not None and not checker.problems:
            _trial(wrapper, account, timeout)
    except RunFailed as e:
        checker.problems.append(e)
        checker.problems.extend(_unreachable(checker, account))


def _check(argv, wrapper, user, timeout, checker):
    _check_interpreter(argv, checker)
    if checker.problems:
        return checker.problems  # nothing is run before the paths that decide what runs are safe
    try:
        _runtime(argv, wrapper, user, checker, timeout)
    except Problem as e:  # UnknownUser, CannotSwitchUser
        checker.problems.append(e)
    return checker.problems


def check_python(python, user=DEFAULT_USER, timeout=TIMEOUT):
    """Problems of python as the interpreter of a wrapper not written yet (``#!PYTHON -I``):
    steps 2 and 3, run as user. Empty when it is safe and user can import the command."""
    return _check([python, "-I"], None, user, timeout, _Checker())


def check_wrapper(wrapper, user=DEFAULT_USER, timeout=TIMEOUT):
    """Problems of wrapper as sshd's AuthorizedKeysCommand run as user (its
    AuthorizedKeysCommandUser): steps 1 to 4. Empty when sshd may run it and it works."""
    if not os.path.isabs(wrapper):
        return [Problem(wrapper, "%s is not an absolute path" % wrapper)]
    checker = _Checker()
    real = checker.path(wrapper, "the AuthorizedKeysCommand", sshd=True, need=5)
    if real is None:
        return checker.problems
    if not stat.S_ISREG(os.stat(real).st_mode):
        checker.problems.append(Problem(wrapper, "%s is not a regular file" % wrapper))
        return checker.problems
    try:
        argv = _interpreter(wrapper)
    except BadInterpreter as e:
        return checker.problems + [e]
    return _check(argv, wrapper, user, timeout, checker)
