"""Run one command and measure it: wall time, CPU time and peak RSS of that process alone.

    python -S launch.py RESULT.json LOG -- COMMAND [ARGS...]

Why a launcher: Linux reports a child's ``ru_maxrss`` as at least the resident size
its parent had when it forked (exec records the old address space's high-water mark),
so a child spawned straight from a big runner looks as big as the runner. This
script is tiny (``-S``, stdlib only, ~8 MB): it forks and execs COMMAND (stdin
inherited, stdout and stderr to LOG), waits with ``os.wait4`` and writes
``{"wall", "user", "sys", "maxrss_kb", "exit"}`` to RESULT.json. Wall time runs from
just before the fork to the end of the wait: it includes COMMAND's interpreter
start-up and exit.
"""

import json
import os
import sys
import time


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, log_path, command = argv[0], argv[1], argv[3:]
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: only exec, nothing that allocates
        try:
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.execv(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    os.close(log)
    result = {
        "wall": wall,
        "user": usage.ru_utime,
        "sys": usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,
        "exit": os.waitstatus_to_exitcode(status),
    }
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
