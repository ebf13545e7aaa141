"""conf/: the files an operator installs on a login node, each checked by the tool that reads it
(conf/nsscache.conf by nsscache's own loader: tests/integration/test_docs.py; the nsswitch and
sshd snippets also through a real libnss-cache and sshd: tests/e2e)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from support.host import REPO
from support.sshd_check import sshd, sshd_effective, wrap

CONF = REPO / "conf"
SSHD_SNIPPET = CONF / "sshd_config.d" / "nsscache-coreweave.conf"
CRON = CONF / "cron.d" / "nsscache-coreweave"
UNITS = CONF / "systemd"
KEYS_COMMAND = "/usr/local/sbin/nsscache-coreweave-keys %u %f"


# --- sshd ------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["minimal", "debian"])
def test_sshd_accepts_the_snippet(tmp_path, base):
    alice = sshd_effective(SSHD_SNIPPET, tmp_path, user="alice", base=base)
    root = sshd_effective(SSHD_SNIPPET, tmp_path, user="root", base=base)

    assert alice["authorizedkeyscommand"] == KEYS_COMMAND
    assert alice["authorizedkeyscommanduser"] == "nsscache-keys"
    assert alice["authorizedkeysfile"] == "none"
    assert alice["usepam"] == "yes"
    assert root["authorizedkeysfile"] == ".ssh/authorized_keys"


def test_sshd_check_is_not_vacuous(tmp_path):
    broken = tmp_path / "broken.conf"
    broken.write_text("AuthorizedKeysCommandUserr nobody\n")

    result = sshd(wrap(broken, tmp_path), "-t")

    assert result.returncode != 0 and "Bad configuration option" in result.stderr


# --- systemd ---------------------------------------------------------------------------------


def _units_with_stub_program(tmp_path):
    """Copies of the units whose ExecStart programs are stub executables (systemd-analyze checks that
    they exist; the real ones are checked in tests/packaging/test_deb.py, after dpkg -i)."""
    (tmp_path / "bin").mkdir()
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS.iterdir():
        text = unit.read_text()
        for program in ("nsscache", "nsscache-coreweave"):
            stub = tmp_path / "bin" / program
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
            text = text.replace(f"ExecStart=/usr/bin/{program} ", f"ExecStart={stub} ")
        (units / unit.name).write_text(text)
    return units


def _verify(*paths):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)", pytrace=False)
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ["nsscache-coreweave", "nsscache-coreweave-slurm-sync"])
def test_systemd_units_verify(tmp_path, name):
    units = _units_with_stub_program(tmp_path)

    result = _verify(units / f"{name}.timer", units / f"{name}.service")

    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_verify_is_not_vacuous(tmp_path):
    bad = tmp_path / "nsscache-coreweave.timer"
    bad.write_text("[Timer]\nRandomizedDelaySec=soon\n")

    result = _verify(bad)

    assert result.returncode != 0 and "Failed to parse sec value" in result.stderr


def _sections(path):
    """systemd unit file -> {section: {key: [values]}} (systemd's syntax is not ConfigParser's)."""
    sections, current = {}, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_timer_runs_the_service_with_a_randomized_delay():
    timer = _sections(UNITS / "nsscache-coreweave.timer")
    service = _sections(UNITS / "nsscache-coreweave.service")

    assert "Unit" not in timer["Timer"]  # implicit: nsscache-coreweave.service
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Timer"]["OnBootSec"]
    assert re.fullmatch(r"[1-9]\d*(s|min)?", timer["Timer"]["RandomizedDelaySec"][0])
    assert timer["Install"]["WantedBy"] == ["timers.target"]
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["ExecStart"][0].split()[:2] == ["/usr/bin/nsscache", "update"]
    assert "Install" not in service  # started by the timer only


# --- systemd: the sandbox (docs/hardening.md) ---------------------------------------------------

SERVICES = ("nsscache-coreweave.service", "nsscache-coreweave-slurm-sync.service")
MAX_EXPOSURE = 5.0  # the hardening target: `systemd-analyze security` must rate each service at most this


def _exposure(unit: Path) -> float:
    """The overall exposure level `systemd-analyze security --offline=true` gives the unit file."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (apt-get install systemd)", pytrace=False)
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                            capture_output=True, text=True, check=False)
    found = re.findall(rf"Overall exposure level for {re.escape(unit.name)}: (\d+(?:\.\d+)?)", result.stdout)
    assert result.returncode == 0 and len(found) == 1, result.stdout + result.stderr
    return float(found[0])


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_security_exposure_is_at_most_5(tmp_path, name):
    units = _units_with_stub_program(tmp_path)

    assert _exposure(units / name) <= MAX_EXPOSURE


