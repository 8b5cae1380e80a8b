"""When to reload an nftables interval set whole instead of editing it element by element.

For a set of N /24 elements with counters and k elements replaced (k deleted, k added),
times one nft batch of (a) the k deletes and k adds, (b) a flush of the set and a fill
with all N, and (c) the whole table replaced, in a throwaway network namespace.  nft
1.0.6 pays for each element edit in proportion to N, so edits win only for a handful of
changes; the core's ``SET_RELOAD_AFTER_EDITS`` is chosen from these figures.  Writes
benchmarks/results/nft-set-edits.txt.  Run as root: benchmarks/run.sh nft-edits
"""

from __future__ import annotations

import ipaddress
import platform
import subprocess
import time
from pathlib import Path

from integration.topology import namespace

from masq.core.nftables.plan import SET_RELOAD_AFTER_EDITS

OUT = Path(__file__).resolve().parent / "results" / "nft-set-edits.txt"
CASES = [(15_000, (1, 8, 100, 1_000)), (50_000, (1, 8, 100))]


def nets(first: int, count: int) -> list[str]:
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [f"{ipaddress.IPv4Address(base + (first + i) * 256)}/24" for i in range(count)]


def table(elements: list[str]) -> str:
    return (
        "add table ip t\ndelete table ip t\ntable ip t {\n"
        "  set s { type ipv4_addr; flags interval; counter; elements = { "
        + ", ".join(elements)
        + " } }\n}\n"
    )


def main() -> None:
    with namespace("bench-nft-edits") as ns:
        OUT.write_text("\n".join(measure(ns)) + "\n")


def measure(ns: str) -> list[str]:
    def nft(batch: str) -> float:
        start = time.perf_counter()
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", "-f", "-"],
            input=batch,
            text=True,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - start

    lines = [
        f"# nft interval set: element edits vs reload, {time.strftime('%Y-%m-%d')}",
        f"# kernel {platform.release()}; a shared 2-core machine (figures, not thresholds)",
        f"# the agent reloads a set past SET_RELOAD_AFTER_EDITS={SET_RELOAD_AFTER_EDITS} edits",
    ]
    for size, changes in CASES:
        for k in changes:
            old, new = nets(0, size), nets(k, size)
            nft(table(old))
            edits = nft(
                f"delete element ip t s {{ {', '.join(old[:k])} }}\n"
                f"add element ip t s {{ {', '.join(new[-k:])} }}\n"
            )
            nft(table(old))
            reload = nft(f"flush set ip t s\nadd element ip t s {{ {', '.join(new)} }}\n")
            nft(table(old))
            whole = nft(table(new))
            lines.append(
                f"{size:7,d} elements, {k:5,d} replaced: edits {edits:6.2f} s"
                f"   set reload {reload:5.2f} s   table replace {whole:5.2f} s"
            )
            print(lines[-1], flush=True)
    return lines


if __name__ == "__main__":
    main()
