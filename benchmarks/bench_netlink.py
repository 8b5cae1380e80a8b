"""Set elements over netlink vs the nft CLI, at 50,000 and 100,000 elements.

For an interval set with ``counter`` holding N non-adjacent /24s (an ``ip`` table in a
throwaway namespace), times and CPU of: reading every element with its counter (one
netlink dump vs ``nft -j list set``); reading 100 chosen elements' counters (one small
request each, what a scrape showing 100 series needs); adding one element (one netlink
batch vs ``nft add element``), quiet and beside a foreign writer that commits to its own
table every 0.5 s (nft re-fetches the set whenever the generation moves under it).  Each netlink
figure comes from a fresh interpreter in the namespace, so its peak RSS is that of a
process that did nothing else (VmHWM: ru_maxrss would carry the forked parent's pages
across exec); the import of the netlink modules is shown apart.
Writes benchmarks/results/netlink.txt.  Run as root: benchmarks/run.sh netlink
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from benchlib import PYTHON, RESULTS, env, header, heavy_lock, ns_run, precompile
from integration.topology import namespace

OUT = RESULTS / "netlink.txt"
SIZES = (50_000, 100_000)
REPEATS = 3
GETS = 100  # elements a scrape shows: a sample spread over the set
NFT_TIMEOUT = 30.0

CHILD = """
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import ipaddress
from masq.core.nftables.netlink import SetEdit
from masq.shell.nft_elements import read_counters, read_set, write_elements
t1, c1, s1 = time.perf_counter(), time.process_time(), resource.getrusage(0).ru_stime
if sys.argv[1] == "dump":
    n = len(read_set("ip", "t", "s", "ipv4").counters)
elif sys.argv[1] == "get":
    nets = [ipaddress.ip_network(a) for a in sys.argv[2:]]
    n = sum(c is not None for c in read_counters("ip", "t", "s", nets).values())
else:
    write_elements([SetEdit("ip", "t", "s", add=(ipaddress.ip_network(sys.argv[2]),))])
    n = 1
t2, c2, s2 = time.perf_counter(), time.process_time(), resource.getrusage(0).ru_stime
status = open("/proc/self/status").read().split("VmHWM:")[1]
rss = int(status.split()[0]) / 1024
print(json.dumps({"import": t1 - t0, "wall": t2 - t1, "cpu": c2 - c1, "rss": rss, "n": n,
                  "sys": s2 - s1}))
"""


def nets(count: int) -> list[str]:
    """``count`` /24s with a gap after each (no two adjacent): 11.0.0.0/24, 11.0.2.0/24, ..."""
    base = 11 << 24
    return [
        f"{(a >> 24) & 255}.{(a >> 16) & 255}.{(a >> 8) & 255}.0/24"
        for a in (base + i * 512 for i in range(count))
    ]


def load(ns: str, elements: list[str]) -> None:
    text = (
        "table ip t\ndelete table ip t\ntable ip t {\n"
        "  set s { type ipv4_addr; flags interval; counter; elements = { "
        + ", ".join(elements)
        + " } }\n}\n"
    )
    ns_run(ns, ["nft", "-f", "-"], stdin=text)


def child(ns: str, *args: str) -> dict[str, float]:
    done = ns_run(ns, [PYTHON, "-c", CHILD, *args])
    result: dict[str, float] = json.loads(done.stdout)
    return result


def nft_timed(ns: str, *args: str) -> tuple[float, float, bool]:
    """(wall, CPU of nft, finished) for ``nft ARGS`` in ``ns``, bounded by NFT_TIMEOUT."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    try:
        subprocess.run(
            ["ip", "netns", "exec", ns, "nft", *args],
            check=True,
            capture_output=True,
            timeout=NFT_TIMEOUT,
            env=env(),
        )
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, finished


@contextmanager
def foreign_writer(ns: str) -> Iterator[None]:
    """Another program committing to its own table every 0.5 s, as kube-proxy does."""
    ns_run(ns, ["nft", "add", "table", "ip", "w"])
    ns_run(ns, ["nft", "add", "set", "ip", "w", "s", "{ type ipv4_addr; }"])
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.wait(0.5):
            i += 1
            ns_run(
                ns, ["nft", "add", "element", "ip", "w", "s", f"{{ 10.9.{i // 250}.{i % 250} }}"]
            )

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def median(values: list[float]) -> float:
    return statistics.median(values)


def measure(ns: str, size: int, lines: list[str]) -> None:
    elements = nets(size + 4 * REPEATS + 4)
    present, spare = elements[:size], elements[size:]
    load(ns, present)
    dumps = [child(ns, "dump") for _ in range(REPEATS)]
    assert all(d["n"] == size for d in dumps), dumps
    listings = [nft_timed(ns, "-j", "list", "set", "ip", "t", "s") for _ in range(REPEATS)]
    shown = present[:: size // GETS]
    gets = [child(ns, "get", *shown) for _ in range(REPEATS)]
    assert all(g["n"] == GETS for g in gets), gets
    adds = [child(ns, "add", spare.pop()) for _ in range(REPEATS)]
    nft_adds = [
        nft_timed(ns, "add", "element", "ip", "t", "s", f"{{ {spare.pop()} }}")
        for _ in range(REPEATS)
    ]
    with foreign_writer(ns):
        busy_adds = [child(ns, "add", spare.pop()) for _ in range(REPEATS)]
        busy_nft = [
            nft_timed(ns, "add", "element", "ip", "t", "s", f"{{ {spare.pop()} }}")
            for _ in range(REPEATS)
        ]

    def ours(rows: list[dict[str, float]]) -> str:
        wall, cpu = median([r["wall"] for r in rows]), median([r["cpu"] for r in rows])
        imported, rss = median([r["import"] for r in rows]), max(r["rss"] for r in rows)
        kernel = median([r["sys"] for r in rows])
        return (
            f"{wall:7.3f} s wall {cpu:7.3f} s CPU  (of it {kernel:.3f} s in the kernel;"
            f" import {imported:.3f} s, peak RSS {rss:.0f} MB)"
        )

    def theirs(rows: list[tuple[float, float, bool]]) -> str:
        unfinished = sum(1 for r in rows if not r[2])
        note = (
            f"  ({unfinished} of {len(rows)} killed at {NFT_TIMEOUT:.0f} s)" if unfinished else ""
        )
        wall, cpu = median([r[0] for r in rows]), median([r[1] for r in rows])
        return f"{wall:7.3f} s wall {cpu:7.3f} s CPU{note}"

    lines += [
        f"{size:,} elements",
        f"  read all with counters   netlink dump        {ours(dumps)}",
        f"                           nft -j list set     {theirs(listings)}",
        f"  read {GETS} counters".ljust(27) + f"netlink gets        {ours(gets)}",
        f"  add one element, quiet   netlink batch       {ours(adds)}",
        f"                           nft add element     {theirs(nft_adds)}",
        f"  add one, beside writer   netlink batch       {ours(busy_adds)}",
        f"                           nft add element     {theirs(busy_nft)}",
    ]
    print("\n".join(lines[-8:]), flush=True)


def main() -> None:
    precompile()
    lines = header(
        "nf_tables set elements: netlink (masq.shell.nft_elements) vs the nft CLI",
        "bench_netlink.py",
    )
    lines.append(
        f"# medians of {REPEATS} runs; an interval set with counter, N non-adjacent /24s, ip table;"
        " the foreign writer commits to its own table every 0.5 s"
    )
    with namespace("bench-netlink") as ns, heavy_lock():
        for size in SIZES:
            measure(ns, size, lines)
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
