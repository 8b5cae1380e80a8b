"""Time to merge and plan 10,000 CIDRs against an observed chain of 10,000 rules.

Writes figures to benchmarks/results/core.txt (target: merge + desired + plan under 100 ms).
Run: PYTHONPATH=. python benchmarks/bench_core.py
"""

from __future__ import annotations

import ipaddress
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pyrsistent import pvector

from masq import Fragment, merge, parse_save, plan, render_restore
from masq.core.addresses import IPNetwork
from masq.core.config import MasqConfig
from masq.core.iptables.codec import render_rule
from masq.core.iptables.model import Ruleset
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.core.names import POSTROUTING

N = 10_000
RUNS = 7
OUT = Path(__file__).resolve().parent / "results" / "core.txt"


def cidrs(start: int, count: int) -> list[IPNetwork]:
    """Distinct /24s in 11.0.0.0/8 onwards."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [ipaddress.IPv4Network((base + (start + i) * 256, 24)) for i in range(count)]


def fragments() -> list[Fragment]:
    """Two files of 5,000 CIDRs each, cidrLimit raised on both."""
    nets = cidrs(0, N)
    half = N // 2
    return [
        Fragment(source="a.yaml", non_masquerade_cidrs=pvector(nets[:half]), cidr_limit=2 * N),
        Fragment(source="b.yaml", non_masquerade_cidrs=pvector(nets[half:]), cidr_limit=2 * N),
    ]


def observed_text(options: RulesetOptions) -> str:
    """A kernel chain of N rules overlapping the desired one by half (shifted window)."""
    old = desired_ruleset(
        MasqConfig(non_masquerade_cidrs=pvector(cidrs(N // 2, N - 2)), cidr_limit=2 * N),
        "ipv4",
        options,
    )
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", f":{options.chain} - [0:0]"]
    for name in (POSTROUTING, options.chain):
        lines += [f"[7:420] {render_rule(name, r)}" for r in old.chains[name].rules]
    return "\n".join([*lines, "COMMIT", ""])


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    options = RulesetOptions()
    frags = fragments()
    text = observed_text(options)
    observed: Ruleset = parse_save(text, options.chain, "ipv4").unwrap()
    config = merge(frags).unwrap().config
    desired = desired_ruleset(config, "ipv4", options)
    ops = plan(desired, observed)

    def pipeline() -> object:
        cfg = merge(frags).unwrap().config
        return plan(desired_ruleset(cfg, "ipv4", options), observed)

    figures = {
        "merge (2 fragments, 10,000 CIDRs)": median_ms(lambda: merge(frags)),
        "desired_ruleset (10,002 rules)": median_ms(
            lambda: desired_ruleset(config, "ipv4", options)
        ),
        "plan vs observed 10,000 rules": median_ms(lambda: plan(desired, observed)),
        "merge + desired + plan (target < 100 ms)": median_ms(pipeline),
        "plan(d, d) steady state": median_ms(lambda: plan(desired, desired)),
        "parse_save of 10,001-line save text": median_ms(
            lambda: parse_save(text, options.chain, "ipv4")
        ),
        "render_restore of the plan": median_ms(lambda: render_restore(ops)),
    }
    lines = [
        f"bench_core: median of {RUNS} runs, python {platform.python_version()},"
        f" {platform.machine()}",
        f"plan size: {len(ops)} ops for {len(observed.chains[options.chain].rules)} observed"
        f" -> {len(desired.chains[options.chain].rules)} desired rules",
        *(f"{name}: {ms:.1f} ms" for name, ms in figures.items()),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
