#!/usr/bin/env python3
"""What a /metrics scrape costs the agent, with and without the per-CIDR counter refresh.

For each dataplane (iptables-nft, iptables-legacy, nftables) and 64, 10,000 and 50,000
(nftables also 100,000) non-masquerade CIDRs (IPv4 /24s; ``--enable-ipv6`` as in
bench_scale.py), the daemon at
``--resync-interval=60`` with /metrics on its default address, in a fresh namespace:

- a scrape that refreshes the per-CIDR counters (the first one more than 5 s after the
  last listing: one read-only listing of what the agent owns), wall time and the CPU
  of the agent and its children, over 5 rounds;
- scrapes that do not (10 right after each refreshing one, within the 5 s);
- the exposition's size, samples and per-CIDR series with the default cap (300 per
  family, the rest summed as cidr="other");
- then, with logging wrappers on PATH, the processes each kind of scrape starts.

The scraper runs in the namespace and times only its HTTP request; the agent's CPU is
read from /proc/PID/stat around it (10 ms ticks, hence the rounds).  Writes
benchmarks/results/scrape.txt.  Run: benchmarks/run.sh scrape
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentproc import AgentRunner
from benchlib import (
    PYTHON,
    REPO,
    RESULTS,
    env,
    header,
    heavy_lock,
    make_wrappers,
    precompile,
    stat_cpu,
    write_config,
)

OUT = RESULTS / "scrape.txt"
PLANES: dict[str, list[str]] = {
    "iptables-nft": ["--dataplane=iptables", "--iptables-backend=nft"],
    "iptables-legacy": ["--dataplane=iptables", "--iptables-backend=legacy"],
    "nftables": ["--dataplane=nftables"],
}
SIZES = (64, 10_000, 50_000)
LARGE = 100_000  # nftables only (iptables at this size takes minutes per case)
ROUNDS = 5
QUICK = 10
FRESH_SECONDS = 5.0  # masq.shell.metrics.TRAFFIC_MAX_AGE_SECONDS
PORT = 9931


def client() -> None:
    """In the namespace: one GET /metrics per line read, one JSON line of figures each."""
    for _ in sys.stdin:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=600)
        start = time.perf_counter()
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        wall = time.perf_counter() - start
        conn.close()
        samples = [ln for ln in body.decode().splitlines() if ln and not ln.startswith("#")]
        packets = [ln for ln in samples if ln.startswith("ip_masq_agent_packets_total")]
        figures = {
            "wall": wall,
            "status": response.status,
            "bytes": len(body),
            "samples": len(samples),
            "cidr_series": len(packets),
            "other": sum(1 for ln in packets if 'cidr="other"' in ln),
        }
        print(json.dumps(figures), flush=True)


class Scraper:
    def __init__(self, ns: str) -> None:
        argv = ["ip", "netns", "exec", ns, PYTHON, __file__, "--client"]
        client_env = env()  # the module imports the tests' harness: tests/ on the path too
        client_env["PYTHONPATH"] += f":{REPO / 'tests'}"
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=client_env
        )

    def get(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("GET\n")
        self.proc.stdin.flush()
        found: dict[str, Any] = json.loads(self.proc.stdout.readline())
        if found["status"] != 200:
            raise RuntimeError(f"/metrics answered {found['status']}")
        return found

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@dataclass
class Figures:
    refresh_wall: list[float]
    refresh_cpu: list[tuple[float, float]]  # (agent, children) seconds per scrape
    quick_wall: list[float]
    quick_cpu: list[tuple[float, float]]  # per scrape, averaged over QUICK
    exposition: dict[str, Any]
    refresh_procs: list[str]
    quick_procs: list[str]
    peak_rss_mb: float = 0.0  # the daemon's VmHWM: first sync and every scrape included


def scrapes(runner: AgentRunner, rounds: int, quick: int, wrap: bool = False) -> Figures:
    figures = Figures([], [], [], [], {}, [], [])
    with runner.daemon(60.0, wrap=wrap) as d:
        scraper = Scraper(runner.ns)
        try:
            last = time.monotonic()  # the first sync listed everything just now
            for _ in range(rounds):
                time.sleep(max(last + FRESH_SECONDS + 0.5 - time.monotonic(), 0))
                lines0 = len(runner.exec_log.read_text().splitlines())
                c0 = stat_cpu(d.pid)
                found = scraper.get()
                c1 = stat_cpu(d.pid)
                last = time.monotonic()
                lines1 = len(runner.exec_log.read_text().splitlines())
                many = [scraper.get() for _ in range(quick)]
                c2 = stat_cpu(d.pid)
                lines2 = runner.exec_log.read_text().splitlines()
                if time.monotonic() - last >= FRESH_SECONDS:
                    raise RuntimeError("the quick scrapes took longer than the freshness window")
                figures.refresh_wall.append(found["wall"])
                figures.refresh_cpu.append((c1[0] - c0[0], c1[1] - c0[1]))
                figures.quick_wall += [m["wall"] for m in many]
                figures.quick_cpu.append(((c2[0] - c1[0]) / quick, (c2[1] - c1[1]) / quick))
                figures.exposition = found
                figures.refresh_procs = lines2[lines0:lines1]
                figures.quick_procs = lines2[lines1:]
        finally:
            scraper.stop()
        figures.peak_rss_mb = _peak_rss_mb(d.pid)
    return figures


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_case(plane: str, n: int, tmp: Path) -> tuple[Figures, Figures]:
    # here, not at the top: the scraper re-runs this file in the namespace without tests/
    from integration.topology import namespace

    cfg = tmp / f"cfg-{plane}-{n}"
    cfg.mkdir()
    write_config(cfg, n)
    flags = [f"--config-dir={cfg}", "--enable-ipv6", *PLANES[plane]]
    with heavy_lock(), namespace("scrape") as ns:
        runner = AgentRunner(ns, flags, tmp, 1 if plane == "nftables" else 2)
        runner.once()
        timed = scrapes(runner, ROUNDS, QUICK)
        runner.exec_log.write_text("")
        counted = scrapes(runner, 1, 1, wrap=True)
    return timed, counted


def row(plane: str, n: int, timed: Figures, counted: Figures) -> list[str]:
    def ms(values: list[float]) -> str:
        return f"{1000 * statistics.median(values):.1f}"

    def cpu(pairs: list[tuple[float, float]]) -> str:
        agent = statistics.mean(p[0] for p in pairs)
        children = statistics.mean(p[1] for p in pairs)
        return f"{1000 * (agent + children):.1f} ({1000 * agent:.1f} + {1000 * children:.1f})"

    e = timed.exposition
    return [
        plane,
        f"{n:,}",
        ms(timed.refresh_wall),
        cpu(timed.refresh_cpu),
        str(len(counted.refresh_procs)),
        ms(timed.quick_wall),
        cpu(timed.quick_cpu),
        str(len(counted.quick_procs)),
        f"{e['bytes'] / 1000:.1f}",
        str(e["samples"]),
        f"{e['cidr_series']} ({e['other']} other)",
        f"{timed.peak_rss_mb:.0f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated PLANE:N cases (e.g. nftables:50000,nftables:100000); their"
        " figures go to results/scrape-only.txt, the full table stays as it is",
    )
    args = parser.parse_args()
    if args.client:
        client()
        return 0
    if os.geteuid() != 0:
        print("run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    precompile()
    rows: list[list[str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mqscrape-") as d:
        tmp = Path(d)
        make_wrappers(tmp, tmp / "exec.log")
        cases = [(p, n) for p in PLANES for n in SIZES] + [("nftables", LARGE)]
        if args.only:
            cases = [(p, int(n)) for p, n in (c.split(":") for c in args.only.split(","))]
        for plane, n in cases:
            print(f"== {plane} {n:,}", flush=True)
            timed, counted = bench_case(plane, n, tmp)
            rows.append(row(plane, n, timed, counted))
            print("  " + "  ".join(rows[-1]), flush=True)
            procs = "; ".join(counted.refresh_procs) or "none"
            notes.append(f"  {plane} {n:,}: a refreshing scrape started: {procs}")
    columns = [
        "dataplane",
        "N",
        "refresh ms",
        "CPU ms (agent + children)",
        "procs",
        "no refresh ms",
        "CPU ms (agent + children)",
        "procs",
        "kB",
        "samples",
        "per-CIDR series",
        "peak RSS MB",
    ]
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    out = header("/metrics scrape cost (benchmarks/bench_scrape.py)", "bench_scrape.py")
    out += [
        "# daemon at --resync-interval=60, --enable-ipv6, N IPv4 /24s, default series cap (300",
        f"# per family); a refreshing scrape is the first more than {FRESH_SECONDS:g} s after"
        " the last listing; wall = the scraper's HTTP request (median),",
        f"# CPU = the agent and its children per scrape, mean of {ROUNDS} refreshing scrapes"
        f" and of {ROUNDS} x {QUICK} others (/proc/PID/stat, 10 ms ticks);",
        "# procs = processes the agent started for one scrape of each kind (wrapper run);",
        "# peak RSS = the daemon's VmHWM after its first sync and the timed scrapes",
        "",
        *("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [columns, *rows]),
        "",
        *notes,
    ]
    target = OUT.with_name("scrape-only.txt") if args.only else OUT
    target.write_text("\n".join(out) + "\n")
    print(target.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
