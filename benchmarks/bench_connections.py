#!/usr/bin/env python3
"""Cost of the masquerade decision per NEW connection, with real packets (run as root).

The nat table is consulted only for the first packet of a connection, so the cost of the
agent's rules is paid once per new flow.  This benchmark makes every packet a new flow and
measures what one costs, for each dataplane at several numbers N of nonMasqueradeCIDRs:

  iptables-nft, iptables-legacy  the agent itself (``--once --iptables-backend=...``) with a
                                 config of N CIDRs split over several files (a file is
                                 limited to 1 MiB) and ``cidrLimit`` raised;
  nftables                       for now a table in DESIGN.md's shape loaded with ``nft -f``
                                 (the agent has no nftables dataplane yet); switch with
                                 ``--nftables=agent`` once ``--dataplane=nftables`` exists.

Topology: tests/integration/topology.py's pod -> node -> dest namespaces, reused as is.  The
probed destination (``DEST_DOC_A``, 203.0.113.10) lies outside every CIDR, so each new flow
walks past all N of them and is masqueraded: the worst case, and the common one for traffic
leaving the cluster.  Each run checks that conntrack in node holds exactly one entry per flow
and that every one was masqueraded.

Sender.  One process in pod sends prebuilt IPv4/UDP packets through a raw socket, one per
flow, each with a fresh source port (conntrack flushed before every run), so every packet
is NEW in node.  veth has no queue and GRO is off, so the kernel forwards each packet
synchronously, in the sender's own system call: pod's transmit, node's conntrack, nat
POSTROUTING (the rules under test), masquerade, forwarding, and the drop at a full socket in
dest all run as softirq work on the sender's stack.  The kernel here does not account IRQ
time separately (CONFIG_IRQ_TIME_ACCOUNTING unset), so the sender thread's CPU time
(``thread_time_ns``: its scheduler runtime) covers that softirq work and, unlike wall time,
not the time other jobs on this shared machine held the CPU.  That CPU time per flow is the
figure reported; wall time is kept beside it.  ksoftirqd's CPU time is read around each run:
if the kernel had deferred work to it, the figures would be too low, and the run says so.

Cancelling the sender's own cost.  Python's loop, the raw send, veth, conntrack creation,
masquerade and forwarding cost the same at every N; only the rule walk grows.  So each size is
measured against a baseline topology configured with N=0 by the same dataplane, in alternating
rounds (baseline, loaded, baseline, loaded, ...) so that drift in machine load hits both; the
extra cost per flow is the median of the paired differences, and divided by N it is the cost
per CIDR.  A topology with no nat rules at all (plain forwarding, no conntrack) is measured
once to show how much of the N=0 figure is the sender and the path itself.

Figures go to benchmarks/results/connections.txt.  Each measuring phase holds the shared lock
/tmp/masq-heavy.lock (flock(2), the lock flock(1) takes) so heavy runs of other jobs on this
machine never overlap it; the figures still come from a shared machine.
Run: PYTHONPATH=.:tests python benchmarks/bench_connections.py   (or benchmarks/run.sh connections)
Options: --only (dataplane name prefixes), --sizes, --prefixes (CIDR lengths, default 24;
iptables-nft's per-rule cost depends on it), --runs, --flows, --output.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import gzip
import ipaddress
import json
import os
import platform
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from integration import agent, topology
from integration.packets import verdicts
from integration.topology import Backend, Topology

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results" / "connections.txt"
LOCK = Path("/tmp/masq-heavy.lock")
FLOWS = 20_000
RUNS = 5
DEST = topology.DEST_DOC_A
DEST_PORT = 9999
FIRST_SOURCE_PORT = 10_000
CONFIG_CIDRS_PER_FILE = 10_000  # about 190 kB of YAML; a file may hold at most 1 MiB
IPTABLES_SIZES = (0, 1_000, 10_000, 50_000)
NFTABLES_SIZES = (0, 1_000, 10_000, 50_000, 100_000)

# DESIGN.md's table, IPv4 only.  snat-to-node has no --to-ports split: the agent's default
# (random-fully, no ports), as the iptables chains written by the agent here.
NFT_TABLE = """table ip ip-masq-agent {{
  set masquerade-v4 {{ type ipv4_addr; flags interval; counter; }}
  set non-masquerade-v4 {{ type ipv4_addr; flags interval; counter;{elements} }}
  chain postrouting {{
    type nat hook postrouting priority srcnat + 10; policy accept;
    fib daddr type local return
    ip daddr @masquerade-v4 jump snat-to-node
    ip daddr 169.254.0.0/16 return
    ip daddr @non-masquerade-v4 return
    jump snat-to-node
  }}
  chain snat-to-node {{
    masquerade fully-random
  }}
}}
"""

# Kept out of every config: the probed destination and the topology's own networks.
RESERVED = [
    ipaddress.IPv4Network(f"{DEST}/32"),
    ipaddress.IPv4Network("10.244.0.0/16"),
    ipaddress.IPv4Network("192.168.100.0/24"),
]


def cidrs(count: int, prefix: int = 24) -> list[str] | None:
    """``count`` disjoint, non-adjacent CIDRs of one prefix length from 10.0.0.0 up (every
    other block), or None when they do not fit below 127.0.0.0.

    Non-adjacent so no dataplane can merge neighbours; none covers RESERVED, so the
    probed destination passes every one of them.
    """
    out: list[str] = []
    size = 1 << (32 - prefix)
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    limit = int(ipaddress.IPv4Address("127.0.0.0"))
    step = 0
    while len(out) < count:
        start = base + 2 * size * step
        if start + size > limit:
            return None
        net = ipaddress.IPv4Network((start, prefix))
        step += 1
        if not any(net.overlaps(r) for r in RESERVED):
            out.append(str(net))
    return out


# -- dataplanes: one function each that makes node decide with N CIDRs -----------------


def agent_config(topo: Topology, nets: Sequence[str], work: Path) -> Path:
    """A fresh config dir for the node's agent: the CIDRs spread over several files."""
    config = work / f"config-{topo.node}"
    config.mkdir(exist_ok=True)
    for old in config.iterdir():
        old.unlink()
    limit = max(len(nets), 64)
    if not nets:
        agent.write_config(config, "ip-masq-agent", "nonMasqueradeCIDRs: []\n")
    for start in range(0, len(nets), CONFIG_CIDRS_PER_FILE):
        chunk = nets[start : start + CONFIG_CIDRS_PER_FILE]
        body = "".join(f"  - {c}\n" for c in chunk)
        text = f"cidrLimit: {limit}\nnonMasqueradeCIDRs:\n{body}"
        agent.write_config(config, f"ip-masq-part-{start // CONFIG_CIDRS_PER_FILE:03d}", text)
    return config


