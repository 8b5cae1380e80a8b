"""A kube-proxy-like foreign writer of the nat table; stdlib only, run with ``python -S``.

Every PERIOD seconds it rewrites its own chains (``KUBE-SOAK-*``, a few hundred rules whose
services come and go between generations) with one ``iptables-restore --noflush``, as
kube-proxy does: declaring a chain flushes it, stale chains are declared and deleted.  It
keeps its hooks the way kube-proxy keeps its jumps (``-C``, then insert or append): one
POSTROUTING jump before the agent's and one after it, both to a chain that masquerades only
packets carrying mark 0x4000, which the prober never sets, so the masquerade model holds
whatever the order.  The content of generation N is ``generation(seed, N)``, so the checker
can compare any snapshot with what was written.

    python -S kubeproxy.py BACKEND SEED PERIOD LOG
        LOG gets one line per generation: "N start end restore-exit hooks-exit".
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

PREFIX = "KUBE-SOAK-"
SERVICES = "KUBE-SOAK-SERVICES"
POSTROUTING = "KUBE-SOAK-POSTROUTING"
MARK_MASQ = "KUBE-SOAK-MARK-MASQ"
MARK = "0x4000"

# (built-in chain, comment, target, insert first or append)
HOOKS: tuple[tuple[str, str, str, bool], ...] = (
    ("PREROUTING", "soak kube-proxy services", SERVICES, True),
    ("OUTPUT", "soak kube-proxy services", SERVICES, True),
    ("POSTROUTING", "soak kube-proxy before", POSTROUTING, True),
    ("POSTROUTING", "soak kube-proxy after", POSTROUTING, False),
)


def hook_args(comment: str, target: str) -> list[str]:
    return ["-m", "comment", "--comment", comment, "-j", target]


def hook_lines() -> list[str]:
    """The hooks as iptables-save prints them."""
    return [f'-A {chain} -m comment --comment "{c}" -j {t}' for chain, c, t, _ in HOOKS]


def generation(seed: int, gen: int) -> dict[str, list[str]]:
    """Chain name -> its rules, as iptables-save prints them, for generation ``gen``."""
    rng = random.Random(f"kube-proxy/{seed}/{gen}")
    chains: dict[str, list[str]] = {
        SERVICES: [],
        POSTROUTING: [
            f"-A {POSTROUTING} -m mark ! --mark {MARK}/{MARK} -j RETURN",
            f"-A {POSTROUTING} -j MARK --set-xmark {MARK}/0x0",
            f'-A {POSTROUTING} -m comment --comment "soak kube-proxy masquerade"'
            " -j MASQUERADE --random-fully",
        ],
        MARK_MASQ: [f"-A {MARK_MASQ} -j MARK --set-xmark {MARK}/{MARK}"],
    }
    for i in sorted(rng.sample(range(200), rng.randint(60, 120))):
        svc = f"KUBE-SOAK-SVC-{i:03d}"
        chains[SERVICES].append(
            f"-A {SERVICES} -d 10.96.{i // 250}.{i % 250 + 1}/32 -p tcp"
            f' -m comment --comment "soak/svc-{i} gen {gen}" -m tcp --dport 80 -j {svc}'
        )
        endpoints = rng.randint(1, 2)
        chains[svc] = []
        for j in range(endpoints):
            sep = f"KUBE-SOAK-SEP-{i:03d}-{j}"
            pick = (
                " -m statistic --mode random --probability 0.50000000000"
                if j + 1 < endpoints
                else ""
            )
            chains[svc].append(f"-A {svc}{pick} -j {sep}")
            ip = f"10.245.{i}.{j + 1}"
            chains[sep] = [
                f"-A {sep} -s {ip}/32 -j {MARK_MASQ}",
                f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:8080",
            ]
    chains[SERVICES].append(f'-A {SERVICES} -m comment --comment "soak-generation {gen}" -j RETURN')
    return chains


def restore_script(chains: dict[str, list[str]], stale: set[str]) -> str:
    lines = ["*nat"]
    lines += [f":{name} - [0:0]" for name in sorted(chains.keys() | stale)]
    lines += [rule for name in sorted(chains) for rule in chains[name]]
    lines += [f"-X {name}" for name in sorted(stale - chains.keys())]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def ensure_hooks(iptables: str) -> int:
    worst = 0
    for chain, comment, target, first in HOOKS:
        rule = hook_args(comment, target)
        base = [iptables, "--wait=5", "-t", "nat"]
        check = subprocess.run([*base, "-C", chain, *rule], capture_output=True, check=False)
        if check.returncode == 0:
            continue
        where = ["-I", chain, "1"] if first else ["-A", chain]
        done = subprocess.run([*base, *where, *rule], capture_output=True, check=False)
        worst = max(worst, done.returncode)
    return worst


def churn(period: float, log: str, write: Callable[[int], tuple[int, int]]) -> int:
    """Write generation 1, 2, ... every ``period`` seconds until SIGTERM or SIGINT.

    ``write(gen)`` returns the write's exit code and the hooks' (0 if none); LOG gets
    "N start end write-exit hooks-exit" per generation.  Shared with ``kubeproxy_nft``.
    """
    stopped = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    gen = 0
    with open(log, "a") as out:
        while not stopped:
            gen += 1
            start = time.monotonic()
            rc, hooks = write(gen)
            out.write(f"{gen} {start:.6f} {time.monotonic():.6f} {rc} {hooks}\n")
            out.flush()
            while not stopped and time.monotonic() < start + period:
                time.sleep(0.02)  # short naps: a stop is prompt, never mid-write
    return 0


def main(argv: list[str]) -> int:
    backend, seed, period, log = argv[0], int(argv[1]), float(argv[2]), argv[3]
    restore = f"iptables-{backend}-restore"
    written: set[str] = set()  # chains of the last generation that was applied

    def write(gen: int) -> tuple[int, int]:
        nonlocal written
        chains = generation(seed, gen)
        done = subprocess.run(
            [restore, "--noflush", "--wait=5"],
            input=restore_script(chains, written).encode(),
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            written = set(chains)
        return done.returncode, ensure_hooks(f"iptables-{backend}")

    return churn(period, log, write)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
