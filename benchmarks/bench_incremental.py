#!/usr/bin/env python3
"""What a one-CIDR config edit costs the pure core at 50,000 and 100,000 CIDRs.

The config is ten files of N/10 non-adjacent IPv4 /24s (every other /24 from 11.0.0.0),
as the agent holds it: parsed fragments, their merge, the desired nftables table, and that
table as the kernel is known to hold it after the last write.  One file then gains (or
loses) one CIDR, and the agent's path is timed step by step:

- ``parse_fragment`` of the edited file (the only file re-parsed; configdir keeps the rest);
- ``merge(..., previous=)``, ``desired_table(..., previous=)`` and ``plan`` against the
  known table: the incremental path;
- the same three from scratch, for comparison (what the agent paid before).

Each size runs in its own process, which reports its peak RSS (VmHWM) after building the
config and running the edits: what the core's data costs in memory, imports included.
Writes benchmarks/results/incremental.txt.  Run: benchmarks/run.sh incremental
"""

from __future__ import annotations

import ipaddress
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchlib import RESULTS, file_text, header

from masq.core.fragment import Fragment, parse_fragment
from masq.core.merge import Merged, merge
from masq.core.nftables.codec import state_of
from masq.core.nftables.model import NftTable
from masq.core.nftables.plan import plan
from masq.core.nftables.table import TableOptions, desired_table

SIZES = (50_000, 100_000)
FILES = 10
EDITS = 9  # one CIDR in, then out, alternately: the median of these
OUT = RESULTS / "incremental.txt"
OPTIONS = TableOptions()


def spread_24s(first: int, count: int) -> list[str]:
    """``count`` non-adjacent /24s (every other one) from the ``first``-th after 11.0.0.0."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [str(ipaddress.IPv4Network((base + (first + i) * 512, 24))) for i in range(count)]


def _ms(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, value


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _from_scratch(fragments: list[Fragment], kernel: NftTable) -> object:
    return plan(desired_table(merge(fragments).unwrap().config, OPTIONS), state_of([kernel]))


def measure(n: int) -> dict[str, Any]:
    """One size, in this process: build the config, then time EDITS one-CIDR edits."""
    per_file = n // FILES
    texts = [file_text(spread_24s(i * per_file, per_file)) for i in range(FILES)]
    fragments = [parse_fragment(t, f"ip-masq-{i:02d}").unwrap() for i, t in enumerate(texts)]
    first_ms, first = _ms(merge, fragments)
    merged = first.unwrap()
    table_ms, table = _ms(desired_table, merged.config, OPTIONS)
    known: tuple[Merged, NftTable] = (merged, table)
    extra = spread_24s(n, 1)  # beyond every file's CIDRs: never adjacent to one
    rows: dict[str, list[float]] = {k: [] for k in ("parse", "merge", "desired", "plan", "scratch")}
    ops_seen = set()
    for edit in range(EDITS):
        cidrs = spread_24s(0, per_file) + (extra if edit % 2 == 0 else [])
        text = file_text(cidrs)
        parse_ms, parsed = _ms(parse_fragment, text, "ip-masq-00")
        fragment = parsed.unwrap()
        frags: list[Fragment] = [fragment, *fragments[1:]]
        before, kernel = known
        merge_ms, merged_now = _ms(merge, frags, previous=before)
        after = merged_now.unwrap()
        desired_ms, wanted = _ms(desired_table, after.config, OPTIONS, (before.config, kernel))
        plan_ms, ops = _ms(plan, wanted, state_of([kernel]))
        ops_seen.add(tuple(type(op).__name__ for op in ops))
        for key, value in zip(rows, (parse_ms, merge_ms, desired_ms, plan_ms), strict=False):
            rows[key].append(value)
        fragments[0] = fragment
        known = (after, wanted)
    peak = _peak_rss_mb()  # before the from-scratch runs, which the agent no longer makes
    for _ in range(3):
        scratch_ms, _ = _ms(_from_scratch, fragments, known[1])
        rows["scratch"].append(scratch_ms)
    medians = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "n": n,
        "first_merge_ms": first_ms,
        "first_table_ms": table_ms,
        **medians,
        "ops": sorted(ops_seen),
        "peak_rss_mb": peak,
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
        return
    results = []
    for n in SIZES:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout))
    lines = header("a one-CIDR config edit in the pure core", "bench_incremental.py", root=False)
    lines += [
        f"# ten files of N/10 non-adjacent /24s, IPv4, nftables table; one file gains or loses"
        f" one CIDR; median of {EDITS} edits in one process per size (from scratch: of 3); peak RSS"
        " = VmHWM of that process before the from-scratch runs (imports, the ten files as"
        " text and parsed, merge, table and the edits)",
        "",
        f"{'N':>8}  {'parse file':>10}  {'merge':>8}  {'desired':>8}  {'plan':>8}"
        f"  {'m+d+p':>8}  {'from scratch':>12}  {'peak RSS':>9}  ops",
    ]
    for r in results:
        total = r["merge"] + r["desired"] + r["plan"]
        ops = " | ".join(",".join(o) for o in r["ops"])
        lines.append(
            f"{r['n']:>8,}  {r['parse']:>8.1f}ms  {r['merge']:>6.2f}ms  {r['desired']:>6.2f}ms"
            f"  {r['plan']:>6.2f}ms  {total:>6.2f}ms  {r['scratch']:>10.1f}ms"
            f"  {r['peak_rss_mb']:>6.1f} MB  {ops}"
        )
    for r in results:
        lines.append(
            f"  {r['n']:,}: first merge {r['first_merge_ms']:.0f} ms,"
            f" first desired table {r['first_table_ms']:.0f} ms"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