def apply_agent_iptables(topo: Topology, nets: Sequence[str], work: Path) -> None:
    """The agent itself, once, with the CIDRs spread over several config files."""
    agent.assert_ok(agent.run_agent(topo, agent_config(topo, nets, work), timeout=900))
    rules = [line for line in topo.save().splitlines() if line.startswith("-A IP-MASQ-AGENT ")]
    if len(rules) != len(nets) + 2:  # + link-local RETURN + final MASQUERADE
        raise RuntimeError(f"expected {len(nets) + 2} rules in IP-MASQ-AGENT, got {len(rules)}")


def apply_nft_table(topo: Topology, nets: Sequence[str], work: Path) -> None:
    """DESIGN.md's table, loaded with ``nft -f`` (replacing any earlier copy in one batch)."""
    elements = f" elements = {{ {', '.join(nets)} }}" if nets else ""
    path = work / f"table-{topo.node}.nft"
    path.write_text(
        "table ip ip-masq-agent\ndelete table ip ip-masq-agent\n"
        + NFT_TABLE.format(elements=f";{elements}" if elements else "")
    )
    topology.run(topo.in_ns(topo.node, ["nft", "-f", str(path)]), timeout=600)
    listing = topology.run(
        topo.in_ns(topo.node, ["nft", "list", "set", "ip", "ip-masq-agent", "non-masquerade-v4"]),
        timeout=600,
    ).stdout
    found = listing.count("counter packets")  # one per element
    if found != len(nets):
        raise RuntimeError(f"expected {len(nets)} elements in non-masquerade-v4, found {found}")


def apply_agent_nftables(topo: Topology, nets: Sequence[str], work: Path) -> None:
    """The agent's own nftables dataplane (``--dataplane=nftables``)."""
    config = agent_config(topo, nets, work)
    agent.assert_ok(agent.run_agent(topo, config, "--dataplane=nftables", timeout=900))


@dataclass(frozen=True)
class Dataplane:
    name: str
    backend: Backend  # the iptables backend the topology's helpers use
    apply: Callable[[Topology, Sequence[str], Path], None]
    sizes: tuple[int, ...]


def dataplanes(nftables: str) -> list[Dataplane]:
    nft_apply = apply_agent_nftables if nftables == "agent" else apply_nft_table
    return [
        Dataplane("iptables-nft", "nft", apply_agent_iptables, IPTABLES_SIZES),
        Dataplane("iptables-legacy", "legacy", apply_agent_iptables, IPTABLES_SIZES),
        Dataplane(f"nftables ({nftables})", "nft", nft_apply, NFTABLES_SIZES),
    ]


