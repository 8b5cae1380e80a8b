"""Fault helpers run as their own processes; stdlib only, run with ``python -S``.

    python -S faults.py hold-lock LOCKFILE SECONDS
        take the xtables lock (flock, as iptables does) for SECONDS; prints
        "held T" and "released T" (CLOCK_MONOTONIC).
    python -S faults.py restore-wrapper STYLE COUNTER LOG REAL [ARGS...]
        stands in for the agents' writing binary on their PATH: while COUNTER holds a
        positive number, decrement it and fail transiently; otherwise exec REAL.  STYLE
        iptables (for iptables-restore): every call is a write, and fails as a held lock
        does (exit 4).  STYLE nft: only batches (``-f``) are writes, and fail as nft does
        when the kernel is short of netlink buffers (exit 1, "No buffer space
        available", which the agent retries); listings pass straight through.
        Every write appends "fail T" or "pass T" to LOG.

The lock file is the soak's own (``XTABLES_LOCKFILE``, which iptables 1.8 reads), shared by
the agents and the foreign writer of one run and by nothing else on the machine.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

RESOURCE_PROBLEM = 4  # iptables' exit code for a held lock
FAILURES = {  # style -> (stderr, exit code) of one transient failure
    "iptables": (
        "Another app is currently holding the xtables lock (soak fault)",
        RESOURCE_PROBLEM,
    ),
    "nft": ("netlink: Error: Could not process rule: No buffer space available", 1),
}


def hold_lock(lockfile: str, seconds: float) -> int:
    fd = os.open(lockfile, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print(f"held {time.monotonic():.6f}", flush=True)
    time.sleep(seconds)
    fcntl.flock(fd, fcntl.LOCK_UN)
    print(f"released {time.monotonic():.6f}", flush=True)
    return 0


def restore_wrapper(style: str, counter: str, log: str, real: str, args: list[str]) -> int:
    if style == "nft" and "-f" not in args:
        os.execv(real, [real, *args])
    with open(counter, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        left = int(f.read().strip() or 0)
        if left > 0:
            f.seek(0)
            f.truncate()
            f.write(f"{left - 1}\n")
        outcome = "fail" if left > 0 else "pass"
        with open(log, "a") as out:
            out.write(f"{outcome} {time.monotonic():.6f}\n")
    if outcome == "fail":
        message, code = FAILURES[style]
        print(message, file=sys.stderr)
        return code
    os.execv(real, [real, *args])


def main(argv: list[str]) -> int:
    if argv[:1] == ["hold-lock"]:
        return hold_lock(argv[1], float(argv[2]))
    if argv[:1] == ["restore-wrapper"]:
        return restore_wrapper(argv[1], argv[2], argv[3], argv[4], argv[5:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
