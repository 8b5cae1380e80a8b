"""The pure core at scale: merge, desired state and plan for both codecs, and the parsers.

At 10,000 and 50,000 non-masquerade CIDRs (distinct /24s, split into files of 10,000
as a real config must be: a file is at most 1 MiB):

- iptables: ``merge``, ``desired_ruleset``, ``plan`` against an observed chain that
  overlaps the desired one by half, a one-CIDR change, the steady state, ``parse_save``
  of the chain's save text and ``render_restore``;
- nftables: ``desired_table`` (``masq.core.nftables.table``) and ``plan``
  (``masq.core.nftables.plan``) for the same cases, ``render_batch`` of the whole table
  and ``parse_listing`` of the table's ``nft -j list table`` JSON (every element with a
  counter, as nft 1.0.6 prints it);
- ``parse_fragment`` of one config file of 10,000 and of 50,000 entries, YAML and JSON,
  and of ten YAML files of 10,000 (100,000 CIDRs, the control-plane benchmark's config).

Writes figures to benchmarks/results/core.txt (target: merge + desired + plan of 10,000
CIDRs under 100 ms).  Run: benchmarks/run.sh core
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchlib import header, slash24s
from pyrsistent import pvector

from masq import Fragment, merge, parse_fragment, parse_save, plan, render_restore
from masq.core.addresses import IPNetwork
from masq.core.config import MasqConfig
from masq.core.iptables.codec import render_rule
from masq.core.iptables.model import Ruleset
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.core.names import POSTROUTING
from masq.core.nftables import plan as nft_plan
from masq.core.nftables.codec import parse_listing, render_batch, state_of
from masq.core.nftables.model import NftTable, ReplaceTable
from masq.core.nftables.table import TableOptions, desired_table

SIZES = (10_000, 50_000)
PER_FILE = 10_000
CIDR_LIMIT = 200_000  # as the control-plane benchmark's files raise it
RUNS = 7
OUT = Path(__file__).resolve().parent / "results" / "core.txt"
# The chains of the agent's ``ip`` table as ``nft -j list table ip ip-masq-agent`` prints
# them (nft 1.0.6, default flags), so the listing below parses back to the desired table.
_CHAINS_JSON = """[
{"chain": {"family": "ip", "table": "ip-masq-agent", "name": "snat-to-node", "handle": 1}},
{"chain": {"family": "ip", "table": "ip-masq-agent", "name": "postrouting", "handle": 2,
  "type": "nat", "hook": "postrouting", "prio": 110, "policy": "accept"}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "snat-to-node", "handle": 5,
  "expr": [{"masquerade": {"flags": "fully-random"}}]}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "postrouting", "handle": 6,
  "expr": [{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
  "right": "local"}}, {"return": null}]}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "postrouting", "handle": 7,
  "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
  "right": "@masquerade-v4"}}, {"counter": {"packets": 0, "bytes": 0}},
  {"jump": {"target": "snat-to-node"}}]}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "postrouting", "handle": 8,
  "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
  "right": {"prefix": {"addr": "169.254.0.0", "len": 16}}}},
  {"counter": {"packets": 0, "bytes": 0}}, {"return": null}]}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "postrouting", "handle": 9,
  "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
  "right": "@non-masquerade-v4"}}, {"counter": {"packets": 0, "bytes": 0}},
  {"return": null}]}},
{"rule": {"family": "ip", "table": "ip-masq-agent", "chain": "postrouting", "handle": 10,
  "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "snat-to-node"}}]}}
]"""


def cidrs(start: int, count: int) -> list[IPNetwork]:
    return list(slash24s(start, count))


def fragments(n: int) -> list[Fragment]:
    """Files of 10,000 CIDRs each, cidrLimit raised on all."""
    nets = cidrs(0, n)
    return [
        Fragment(
            source=f"ip-masq-{i // PER_FILE:02d}",
            non_masquerade_cidrs=pvector(nets[i : i + PER_FILE]),
            cidr_limit=2 * n,
        )
        for i in range(0, n, PER_FILE)
    ]


def config_of(nets: list[IPNetwork], n: int) -> MasqConfig:
    return MasqConfig(non_masquerade_cidrs=pvector(nets), cidr_limit=2 * n)


def save_text(ruleset: Ruleset, options: RulesetOptions) -> str:
    """What ``-S POSTROUTING`` and ``-S CHAIN -v`` print for ``ruleset``, counters included."""
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", f":{options.chain} - [0:0]"]
    for name in (POSTROUTING, options.chain):
        lines += [f"[7:420] {render_rule(name, r)}" for r in ruleset.chains[name].rules]
    return "\n".join([*lines, "COMMIT", ""])


def nft_listing(table: NftTable) -> str:
    """``nft -j list table ip ip-masq-agent`` of ``table`` (IPv4 only), counters on elements."""
    objects: list[object] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "ip", "name": table.name, "handle": 1}},
    ]
    for handle, (name, s) in enumerate(sorted(table.sets.items()), start=3):
        body: dict[str, object] = {
            "family": "ip",
            "name": name,
            "table": table.name,
            "type": "ipv4_addr",
            "handle": handle,
            "flags": ["interval"],
        }
        if s.elements:
            body["elem"] = [
                {
                    "elem": {
                        "val": {"prefix": {"addr": str(e.network_address), "len": e.prefixlen}},
                        "counter": {"packets": 0, "bytes": 0},
                    }
                }
                for e in sorted(s.elements)
            ]
        body["stmt"] = [{"counter": None}]
        objects.append({"set": body})
    objects += json.loads(_CHAINS_JSON)
    return json.dumps({"nftables": objects})


def fragment_text(n: int, start: int = 0) -> str:
    nets = cidrs(start, n)
    return f"cidrLimit: {CIDR_LIMIT}\nnonMasqueradeCIDRs:\n" + "".join(f"  - {c}\n" for c in nets)


def fragment_json(n: int, start: int = 0) -> str:
    return json.dumps(
        {"cidrLimit": CIDR_LIMIT, "nonMasqueradeCIDRs": [str(c) for c in cidrs(start, n)]}
    )


def median_ms(fn: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def iptables_figures(n: int) -> list[str]:
    options = RulesetOptions()
    frags = fragments(n)
    config = merge(frags).unwrap().config
    desired = desired_ruleset(config, "ipv4", options)
    shifted = desired_ruleset(config_of(cidrs(n // 2, n - 2), n), "ipv4", options)
    text = save_text(shifted, options)
    observed = parse_save(text, options.chain, "ipv4").unwrap()
    one_less = parse_save(
        save_text(desired_ruleset(config_of(cidrs(0, n - 1), n), "ipv4", options), options),
        options.chain,
        "ipv4",
    ).unwrap()
    steady = parse_save(save_text(desired, options), options.chain, "ipv4").unwrap()
    ops = plan(desired, observed)
    assert plan(desired, steady) == ()
    assert len(plan(desired, one_less)) == 1

    def pipeline() -> object:
        cfg = merge(frags).unwrap().config
        return plan(desired_ruleset(cfg, "ipv4", options), observed)

    rules = len(desired.chains[options.chain].rules)
    target = " (target < 100 ms)" if n == 10_000 else ""
    figures = {
        f"merge of {len(frags)} file(s)": median_ms(lambda: merge(frags)),
        f"desired_ruleset ({rules:,} rules)": median_ms(
            lambda: desired_ruleset(config, "ipv4", options)
        ),
        f"plan vs an observed chain overlapping by half ({len(ops):,} ops)": median_ms(
            lambda: plan(desired, observed)
        ),
        f"merge + desired + plan{target}": median_ms(pipeline),
        "plan of a one-CIDR change (1 op)": median_ms(lambda: plan(desired, one_less)),
        "plan(d, d) steady state": median_ms(lambda: plan(desired, steady)),
        f"parse_save of the {rules + 1:,}-line listing": median_ms(
            lambda: parse_save(text, options.chain, "ipv4")
        ),
        f"render_restore of the {len(ops):,}-op plan": median_ms(lambda: render_restore(ops)),
    }
    return [f"iptables, {n:,} CIDRs", *(f"  {k}: {v:.1f} ms" for k, v in figures.items())]


def nftables_figures(n: int) -> list[str]:
    options = TableOptions()
    frags = fragments(n)
    config = merge(frags).unwrap().config
    desired = desired_table(config, options)
    listing = nft_listing(desired)
    steady = state_of([parse_listing(listing, "ip", options.table).unwrap()])
    shifted = state_of([desired_table(config_of(cidrs(n // 2, n - 2), n), options)])
    one_less = state_of([desired_table(config_of(cidrs(0, n - 1), n), options)])
    ops = nft_plan.plan(desired, shifted)
    assert nft_plan.plan(desired, steady) == ()
    assert len(nft_plan.plan(desired, one_less)) == 1
    whole = render_batch((ReplaceTable(desired),))

    def pipeline() -> object:
        cfg = merge(frags).unwrap().config
        return nft_plan.plan(desired_table(cfg, options), shifted)

    figures = {
        f"merge of {len(frags)} file(s)": median_ms(lambda: merge(frags)),
        f"desired_table ({n:,} elements)": median_ms(lambda: desired_table(config, options)),
        f"plan vs a set overlapping by half ({len(ops)} op: set reload)": median_ms(
            lambda: nft_plan.plan(desired, shifted)
        ),
        "merge + desired + plan": median_ms(pipeline),
        "plan of a one-CIDR change (1 element op)": median_ms(
            lambda: nft_plan.plan(desired, one_less)
        ),
        "plan(d, d) steady state (the table parsed from the listing)": median_ms(
            lambda: nft_plan.plan(desired, steady)
        ),
        f"parse_listing of the {len(listing) / 1e6:.1f} MB JSON listing": median_ms(
            lambda: parse_listing(listing, "ip", options.table)
        ),
        f"render_batch of the whole table ({len(whole) / 1e6:.1f} MB)": median_ms(
            lambda: render_batch((ReplaceTable(desired),))
        ),
    }
    return [f"nftables, {n:,} CIDRs", *(f"  {k}: {v:.1f} ms" for k, v in figures.items())]


def fragment_figures() -> list[str]:
    out = ["parse_fragment of one config file (canonical IPv4 entries, as a file lists them)"]
    for n in SIZES:
        for kind, text in (("YAML", fragment_text(n)), ("JSON", fragment_json(n))):
            data = text.encode()
            assert len(parse_fragment(data, "ip-masq-big").unwrap().non_masquerade_cidrs or ()) == n
            ms = median_ms(partial(parse_fragment, data, "ip-masq-big"))
            out.append(f"  {n:,} entries ({len(data) / 1e3:.0f} kB of {kind}): {ms:.1f} ms")
    files = [fragment_text(PER_FILE, i).encode() for i in range(0, 100_000, PER_FILE)]

    def every_file() -> object:
        return [parse_fragment(data, f"ip-masq-{i:02d}") for i, data in enumerate(files)]

    out.append(
        f"  ten YAML files of 10,000 (100,000 CIDRs), all parsed: {median_ms(every_file):.1f} ms"
    )
    return out


def main() -> None:
    lines = [
        *header("the pure core (benchmarks/bench_core.py)", "bench_core.py", root=False),
        f"median of {RUNS} runs in one process, no I/O, {platform.machine()}",
        "CIDRs are distinct /24s from 11.0.0.0, in files of 10,000 (cidrLimit raised)",
    ]
    print("\n".join(lines), flush=True)
    sections: list[Callable[[], list[str]]] = [
        *(partial(f, n) for n in SIZES for f in (iptables_figures, nftables_figures)),
        fragment_figures,
    ]
    for section in sections:
        figures = section()
        print("\n".join(figures), flush=True)
        lines += figures
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