# -- one run: flush, send FLOWS new flows from pod, check what node did -----------------


@dataclass(frozen=True)
class Run:
    cpu_ns_per_flow: float
    wall_ns_per_flow: float
    ksoftirqd_ms: float


@contextmanager
def heavy_lock() -> Iterator[None]:
    """The machine-wide lock for heavy runs (flock(2) on the file flock(1) uses)."""
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def conntrack_count(topo: Topology, *filters: str) -> int:
    """Entries in node's conntrack table matching ``filters`` (conntrack -L prints the count)."""
    argv = ["conntrack", "-L", "-f", "ipv4", "-p", "udp", "--dport", str(DEST_PORT), *filters]
    proc = topology.run(topo.in_ns(topo.node, argv), timeout=120)
    match = re.search(r"(\d+) flow entries", proc.stderr)
    if match is None:
        raise RuntimeError(f"unexpected conntrack output: {proc.stderr!r}")
    return int(match.group(1))


def child_env() -> dict[str, str]:
    """This script's own imports (the repository and tests/) for its pod and dest modes."""
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "tests"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    return env


def one_run(topo: Topology, *, nat: bool, flows: int) -> Run:
    topology.run(topo.in_ns(topo.node, ["conntrack", "-F"]), check=False, timeout=120)
    argv = [sys.executable, __file__, "--send", DEST, str(DEST_PORT), str(flows)]
    out = topology.run(topo.in_ns(topo.pod, argv), timeout=600, env=child_env()).stdout
    sent = json.loads(out.strip().splitlines()[-1])
    if nat:
        new = conntrack_count(topo)
        masqueraded = conntrack_count(topo, "--reply-dst", topology.NODE_UPLINK)
        if new != flows or masqueraded != flows:
            raise RuntimeError(
                f"{topo.node}: {flows} flows sent, {new} conntrack entries, {masqueraded}"
                " masqueraded (dropped packets or a CIDR covering the destination?)"
            )
    return Run(
        cpu_ns_per_flow=sent["cpu_ns"] / flows,
        wall_ns_per_flow=sent["wall_ns"] / flows,
        ksoftirqd_ms=sent["ksoftirqd_ms"],
    )


