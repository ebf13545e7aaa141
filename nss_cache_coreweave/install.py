"""Is the ``coreweave`` source registered for the interpreter that runs ``nsscache``?

The classic breakage of a node-image install: this package was installed for one
Python (``pip install --break-system-packages`` puts it in
``/usr/local/lib/python3.X/dist-packages``, tied to that minor version), while
``/usr/bin/nsscache`` runs another (after an OS upgrade, or a pip of another
Python). Nothing fails until the next run, which says
``source not implemented: 'coreweave'``.

:func:`check_registration` reads the interpreter from the ``nsscache`` script's
first line and runs it (a subprocess, with cron's environment: ``PATH``
:data:`CRON_PATH`, ``HOME``, nothing else) on a small probe that imports
nsscache's source factory exactly as nsscache does, which fires this package's
registration hook, and reports whether ``coreweave`` is registered. When it is
not, :attr:`Registration.problem` says why and what to do, naming the site
directories of other Pythons that hold the package.

Stdlib only. ``registration_problem()`` is the one-call form for ``check`` and
``status``: ``None`` when fine, else one message.

``python3 -m nss_cache_coreweave.install [NSSCACHE]`` prints the verdict (exit 0 fine, 1 not).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

__all__ = [
    "CRON_PATH",
    "SEARCH_PATTERNS",
    "Registration",
    "check_registration",
    "registration_problem",
    "find_nsscache",
    "script_interpreter",
    "installed_copies",
    "main",
]

SOURCE_NAME = "coreweave"
PACKAGE = "nss_cache_coreweave"
PTH = "nss_cache_coreweave.pth"
DIST = "nss-cache-coreweave"
# The PATH cron and the shipped cron file use (systemd's default is the same set).
CRON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Where other Pythons' copies of the package may be: (glob of a site directory).
SEARCH_PATTERNS = (
    "/usr/lib/python3/dist-packages",
    "/usr/lib/python3*/dist-packages",
    "/usr/lib/python3*/site-packages",
    "/usr/local/lib/python3*/dist-packages",
    "/usr/local/lib/python3*/site-packages",
    "/opt/*/lib/python3*/site-packages",
)

# Run by the nsscache interpreter. Imports the factory first, as nsscache does (that
# import is what fires the hook), then looks at what is registered and where the
# package comes from. Prints one JSON object.
_PROBE = r"""
import json, os, sys
if sys.path and sys.path[0] == "":  # -c: stand in for the script's own directory, as for nsscache
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[1]))
out = {"version": "%d.%d" % sys.version_info[:2], "executable": sys.executable,
       "no_site": bool(sys.flags.no_site), "registered": False,
       "venv": sys.prefix != getattr(sys, "base_prefix", sys.prefix),
       # The .pth (or .start) imports the hook module at start-up, if Python read it.
       "hook_loaded": "_nss_cache_coreweave_hook" in sys.modules}
try:
    from nss_cache.sources import source_factory
    out["nss_cache"] = True
    out["registered"] = "coreweave" in getattr(source_factory, "_source_implementations", {})
except Exception as e:
    out["nss_cache"] = False
    out["nss_cache_error"] = "%s: %s" % (type(e).__name__, e)
try:
    import nss_cache_coreweave as p
    out["package_dir"] = os.path.dirname(os.path.abspath(p.__file__))
    out["package_version"] = getattr(p, "__version__", None)
    out["pth"] = os.path.isfile(os.path.join(os.path.dirname(out["package_dir"]), "nss_cache_coreweave.pth"))
except Exception as e:
    out["package_error"] = "%s: %s" % (type(e).__name__, e)
out["hook_disabled"] = os.environ.get("NSS_CACHE_COREWEAVE_DISABLE_HOOK", "") not in ("", "0")
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class Registration:
    """What the interpreter running ``nsscache`` sees. ``problem`` is None when all is well."""

    nsscache: Optional[str]
    interpreter: Tuple[str, ...] = ()  # the command line of the script's first line
    python_version: Optional[str] = None  # "3.11"
    python_executable: Optional[str] = None  # its sys.executable
    nss_cache_importable: bool = False
    package_dir: Optional[str] = None  # where that interpreter imports nss_cache_coreweave from
    package_version: Optional[str] = None
    registered: bool = False  # "coreweave" in nsscache's source factory
    installed_elsewhere: Tuple[str, ...] = ()  # other site directories holding the package
    problem: Optional[str] = None
    details: Tuple[str, ...] = field(default_factory=tuple)  # stderr lines of the probe (warnings)

    @property
    def ok(self) -> bool:
        return self.problem is None


def find_nsscache() -> Optional[str]:
    """The ``nsscache`` a scheduled run uses: the one beside this interpreter (a virtualenv
    holding both, or /usr/bin for the distribution's Python), else the first on :data:`CRON_PATH`."""
    beside = os.path.join(os.path.dirname(sys.executable), "nsscache")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("nsscache", path=CRON_PATH)