def test_systemd_security_check_is_not_vacuous(tmp_path):
    # The same service without its [Service] sandbox lines rates far worse.
    bare = tmp_path / "nsscache-coreweave.service"
    keep = ("Type=", "ExecStart=", "TimeoutStartSec=", "Nice=")
    lines = (UNITS / bare.name).read_text().splitlines()
    service = lines.index("[Service]")
    kept = [line for line in lines[service + 1:] if line.startswith(keep)]
    bare.write_text("\n".join(lines[:service + 1] + kept) + "\n")

    assert _exposure(bare) > 8.0


def _writable(service: dict):
    """What the sandbox of a ProtectSystem=strict service leaves writable: [(path, optional)] from
    ReadWritePaths= ("-": skipped when missing) and the *Directory= settings, and the ReadOnlyPaths=."""
    rw = []
    for value in service.get("ReadWritePaths", []):
        for entry in value.split():
            rw.append((os.path.normpath(entry.lstrip("-")), entry.startswith("-")))
    for key, base in (("StateDirectory", "/var/lib"), ("RuntimeDirectory", "/run"),
                      ("CacheDirectory", "/var/cache"), ("LogsDirectory", "/var/log")):
        rw += [(os.path.join(base, d), False) for value in service.get(key, []) for d in value.split()]
    ro = [os.path.normpath(e.lstrip("-")) for value in service.get("ReadOnlyPaths", []) for e in value.split()]
    return rw, ro


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _covering(path: str, service: dict):
    """The ReadWritePaths=/StateDirectory= entry that makes path writable in the unit's sandbox,
    or None. The longest matching entry wins, as in systemd; ReadOnlyPaths= count against it."""
    rw, ro = _writable(service)
    real = os.path.realpath(path)  # /var/run/nsscache is /run/nsscache, as systemd resolves it
    best = max((e for e in rw if _under(real, e[0])), key=lambda e: len(e[0]), default=None)
    worst = max((p for p in ro if _under(real, p)), key=len, default=None)
    if best is None or (worst is not None and len(worst) >= len(best[0])):
        return None
    return best


def _paths_written():
    """Where the configured nsscache and this package write with conf/nsscache.conf, read with
    nsscache's own loader and this package's defaults: {service: {path: why}} (a directory wherever a
    file is created beside others or replaced by rename). No path is written here; nothing is copied."""
    from nss_cache import config as nss_config
    from nss_cache.lock import PidFile

    from nss_cache_coreweave import slurm, state
    from nss_cache_coreweave.config import KEYS

    conf = nss_config.Config({})
    conf.config_file = str(CONF / "nsscache.conf")
    nss_config.LoadConfig(conf)
    service = _sections(UNITS / "nsscache-coreweave.service")["Service"]
    program = os.path.basename(service["ExecStart"][0].split()[0])
    update, sync = {}, {}

    def writes(where, path, why):
        where.setdefault(path, []).append(why)

    # nsscache's lock: its lockfile option, else STATE_DIR/<the program's name>
    writes(update, conf.lockfile or os.path.join(PidFile.STATE_DIR, program), "nsscache's lock file")
    writes(update, conf.timestamp_dir, "nsscache's timestamps (temporary files renamed)")
    for name in conf.maps:
        writes(update, conf.options[name].cache["dir"], f"the {name} cache, its index and temporary files")
        source = conf.options[name].source
        state_dir = source.get("state_dir", KEYS["state_dir"])
        writes(update, state_dir, f"{state.STATE_FILE} (a temporary file renamed)")
        writes(sync, state_dir, f"{slurm.STATE_FILE}, {slurm.LOCK_FILE}")
        metrics = source.get("metrics_file", KEYS["metrics_file"])
        if metrics:
            writes(update, os.path.dirname(metrics), "coreweave_metrics_file (a temporary file renamed)")
    # The commented example, which an operator enables by removing the #.
    example = re.search(r"(?m)^#\s*coreweave_metrics_file\s*=\s*(\S+)", (CONF / "nsscache.conf").read_text())
    assert example, "conf/nsscache.conf lost its coreweave_metrics_file example"
    writes(update, os.path.dirname(example.group(1)), "the coreweave_metrics_file example")
    update = {path: "; ".join(sorted(set(why))) for path, why in update.items()}
    sync = {path: "; ".join(sorted(set(why))) for path, why in sync.items()}
    return {"nsscache-coreweave.service": update, "nsscache-coreweave-slurm-sync.service": sync}