def start_sink(topo: Topology) -> subprocess.Popen[str]:
    """A socket on the destination port in dest that never reads: the cheapest drop (no ICMP)."""
    argv = [sys.executable, __file__, "--sink", DEST, str(DEST_PORT)]
    proc = subprocess.Popen(
        topo.in_ns(topo.dest, argv), stdout=subprocess.PIPE, text=True, env=child_env()
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("sink in dest did not start")
    return proc


@contextmanager
def prepared(backend: Backend) -> Iterator[Topology]:
    """A fresh topology with its sink, both removed on the way out.

    Unreplied UDP entries expire after 30 s by default, less than one run at 50,000
    iptables rules takes; node keeps them for the whole run so the per-run check can count
    them all.
    """
    with topology.topology(backend) as topo:
        timeout = "net.netfilter.nf_conntrack_udp_timeout=3600"
        topology.run(topo.in_ns(topo.node, ["sysctl", "-q", "-w", timeout]))
        sink = start_sink(topo)
        try:
            yield topo
        finally:
            sink.kill()
            sink.wait(timeout=10)


# -- measuring -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    dataplane: str
    n: int
    prefix: int | None
    cpu_us: float  # median per-flow CPU of the sender (with its softirq work)
    wall_us: float
    extra_us: float | None  # median of paired (loaded - baseline) CPU per flow
    ksoftirqd_ms: float  # max over the runs


def paired(base: Topology, loaded: Topology, runs: int, flows: int) -> tuple[list[Run], list[Run]]:
    """``runs`` rounds of (baseline, loaded), under the heavy-run lock."""
    a: list[Run] = []
    b: list[Run] = []
    with heavy_lock():
        for _ in range(runs):
            a.append(one_run(base, nat=True, flows=flows))
            b.append(one_run(loaded, nat=True, flows=flows))
    return a, b


def row(name: str, n: int, prefix: int | None, runs: list[Run], base: list[Run] | None) -> Row:
    extra = None
    if base is not None:
        extra = statistics.median(
            (r.cpu_ns_per_flow - b.cpu_ns_per_flow) / 1000 for r, b in zip(runs, base, strict=True)
        )
    return Row(
        dataplane=name,
        n=n,
        prefix=prefix,
        cpu_us=statistics.median(r.cpu_ns_per_flow for r in runs) / 1000,
        wall_us=statistics.median(r.wall_ns_per_flow for r in runs) / 1000,
        extra_us=extra,
        ksoftirqd_ms=max(r.ksoftirqd_ms for r in runs),
    )


@dataclass(frozen=True)
class Settings:
    runs: int
    flows: int
    prefixes: tuple[int, ...]


def bench_dataplane(plane: Dataplane, work: Path, sizes: Sequence[int], cfg: Settings) -> list[Row]:
    """N=0 in one topology, every other (prefix, N) in a second one, in paired rounds."""
    rows: list[Row] = []
    with prepared(plane.backend) as base, prepared(plane.backend) as loaded:
        plane.apply(base, [], work)
        if topo_verdict(base) != "masq":
            raise RuntimeError(f"{plane.name}: N=0 did not masquerade {DEST}")
        baseline: list[Run] = []
        runs, flows = cfg.runs, cfg.flows
        for prefix in cfg.prefixes:
            for n in sizes:
                nets = cidrs(n, prefix)
                if n == 0 or nets is None:
                    continue
                with heavy_lock():  # loading 50,000 rules is heavy too
                    plane.apply(loaded, nets, work)
                if topo_verdict(loaded) != "masq":
                    raise RuntimeError(f"{plane.name}: N={n} did not masquerade {DEST}")
                a, b = paired(base, loaded, runs, flows)
                baseline += a
                rows.append(row(plane.name, n, prefix, b, a))
                print(f"  {rows[-1]}", flush=True)
        if 0 in sizes:
            if not baseline:
                with heavy_lock():
                    baseline = [one_run(base, nat=True, flows=flows) for _ in range(runs)]
            rows.insert(0, row(plane.name, 0, None, baseline, None))
    return rows


def topo_verdict(topo: Topology) -> str:
    return verdicts(topo, DEST)[DEST]


def bench_forwarding_only(runs: int, flows: int) -> Row:
    with prepared("nft") as topo, heavy_lock():
        done = [one_run(topo, nat=False, flows=flows) for _ in range(runs)]
    return row("no nat rules (forwarding only)", 0, None, done, None)


# -- inside pod and dest ---------------------------------------------------------------


def ksoftirqd_ns(cpu: int) -> int:
    """CPU time ksoftirqd/<cpu> has run, in ns (/proc/PID/schedstat), 0 if not found."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == f"ksoftirqd/{cpu}":
                return int((entry / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return 0


def udp_packet(src: str, dst: str, sport: int, dport: int) -> bytes:
    """IPv4 + UDP, checksums left to the kernel (IP) or omitted (UDP allows 0 over IPv4)."""
    payload = b"masq-bench"
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        0,
        0x4000,  # DF
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    return ip + udp


def send_main(dst: str, port: int, count: int) -> None:
    """In pod: ``count`` packets, each a new flow; print CPU and wall time as JSON."""
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # the softirq work stays on this CPU with us
    packets = [udp_packet(topology.POD_IP, dst, FIRST_SOURCE_PORT + i, port) for i in range(count)]
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    send = sock.sendto
    address = (dst, 0)
    gc.disable()
    soft0 = ksoftirqd_ns(cpu)
    cpu0 = time.thread_time_ns()
    wall0 = time.perf_counter_ns()
    for packet in packets:
        send(packet, address)
    wall1 = time.perf_counter_ns()
    cpu1 = time.thread_time_ns()
    time.sleep(0.05)  # anything deferred to ksoftirqd finishes and shows in its time
    soft1 = ksoftirqd_ns(cpu)
    sock.close()
    print(
        json.dumps(
            {
                "cpu_ns": cpu1 - cpu0,
                "wall_ns": wall1 - wall0,
                "ksoftirqd_ms": (soft1 - soft0) / 1e6,
                "cpu": cpu,
            }
        )
    )


def sink_main(address: str, port: int) -> None:
    """In dest: bind, never read (a full receive buffer drops silently), until killed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((address, port))
    print("ready", flush=True)
    while True:
        time.sleep(3600)


# -- report ----------------------------------------------------------------------------


def version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


def irq_time_accounting() -> str:
    """Whether softirq time is charged to the interrupted task (the method relies on it)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            config = f.read()
    except OSError:
        return "unknown (no /proc/config.gz): check that us/flow tracks wall us"
    if "CONFIG_IRQ_TIME_ACCOUNTING=y" in config:
        return "set: softirq time is NOT in the sender's CPU time, read wall us instead"
    return "unset (softirq time is charged to the sender thread, as the method assumes)"


def report(rows: list[Row], cfg: Settings, started: str, runtime_s: float, notes: list[str]) -> str:
    runs, flows = cfg.runs, cfg.flows
    lines = [
        "per-new-connection cost of the masquerade decision (benchmarks/bench_connections.py)",
        f"date: {started}; run took {runtime_s / 60:.0f} min",
        f"kernel: {platform.release()}; {version(['nft', '--version'])};"
        f" {version(['iptables-nft', '--version'])}; {version(['iptables-legacy', '--version'])}",
        f"CONFIG_IRQ_TIME_ACCOUNTING: {irq_time_accounting()}",
        f"machine: {os.cpu_count()} CPUs, SHARED with other jobs (heavy runs serialised by"
        f" {LOCK}, but not light ones): figures are indicative, compare within one file",
        f"method: pod -> node -> dest namespaces; {flows} flows per run, each one UDP packet"
        f" with a fresh source port (NEW in conntrack) to {DEST}, outside every CIDR, so each"
        " walks past all N and is masqueraded (checked per run in conntrack);"
        f" median of {runs} runs",
        "us/flow: sender thread CPU time per flow (includes the node's softirq work, run"
        " inline); wall time beside it",
        "ksoftirqd: most CPU time ksoftirqd on the sender's CPU used in one run (work the"
        " kernel deferred, missing from us/flow; near 0 means the figures hold it all)",
        "extra: median over rounds of (this N - the same dataplane at N=0), paired rounds"
        " alternating between two topologies, so the sender's own cost cancels",
        "CIDRs: disjoint, non-adjacent blocks of that length; iptables-nft's cost per rule"
        " depends on it (a /24 needs a 3-byte load, off nf_tables' fast path)",
        *notes,
        "",
        f"{'dataplane':<32}{'N':>9}{'CIDRs':>6}{'us/flow':>10}{'wall us':>10}{'extra us':>10}"
        f"{'ns/CIDR':>9}{'ksoftirqd':>11}",
    ]
    for r in rows:
        extra = f"{r.extra_us:10.2f}" if r.extra_us is not None else f"{'-':>10}"
        per = f"{r.extra_us * 1000 / r.n:9.2f}" if r.extra_us is not None and r.n else f"{'-':>9}"
        length = f"/{r.prefix}" if r.prefix is not None else "-"
        lines.append(
            f"{r.dataplane:<32}{r.n:>9}{length:>6}{r.cpu_us:10.2f}{r.wall_us:10.2f}{extra}{per}"
            f"{r.ksoftirqd_ms:9.1f}ms"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description="per-new-connection cost (see the docstring)")
    parser.add_argument("--send", nargs=3, metavar=("DST", "PORT", "COUNT"))
    parser.add_argument("--sink", nargs=2, metavar=("ADDRESS", "PORT"))
    parser.add_argument(
        "--nftables",
        choices=("table", "agent"),
        default="table",
        help="nftables dataplane: a table loaded with nft -f (today) or the agent's own",
    )
    parser.add_argument("--only", default="", help="comma-separated dataplane name prefixes")
    parser.add_argument("--sizes", default="", help="comma-separated N (default: all)")
    parser.add_argument(
        "--prefixes", default="24", help="comma-separated CIDR lengths (default: 24)"
    )
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--flows", type=int, default=FLOWS)
    args = parser.parse_args()
    if args.send:
        send_main(args.send[0], int(args.send[1]), int(args.send[2]))
        return 0
    if args.sink:
        sink_main(args.sink[0], int(args.sink[1]))
        return 0
    problem = topology.environment_problem()
    if problem is not None:
        print(f"bench_connections: {problem}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.monotonic()
    only = [p for p in args.only.split(",") if p]
    chosen = [int(s) for s in args.sizes.split(",") if s]
    rows = [bench_forwarding_only(args.runs, args.flows)]
    print(f"  {rows[0]}", flush=True)
    cfg = Settings(args.runs, args.flows, tuple(int(p) for p in args.prefixes.split(",")))
    planes = [
        plane
        for plane in dataplanes(args.nftables)
        if not only or any(plane.name.startswith(p) for p in only)
    ]
    with tempfile.TemporaryDirectory(prefix="masq-conn-") as d:
        for plane in planes:
            sizes = [n for n in plane.sizes if not chosen or n in chosen]
            rows += bench_dataplane(plane, Path(d), sizes, cfg)
    notes = [
        f"skipped: N={n} of /{p} (does not fit below 127.0.0.0)"
        for p in cfg.prefixes
        for n in sorted({n for plane in planes for n in plane.sizes if not chosen or n in chosen})
        if n and cidrs(n, p) is None
    ]
    text = report(rows, cfg, started, time.monotonic() - t0, notes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