def script_interpreter(path: str) -> List[str]:
    """The command line that runs the script at path, from its ``#!`` line, as Linux does
    (the interpreter, plus everything after it as one argument). Also understands pip's
    ``#!/bin/sh`` + ``'''exec' "python" "$0" "$@"`` form for long paths. Raises OSError or
    ValueError."""
    with open(path, "rb") as f:
        head = f.read(4096)
    lines = head.split(b"\n")
    if not lines[0].startswith(b"#!"):
        raise ValueError("%s does not start with #!" % path)
    line = lines[0][2:].decode("utf-8", "surrogateescape").strip()
    if not line:
        raise ValueError("%s has an empty #! line" % path)
    cut = min((i for i in (line.find(" "), line.find("\t")) if i >= 0), default=len(line))
    interpreter, argument = line[:cut], line[cut:].strip(" \t")
    argv = [interpreter] + ([argument] if argument else [])
    if os.path.basename(interpreter) == "sh" and len(lines) > 1 and lines[1].startswith(b"'''exec' "):
        # pip/distlib: #!/bin/sh \n '''exec' "/long path/bin/python" "$0" "$@"
        rest = lines[1][len(b"'''exec' "):].decode("utf-8", "surrogateescape")
        if rest.startswith('"') and '"' in rest[1:]:
            argv = [rest[1:rest.index('"', 1)]]
    return argv


