"""When to rebuild the iptables chain whole instead of editing it rule by rule.

For chains of N RETURN rules and a config that adds k of them spread through the chain,
times one ``iptables-restore --noflush`` of (a) the planner's positional edits and (b) a
flush and re-append of the whole chain, on both backends, in a throwaway network
namespace.  iptables-nft pays for each positional insert in proportion to the chain's
length, so edits win for small k and a rebuild for large k; the core's
``REBUILD_BUDGET`` is chosen from these figures.  Writes
benchmarks/results/iptables-rebuild.txt.  Run as root: benchmarks/run.sh rebuild
"""

from __future__ import annotations

import ipaddress
import platform
import subprocess
import time
from pathlib import Path

from integration.topology import namespace

from masq.core.addresses import IPNetwork, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save, render_restore
from masq.core.iptables.plan import REBUILD_BUDGET, plan, replace_ops
from masq.core.iptables.rules import RulesetOptions, desired_ruleset

OUT = Path(__file__).resolve().parent / "results" / "iptables-rebuild.txt"
CHAIN = "IP-MASQ-AGENT"
CASES = {
    "nft": [
        (2_000, (0.05, 0.5)),
        (10_000, (0.05, 0.1, 0.25, 0.5)),
        (50_000, (0.005, 0.01, 0.05, 0.15, 0.9)),
    ],
    "legacy": [(10_000, (0.05, 0.25, 0.5)), (50_000, (0.05, 0.9))],
}


def nets(count: int) -> list[IPNetwork]:
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [ipaddress.IPv4Network((base + i * 256, 24)) for i in range(count)]


class Netns:
    """One backend's iptables in a namespace of the tests' harness."""

    def __init__(self, name: str, backend: str) -> None:
        self.name = name
        self.backend = backend

    def run(self, *argv: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def restore(self, script: str) -> float:
        start = time.perf_counter()
        self.run(f"iptables-{self.backend}-restore", "--noflush", "-w", stdin=script)
        return time.perf_counter() - start

    def reset(self, config: MasqConfig) -> None:
        self.run(f"iptables-{self.backend}", "-t", "nat", "-F")
        self.run(f"iptables-{self.backend}", "-t", "nat", "-X")
        desired = desired_ruleset(config, "ipv4", RulesetOptions())
        self.restore(render_restore(plan(desired, parse_save("", CHAIN, "ipv4").unwrap())))


def case(ns: Netns, total: int, fraction: float) -> str:
    every = nets(total)
    k = max(1, int(total * fraction))
    step = max(1, total // k)
    old = [n for i, n in enumerate(every) if i % step != 0][: total - k]
    before = MasqConfig(non_masquerade_cidrs=sorted_cidrs(old), cidr_limit=10**6)
    after = MasqConfig(non_masquerade_cidrs=sorted_cidrs(every), cidr_limit=10**6)
    desired = desired_ruleset(after, "ipv4", RulesetOptions())
    seconds = {}
    for mode in ("edits", "rebuild"):
        ns.reset(before)
        saved = ns.run(f"iptables-{ns.backend}-save", "-t", "nat")
        observed = parse_save(saved, CHAIN, "ipv4").unwrap()
        ops = plan(desired, observed) if mode == "edits" else replace_ops(desired, observed)
        seconds[mode] = (len(ops), ns.restore(render_restore(ops)))
    (n_edit, t_edit), (n_all, t_all) = seconds["edits"], seconds["rebuild"]
    return (
        f"{ns.backend:6s} {total:7,d} rules  {k:6,d} added ({fraction:4.0%}):"
        f"  edits {n_edit:6,d} ops {t_edit:6.2f} s   rebuild {n_all:6,d} ops {t_all:5.2f} s"
    )


def main() -> None:
    lines = [
        f"# iptables chain: positional edits vs whole-chain rebuild, {time.strftime('%Y-%m-%d')}",
        f"# kernel {platform.release()}; a shared 2-core machine (figures, not thresholds)",
        f"# the agent rebuilds when chain edits x chain length > REBUILD_BUDGET={REBUILD_BUDGET:,}",
    ]
    for backend, cases in CASES.items():
        with namespace(f"bench-rebuild-{backend}") as name:
            ns = Netns(name, backend)
            for total, fractions in cases:
                for fraction in fractions:
                    lines.append(case(ns, total, fraction))
                    print(lines[-1], flush=True)
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