@pytest.mark.parametrize("name", SERVICES)
def test_sandbox_leaves_writable_every_path_the_service_writes(name):
    service = _sections(UNITS / name)["Service"]
    written = _paths_written()[name]

    assert service["ProtectSystem"] == ["strict"]
    assert written
    for path, why in written.items():
        entry = _covering(path, service)
        assert entry, f"{name}: {path} ({why}) is read-only in the sandbox"
        if entry[1]:  # "-": systemd skips it when missing, and the path stays read-only
            creates = [c for c in service.get("ExecStartPre", []) if c.split()[1:] == [entry[0]]]
            optional = "metrics_file" in why
            assert optional or creates and creates[0].startswith("+/usr/bin/touch "), (
                f"{name}: {path} is only writable if it exists before the sandbox is set up")
    # ... and not more than that: the rest of the system, /run and /var/lib stay read-only.
    for path in ("/usr/bin/x", "/var/lib/x", "/run/x", "/run/munge/munge.socket.2", "/root/x", "/boot/x"):
        assert _covering(path, service) is None, f"{name}: {path} is writable"
    if name.endswith("slurm-sync.service"):
        assert _covering("/etc/passwd.cache", service) is None


def test_sandbox_path_check_is_not_vacuous():
    service = _sections(UNITS / "nsscache-coreweave.service")["Service"]
    without_etc = dict(service, ReadWritePaths=[v.replace("/etc ", "") for v in service["ReadWritePaths"]])
    without_state = {k: v for k, v in service.items() if k != "StateDirectory"}
    run_read_only = dict(service, ReadWritePaths=["/etc /var/lib/nsscache"], ReadOnlyPaths=["/run"])

    assert _covering("/etc", service) and not _covering("/etc", without_etc)
    assert _covering("/var/lib/nsscache", service) and not _covering("/var/lib/nsscache", without_state)
    assert _covering("/var/run/nsscache", service) and not _covering("/var/run/nsscache", run_read_only)


# --- cron ------------------------------------------------------------------------------------

FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _valid_field(text, low, high):
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base == "*":
            continue
        first, _, last = base.partition("-")
        numbers = [first] + ([last] if last else [])
        if not all(n.isdigit() and low <= int(n) <= high for n in numbers):
            return False
    return True


def _cron_jobs():
    """(schedule fields, user, command) of each job line; environment lines are skipped."""
    text = CRON.read_text()
    assert text.endswith("\n"), "cron ignores a last line without a newline"
    jobs = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#") or re.match(r"^[A-Za-z_]+=", line):
            continue
        fields = line.split(None, 6)
        assert len(fields) == 7, f"not 5 time fields, a user and a command: {line!r}"
        jobs.append((fields[:5], fields[5], fields[6]))
    return jobs


def test_cron_file_syntax():
    # Debian's cron has no syntax checker: check what cron(8) and crontab(5) require.
    jobs = _cron_jobs()
    mode = CRON.stat().st_mode

    assert jobs
    assert "." not in CRON.name  # run-parts naming: cron ignores /etc/cron.d files with a dot
    assert not mode & (stat.S_IWGRP | stat.S_IWOTH)  # cron ignores group/world-writable files
    for schedule, user, command in jobs:
        for value, (name, low, high) in zip(schedule, FIELDS):
            assert _valid_field(value, low, high), f"bad {name} field {value!r}"
        assert user == "root"
        assert not re.search(r"(?<!\\)%", command), "an unescaped % is a newline to cron"
        assert subprocess.run(["sh", "-n", "-c", command], check=False).returncode == 0


def test_cron_command_sleeps_up_to_two_minutes_then_runs_a_full_update(tmp_path):
    # Run the job's command with stub sleep and nsscache (shuf is the real one).
    (_, _, command), = _cron_jobs()
    log = tmp_path / "log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sleep", "nsscache"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        (bin_dir / name).chmod(0o755)
    path = f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"

    for _ in range(5):
        assert subprocess.run(["sh", "-c", command], env={"PATH": path}, check=False).returncode == 0

    calls = log.read_text().splitlines()
    assert calls[1::2] == ["nsscache update --full"] * 5
    delays = [int(c.split()[1]) for c in calls[0::2]]
    assert [c.split()[0] for c in calls[0::2]] == ["sleep"] * 5 and all(0 <= d <= 120 for d in delays)


# --- nsswitch --------------------------------------------------------------------------------


def test_nsswitch_snippet_puts_local_files_before_the_cache():
    lines = [line for line in (CONF / "nsswitch.conf.snippet").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    entries = {}
    for line in lines:
        database, _, sources = line.partition(":")
        entries[database.strip()] = sources.split()

    assert entries == {"passwd": ["files", "cache"], "group": ["files", "cache"], "shadow": ["files", "cache"]}