def installed_copies(patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Site directories that hold the package: those matching patterns (globs), by default
    :data:`SEARCH_PATTERNS` plus this interpreter's own site directories."""
    dirs = []
    for pattern in SEARCH_PATTERNS if patterns is None else patterns:
        dirs.extend(sorted(glob.glob(pattern)))
    if patterns is None:
        import site
        import sysconfig

        try:
            dirs.extend(site.getsitepackages())
        except AttributeError:  # very old virtualenvs
            pass
        dirs.append(sysconfig.get_path("purelib"))
    found = []
    seen = set()
    for d in dirs:
        real = os.path.realpath(d)
        if real in seen:
            continue
        seen.add(real)
        if os.path.isfile(os.path.join(d, PACKAGE, "__init__.py")) or os.path.isfile(os.path.join(d, PTH)):
            found.append(d)
    return found


def _python_of(site_dir: str) -> str:
    """'Python 3.11 (/usr/local/lib/python3.11/dist-packages)' or just the directory."""
    for part in site_dir.split(os.sep):
        if part.startswith("python3.") and part[len("python3."):].isdigit():
            return "Python %s (%s)" % (part[len("python"):], site_dir)
    return site_dir


def _probe_env() -> dict:
    env = {"PATH": CRON_PATH}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    return env


def check_registration(
    nsscache: Optional[str] = None,
    *,
    timeout: float = 30.0,
    search_patterns: Optional[Sequence[str]] = None,
) -> Registration:
    """Check that the interpreter running ``nsscache`` (default :func:`find_nsscache`) registers
    the ``coreweave`` source. Never raises for a broken install: the result's ``problem`` says it.
    search_patterns: where to look for copies of the package installed for other Pythons
    (default :data:`SEARCH_PATTERNS` and this interpreter's site directories)."""
    if nsscache is None:
        nsscache = find_nsscache()
        if nsscache is None:
            return Registration(
                nsscache=None,
                problem="nsscache not found (not beside %s, not on %s): install the distribution's "
                "nsscache package, or nsscache into this package's virtualenv" % (sys.executable, CRON_PATH),
            )
    try:
        argv = script_interpreter(nsscache)
    except (OSError, ValueError) as e:
        return Registration(nsscache=nsscache, problem="cannot read the interpreter of %s: %s" % (nsscache, e))
    interpreter = argv[0]
    base = Registration(nsscache=nsscache, interpreter=tuple(argv))
    if os.path.basename(interpreter) != "env" and not os.path.isfile(interpreter):
        return _with(
            base,
            problem="%s runs %s, which does not exist (removed by an OS upgrade?): reinstall nsscache"
            % (nsscache, interpreter),
        )
    probed = _run_probe(base, argv, nsscache, timeout)
    if isinstance(probed, Registration):
        return probed
    details, seen = probed
    reg = _with(
        base,
        details=details,
        python_version=seen.get("version"),
        python_executable=seen.get("executable"),
        nss_cache_importable=bool(seen.get("nss_cache")),
        package_dir=seen.get("package_dir"),
        package_version=seen.get("package_version"),
        registered=bool(seen.get("registered")),
    )
    if reg.registered:
        return reg
    return _diagnose(reg, seen, search_patterns)


def _run_probe(base: Registration, argv: List[str], nsscache: str,
               timeout: float) -> Union[Registration, Tuple[Tuple[str, ...], dict]]:
    """Run the registration probe with nsscache's interpreter: (its stderr lines, what it
    saw), or the Registration naming why it could not run."""
    try:
        result = subprocess.run(
            argv + ["-c", _PROBE, nsscache],
            stdin=subprocess.DEVNULL,
            cwd="/",
            capture_output=True,
            text=True,
            errors="replace",
            env=_probe_env(),
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        return _with(base, problem="cannot run %s (the interpreter of %s): %s" % (" ".join(argv), nsscache, e))
    details = tuple(line for line in result.stderr.splitlines() if line.strip())
    last = result.stdout.strip().splitlines()[-1:] or [""]
    try:
        seen = json.loads(last[0])
        if not isinstance(seen, dict):
            raise ValueError("not an object")
    except ValueError:
        tail = "; ".join(details[-3:]) or "no output"
        return _with(
            base,
            details=details,
            problem="%s (the interpreter of %s) failed to run the registration probe (exit %d): %s"
            % (" ".join(argv), nsscache, result.returncode, tail),
        )
    return details, seen


def _with(reg: Registration, **changes) -> Registration:
    values = dict(reg.__dict__)
    values.update(changes)
    return Registration(**values)


def _diagnose(reg: Registration, seen: dict, search_patterns: Optional[Sequence[str]]) -> Registration:
    python = "%s (Python %s)" % (reg.python_executable or reg.interpreter[0], reg.python_version or "?")
    head = "%s runs %s" % (reg.nsscache, python)
    consequence = (
        "nsscache will fail with \"source not implemented: '%s'\" (or \"no source implementations exist\")"
        % SOURCE_NAME
    )
    if not reg.nss_cache_importable:
        return _with(
            reg,
            problem="%s, which cannot import nsscache's nss_cache (%s): reinstall nsscache"
            % (head, seen.get("nss_cache_error", "unknown error")),
        )
    if reg.package_dir is None:
        elsewhere = tuple(installed_copies(search_patterns))
        python_cmd = reg.python_executable or reg.interpreter[0]
        if seen.get("venv"):
            fix = "`%s -m pip install %s`" % (python_cmd, DIST)
        else:
            fix = "`%s -m pip install --break-system-packages %s`, or install the %s .deb" % (python_cmd, DIST, DIST)
        if elsewhere:
            where = ", ".join(_python_of(d) for d in elsewhere)
            problem = (
                "%s, which cannot import %s, so %s. The package is installed for another Python: %s "
                "(installed before an OS or Python upgrade, or with another pip?). Install it for Python %s: %s"
                % (head, PACKAGE, consequence, where, reg.python_version or "?", fix)
            )
        else:
            problem = "%s, which cannot import %s, so %s. Install it for that Python: %s" % (
                head,
                PACKAGE,
                consequence,
                fix,
            )
        return _with(reg, installed_elsewhere=elsewhere, problem=problem)
    # Importable, but the hook did not register the source.
    if seen.get("no_site"):
        why = "the interpreter runs without site (-S), so %s is never read" % PTH
    elif seen.get("hook_disabled"):
        why = "NSS_CACHE_COREWEAVE_DISABLE_HOOK is set"
    elif not seen.get("pth"):
        why = "%s is missing beside it (a partial install: reinstall %s)" % (PTH, DIST)
    elif not seen.get("hook_loaded"):
        why = (
            "%s beside it was not read at start-up: %s is not a site directory of this Python "
            "(reached through PYTHONPATH or a .pth line?); install the package into this Python"
            % (PTH, os.path.dirname(reg.package_dir))
        )
    else:
        # The hook's WARNING (logging's last-resort handler prints it, then the traceback).
        warnings = [line.strip() for line in reg.details if "cannot register the coreweave" in line]
        why = "registration failed: %s" % (warnings[-1] if warnings else "; ".join(reg.details[-3:]) or "no message")
    return _with(
        reg,
        problem="%s, which imports %s %s from %s but does not register the '%s' source (%s), so %s"
        % (head, PACKAGE, reg.package_version or "?", reg.package_dir, SOURCE_NAME, why, consequence),
    )


def registration_problem(nsscache: Optional[str] = None, *, timeout: float = 30.0) -> Optional[str]:
    """None when the ``nsscache`` command (default :func:`find_nsscache`) will find the source, else
    a one-paragraph message saying why not and what to do."""
    return check_registration(nsscache, timeout=timeout).problem


def main(argv: Optional[Sequence[str]] = None) -> int:
    """python3 -m nss_cache_coreweave.install [NSSCACHE]: 0 when the source is registered, else 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or any(a.startswith("-") for a in args):
        sys.stderr.write("usage: python3 -m nss_cache_coreweave.install [PATH-OF-NSSCACHE]\n")
        return 2
    reg = check_registration(args[0] if args else None)
    if reg.ok:
        sys.stdout.write(
            "ok: %s runs %s (Python %s), which registers the '%s' source (%s %s from %s)\n"
            % (reg.nsscache, reg.python_executable, reg.python_version, SOURCE_NAME, PACKAGE,
               reg.package_version, reg.package_dir)
        )
        return 0
    sys.stdout.write("problem: %s\n" % reg.problem)
    return 1


if __name__ == "__main__":
    sys.exit(main())
