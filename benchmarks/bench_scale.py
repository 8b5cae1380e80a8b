#!/usr/bin/env python3
"""The agent at 0 to 100,000 non-masquerade CIDRs, per dataplane (run as root).

For iptables-nft, iptables-legacy and nftables, and N distinct /24s (0, 1,000, 10,000,
50,000; also 100,000 for nftables) in files of 10,000 (cidrLimit raised; each file is
under 1 MiB), always with ``--enable-ipv6``, in a fresh network namespace per case:

1. first sync: ``--once`` on an empty node: wall, CPU of the agent and its children
   (RUSAGE_CHILDREN delta around it; the agent's own share from ``getrusage`` at its
   exit), the agent's peak RSS (VmHWM at exit);
2. steady-state ``--once`` on the unchanged kernel: the same, and the processes it
   starts (logging wrappers on PATH, as bench_agent.py does);
3. the daemon idle at ``--resync-interval=1``: CPU per resync (the agent itself and its
   children, between two sync ends ~20 s apart), processes per resync (a second run
   with the wrappers), VmHWM;
4. a one-CIDR change in the daemon (default interval, so inotify reacts): one CIDR
   added to one file (atomic rename, as the kubelet does), time until the kernel holds
   it (nf_tables: the kernel's notification of the new rule or set element, read from
   NFNLGRP_NFTABLES as ``nft monitor`` does; legacy iptables: the nat table's entry
   count polled with IPT_SO_GET_INFO every ms; the CIDR is checked afterwards),
   median of 5;
5. 3 and 4 again while a foreign writer commits its own small table ``ip foreign``
   every second (``nft -f``, as kube-proxy does), where the generation shortcut
   cannot help;
6. at the largest N: ``--explain`` of an address inside and one outside the list,
   against the live rules;
7. for N = 50,000 also the switch from a one-CIDR config to 50,000 in one ``--once``.

Writes benchmarks/results/scale.txt; finished cases are kept in
benchmarks/results/scale.json.tmp, so a run can be resumed or redone in parts
(``--only nftables:100000``).  Run: benchmarks/run.sh scale
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import math
import os
import queue
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentproc import AgentRunner, Idle, OnceRun
from benchlib import (
    PER_FILE,
    PYTHON,
    REPO,
    RESULTS,
    env,
    file_text,
    header,
    heavy_lock,
    make_wrappers,
    ns_run,
    precompile,
    slash24s,
    write_config,
    write_file,
)

OUT = RESULTS / "scale.txt"
CACHE = RESULTS / "scale.json.tmp"
DATAPLANES: dict[str, list[str]] = {
    "iptables-nft": ["--dataplane=iptables", "--iptables-backend=nft"],
    "iptables-legacy": ["--dataplane=iptables", "--iptables-backend=legacy"],
    "nftables": ["--dataplane=nftables"],
}
SIZES: dict[str, tuple[int, ...]] = {
    "iptables-nft": (0, 1_000, 10_000, 50_000),
    "iptables-legacy": (0, 1_000, 10_000, 50_000),
    "nftables": (0, 1_000, 10_000, 50_000, 100_000),
}
SWITCH_TO = 50_000
CHAIN = "IP-MASQ-AGENT"
TABLE = "ip-masq-agent"
NFT_SET = "non-masquerade-v4"
RETURN_COMMENT = "ip-masq-agent: local traffic is not subject to MASQUERADE"
IDLE_SECONDS = 20.0
COUNT_SECONDS = 8.0
STEADY_RUNS = 3
CHANGE_TRIALS = 5
CHANGE_TIMEOUT = 120.0
OUTSIDE = "203.0.113.10"
FOREIGN_BATCH = """add table ip foreign
flush table ip foreign
table ip foreign {{
  set services {{
    type ipv4_addr . inet_proto . inet_service
    elements = {{ 10.96.0.1 . tcp . 443, 10.96.0.10 . udp . 53, 10.96.0.10 . tcp . 53 }}
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr . meta l4proto . th dport @services counter comment "round {round}"
  }}
}}
"""


@dataclass
class Case:
    plane: str
    n: int
    date: str = ""
    in_kernel: int = 0
    first: OnceRun | None = None
    steady: list[OnceRun] = field(default_factory=list)
    idle: Idle | None = None
    change: list[float] = field(default_factory=list)
    foreign_idle: Idle | None = None
    foreign_change: list[float] = field(default_factory=list)
    explain: dict[str, str] = field(default_factory=dict)
    switch: OnceRun | None = None
    notes: list[str] = field(default_factory=list)


# --- the agent ---------------------------------------------------------------


@dataclass
class Node:
    """The agent in the namespace under test, its dataplane and its config dir."""

    runner: AgentRunner
    plane: str
    cfg: Path

    @property
    def ns(self) -> str:
        return self.runner.ns

    @property
    def iptables(self) -> str:
        return f"iptables-{self.plane.split('-')[1]}"

    def in_kernel(self) -> int:
        """How many of our CIDRs the kernel holds for IPv4 (a sanity check, not timed)."""
        if self.plane == "nftables":
            listing = ns_run(self.ns, ["nft", "-j", "list", "set", "inet", TABLE, NFT_SET])
            objects = json.loads(listing.stdout)["nftables"]
            return sum(len(o["set"].get("elem", ())) for o in objects if "set" in o)
        rules = ns_run(self.ns, [self.iptables, "-t", "nat", "-S", CHAIN]).stdout.splitlines()
        return sum(1 for r in rules if "-j RETURN" in r and "169.254.0.0/16" not in r)

    def holds(self, cidr: str) -> bool:
        """Whether the kernel holds ``cidr`` in our non-masquerade list."""
        if self.plane == "nftables":
            inside = cidr.split("/", maxsplit=1)[0].rsplit(".", 1)[0] + ".1"  # in the /24
            probe = ["nft", "get", "element", "inet", TABLE, NFT_SET, f"{{ {inside} }}"]
            return ns_run(self.ns, probe, check=False).returncode == 0
        check = [self.iptables, "-t", "nat", "-C", CHAIN, "-d", cidr, "-m", "comment"]
        check += ["--comment", RETURN_COMMENT, "-j", "RETURN"]
        return ns_run(self.ns, check, check=False).returncode == 0

    def idle_figures(self) -> Idle:
        return self.runner.idle_figures(IDLE_SECONDS, COUNT_SECONDS)

    def change_latency(self, files: list[list[str]], first: int, notes: list[str]) -> list[float]:
        """Add one CIDR to the first file, CHANGE_TRIALS times; seconds until the kernel has it.

        A change the kernel does not hold CHANGE_TIMEOUT later counts as infinite; the
        trials stop there and the agent's last log lines go to ``notes``.
        """
        latencies = []
        with self.runner.daemon(60.0) as d:
            watcher = Watcher(self.ns, self.plane)
            try:
                for t in range(CHANGE_TRIALS):
                    cidr = f"100.{64 + (first + t) // 256}.{(first + t) % 256}.0/24"
                    files[0].append(cidr)
                    watcher.drain()
                    start = time.monotonic()
                    write_file(self.cfg, "ip-masq-00", file_text(files[0]))
                    seen = watcher.wait_for(CHANGE_TIMEOUT)
                    if seen is None or not self.settled(cidr):
                        latencies.append(math.inf)
                        tail = " / ".join(d.text().splitlines()[-4:])
                        notes.append(
                            f"{cidr} was not in the kernel {CHANGE_TIMEOUT:.0f} s after the"
                            f" file changed; the agent's last lines: {tail[-1200:]}"
                        )
                        break
                    latencies.append(seen - start)
                    time.sleep(1.0)
            finally:
                watcher.stop()
        if watcher.overruns:
            notes.append(f"the commit watcher lost events {watcher.overruns} times (ENOBUFS)")
        return latencies

    def settled(self, cidr: str) -> bool:
        """The kernel holds ``cidr`` (legacy: the change seen may still be in flight)."""
        for _ in range(100):
            if self.holds(cidr):
                return True
            time.sleep(0.1)
        return False

    def explain(self, address: str) -> str:
        start = time.perf_counter()
        done = ns_run(self.ns, self.runner.argv(f"--explain={address}"), check=False)
        wall = time.perf_counter() - start
        lines = done.stdout.splitlines()
        said = [ln for ln in lines if ln.startswith(("masqueraded:", "rules:", "because:"))]
        return f"exit {done.returncode}, {wall:.2f} s: " + "; ".join(said)


def make_node(ns: str, plane: str, cfg: Path, tmp: Path) -> Node:
    flags = [f"--config-dir={cfg}", "--enable-ipv6", *DATAPLANES[plane]]
    return Node(AgentRunner(ns, flags, tmp, 1 if plane == "nftables" else 2), plane, cfg)


# --- watching the kernel for a change -------------------------------------------

IPT_SO_GET_INFO = 64  # IPT_BASE_CTL
_GETINFO = struct.Struct("=32sI5I5III")  # struct ipt_getinfo


def legacy_nat_entries() -> tuple[int, int]:
    """(entries, size) of the legacy nat table, from the kernel without copying it."""
    libc = ctypes.CDLL(None, use_errno=True)
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as s:
        buf = ctypes.create_string_buffer(_GETINFO.pack(b"nat", 0, *[0] * 10, 0, 0))
        size = ctypes.c_uint32(_GETINFO.size)
        if libc.getsockopt(s.fileno(), socket.IPPROTO_IP, IPT_SO_GET_INFO, buf, ctypes.byref(size)):
            raise OSError(ctypes.get_errno(), "IPT_SO_GET_INFO")
        fields = _GETINFO.unpack(buf.raw[: _GETINFO.size])
        return int(fields[-2]), int(fields[-1])


def watch_legacy() -> None:
    """In the namespace: print a line each time the legacy nat table changes."""
    last = legacy_nat_entries()
    print("ready", *last, flush=True)
    while True:
        now = legacy_nat_entries()
        if now != last:
            print("changed", *now, flush=True)
            last = now
        time.sleep(0.001)


NFNLGRP_NFTABLES = 7
NFT_EVENTS = {6: "newrule", 12: "newsetelem"}  # NFT_MSG_NEWRULE, NFT_MSG_NEWSETELEM
_NLMSG = struct.Struct("=IHHII")


def _strings(body: bytes) -> dict[int, str]:
    """The top-level string attributes of a netlink message body (after nfgenmsg)."""
    found, at = {}, 4
    while at + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, at)
        if length < 4:
            break
        value = body[at + 4 : at + length]
        if value.endswith(b"\0"):
            found[kind & 0x3FFF] = value[:-1].decode(errors="replace")
        at += (length + 3) & ~3
    return found


def watch_nft() -> None:
    """In the namespace: print each new rule and set element nf_tables announces.

    It listens to the kernel's own commit notifications (NFNLGRP_NFTABLES), as ``nft
    monitor`` does, but keeps no cache: ``nft monitor`` re-reads the ruleset for
    events it prints, which beside a 50,000-rule chain and a foreign writer makes it
    fall behind and lose events.
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as sock:  # NETLINK_NETFILTER
        sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        print("ready", flush=True)
        while True:
            try:
                data = sock.recv(1 << 20)
            except OSError as e:  # ENOBUFS: events were lost
                print("overrun", e.errno, flush=True)
                continue
            at = 0
            while at + _NLMSG.size <= len(data):
                length, kind, *_ = _NLMSG.unpack_from(data, at)
                if length < _NLMSG.size:
                    break
                event = NFT_EVENTS.get(kind & 0xFF) if kind >> 8 == 10 else None
                if event is not None:
                    attrs = _strings(data[at + _NLMSG.size : at + length])
                    print(event, attrs.get(1, "?"), attrs.get(2, "?"), flush=True)
                at += (length + 3) & ~3


class Watcher:
    """Lines that tell of commits, each with the time it arrived.

    Legacy iptables: any change of the nat table's entry count.  nf_tables: a new rule
    in our chain (iptables-nft) or a new element in our set; the agent writes nothing
    else while a change is timed, and the kernel is checked for the CIDR afterwards.
    """

    def __init__(self, ns: str, plane: str) -> None:
        self.legacy = plane == "iptables-legacy"
        mode = "--watch-legacy" if self.legacy else "--watch-nft"
        self.wanted = {
            "iptables-legacy": "changed",
            "iptables-nft": f"newrule nat {CHAIN}",
            "nftables": f"newsetelem {TABLE} {NFT_SET}",
        }[plane]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, PYTHON, __file__, mode],
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.lines.get(timeout=30)  # "ready"
        self.overruns = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), line))

    def drain(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()

    def wait_for(self, timeout: float) -> float | None:
        """The arrival time of the first line telling of the agent's commit."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return None
            self.overruns += line.startswith("overrun")
            if line.startswith(self.wanted):
                return at

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@contextmanager
def foreign_writer(ns: str, interval: float = 1.0) -> Iterator[None]:
    """Another program committing its own small table every ``interval`` s (kube-proxy-like)."""
    stop = threading.Event()
    failures: list[str] = []

    def loop() -> None:
        round_, next_at = 0, time.monotonic()
        while not stop.wait(max(next_at - time.monotonic(), 0)):
            done = ns_run(ns, ["nft", "-f", "-"], stdin=FOREIGN_BATCH.format(round=round_))
            if done.returncode != 0:
                failures.append(done.stderr)
            round_ += 1
            next_at += interval

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failures:
        raise RuntimeError(f"foreign writer failed: {failures[0]}")


# --- one case ------------------------------------------------------------------


def run_case(plane: str, n: int, tmp: Path, largest: bool) -> Case:
    case = Case(plane, n, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    cfg = tmp / f"cfg-{plane}-{n}"
    cfg.mkdir(exist_ok=True)
    files = write_config(cfg, n)

    def say(what: str) -> None:
        print(f"  {plane} {n:,}: {what}", flush=True)

    from integration.topology import namespace  # see switch_case

    with namespace("scale") as ns:
        node = make_node(ns, plane, cfg, tmp)
        case.first = node.runner.once()
        case.in_kernel = node.in_kernel()
        if case.in_kernel != n:
            raise RuntimeError(f"kernel holds {case.in_kernel} CIDRs, not {n}")
        say(f"first sync {case.first.wall:.2f} s")
        case.steady = [node.runner.once() for _ in range(STEADY_RUNS)]
        case.steady[0].processes = node.runner.once(wrap=True).processes
        say(f"steady --once {statistics.median(r.wall for r in case.steady):.2f} s")
        case.idle = node.idle_figures()
        say(f"idle {case.idle.own_ms + case.idle.children_ms:.1f} ms/resync")
        case.change = node.change_latency(files, 0, case.notes)
        say(f"one CIDR {statistics.median(case.change):.2f} s")
        with foreign_writer(ns):
            case.foreign_idle = fi = node.idle_figures()
            say(f"idle with a foreign writer {fi.own_ms + fi.children_ms:.1f} ms/resync")
            case.foreign_change = node.change_latency(files, CHANGE_TRIALS, case.notes)
            say(f"one CIDR with a foreign writer {statistics.median(case.foreign_change):.2f} s")
        if largest:
            inside = str(slash24s(n // 2, 1)[0].network_address + 7)
            case.explain = {a: node.explain(a) for a in (inside, OUTSIDE)}
    if n == SWITCH_TO:
        case.switch = switch_case(plane, tmp)
        say(f"1 -> {SWITCH_TO:,} in one --once {case.switch.wall:.2f} s")
    return case


def switch_case(plane: str, tmp: Path) -> OnceRun:
    """From a one-CIDR chain (or set) to 50,000 CIDRs in one ``--once``."""
    # here, not at the top: the in-namespace child re-runs this file without tests/ on its path
    from integration.topology import namespace

    cfg = tmp / f"cfg-{plane}-switch"
    cfg.mkdir(exist_ok=True)
    with namespace("scale-switch") as ns:
        node = make_node(ns, plane, cfg, tmp)
        write_config(cfg, 1)
        node.runner.once()
        write_config(cfg, SWITCH_TO)
        run = node.runner.once()
        if (held := node.in_kernel()) != SWITCH_TO:
            raise RuntimeError(f"after the switch the kernel holds {held} CIDRs")
    return run


# --- results ---------------------------------------------------------------------


def load_cache() -> dict[str, Case]:
    if not CACHE.exists():
        return {}
    out: dict[str, Case] = {}
    stored: dict[str, dict[str, Any]] = json.loads(CACHE.read_text())
    for key, raw in stored.items():
        for name in ("first", "switch"):
            raw[name] = OnceRun(**raw[name]) if raw.get(name) else None
        raw["steady"] = [OnceRun(**r) for r in raw["steady"]]
        for name in ("idle", "foreign_idle"):
            raw[name] = Idle(**raw[name]) if raw.get(name) else None
        out[key] = Case(**raw)
    return out


def save_cache(cases: dict[str, Case]) -> None:
    CACHE.write_text(json.dumps({k: asdict(c) for k, c in cases.items()}, indent=1))


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], notes: Sequence[str] = ()
) -> list[str]:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    return ["", title, line(columns), *(line(r) for r in rows), *notes]


def idle_row(idle_: Idle | None) -> list[str]:
    if idle_ is None:
        return ["-"] * 6
    return [
        f"{idle_.own_ms + idle_.children_ms:.1f}",
        f"{idle_.own_ms:.1f}",
        f"{idle_.children_ms:.1f}",
        f"{idle_.processes:.2f}",
        f"{idle_.resyncs}",
        f"{idle_.hwm_mb:.0f}",
    ]


def render(cases: dict[str, Case]) -> list[str]:
    ordered = [c for p in DATAPLANES for n in SIZES[p] if (c := cases.get(f"{p}:{n}"))]
    out = header("ip-masq-agent at scale (benchmarks/bench_scale.py)", "bench_scale.py")
    dates = sorted(c.date for c in ordered)
    out += [
        f"# cases measured {dates[0]} .. {dates[-1]}" if dates else "# no cases",
        "# every agent run: --enable-ipv6, N distinct IPv4 /24s in files of 10,000,",
        "# a fresh network namespace per case, bytecode cached (PYTHONDONTWRITEBYTECODE unset)",
    ]
    first = [
        [
            c.plane,
            f"{c.n:,}",
            f"{r.wall:.2f}",
            f"{r.cpu:.2f}",
            f"{r.own:.2f}",
            f"{r.children:.2f}",
            f"{r.hwm_mb:.0f}",
        ]
        for c in ordered
        if (r := c.first)
    ]
    out += table(
        "First sync (--once on an empty node)",
        ["dataplane", "N", "wall s", "CPU s", "agent s", "children s", "agent peak RSS MB"],
        first,
        [
            "CPU = agent + children (RUSAGE_CHILDREN delta); agent/children from getrusage at exit",
            "(cases measured before 2026-11-28: from os.times, in 10 ms ticks)",
        ],
    )
    steady = [
        [
            c.plane,
            f"{c.n:,}",
            f"{med([r.wall for r in c.steady]):.2f}",
            f"{med([r.cpu for r in c.steady]):.2f}",
            f"{med([r.own for r in c.steady]):.2f}",
            f"{len(c.steady[0].processes)}",
            f"{med([r.hwm_mb for r in c.steady]):.0f}",
        ]
        for c in ordered
        if c.steady
    ]
    out += table(
        f"Steady-state --once on the unchanged kernel (median of {STEADY_RUNS})",
        ["dataplane", "N", "wall s", "CPU s", "agent s", "processes", "peak RSS MB"],
        steady,
    )
    for c in ordered:
        if c.steady and c.n in (0, max(SIZES[c.plane])):
            out.append(f"  {c.plane} {c.n:,}: " + "; ".join(c.steady[0].processes))
    idle_cols = ["per resync ms", "agent ms", "children ms", "processes", "resyncs", "VmHWM MB"]
    picks: list[tuple[str, Callable[[Case], Idle | None]]] = [
        ("Daemon idle at --resync-interval=1 (CPU per resync, ~20 s)", lambda c: c.idle),
        (
            "The same with a foreign writer committing `ip foreign` every second",
            lambda c: c.foreign_idle,
        ),
    ]
    for title, pick in picks:
        rows = [[c.plane, f"{c.n:,}", *idle_row(pick(c))] for c in ordered]
        out += table(title, ["dataplane", "N", *idle_cols], rows)
        for c in ordered:
            found = pick(c)
            if found is not None and c.n == max(SIZES[c.plane]):
                cmds = "; ".join(found.commands) or "none"
                out.append(f"  {c.plane} {c.n:,}: writes {found.writes}; processes: {cmds}")
    rows = [
        [
            c.plane,
            f"{c.n:,}",
            f"{med(c.change):.2f}",
            f"{max(c.change, default=float('nan')):.2f}",
            f"{med(c.foreign_change):.2f}",
            f"{max(c.foreign_change, default=float('nan')):.2f}",
        ]
        for c in ordered
    ]
    out += table(
        f"One CIDR added to one file in daemon mode: seconds until the kernel holds it"
        f" ({CHANGE_TRIALS} trials)",
        ["dataplane", "N", "median", "max", "foreign writer: median", "max"],
        rows,
        [
            "the file is replaced by rename; timed to the commit (nf_tables' notification of the"
            " new rule or element, or the legacy nat table's entry count)"
        ],
    )
    switched = [
        [c.plane, f"{r.wall:.2f}", f"{r.cpu:.2f}", f"{r.own:.2f}", f"{r.hwm_mb:.0f}"]
        for c in ordered
        if (r := c.switch)
    ]
    out += table(
        f"From a one-CIDR config to {SWITCH_TO:,} in one --once",
        ["dataplane", "wall s", "CPU s", "agent s", "agent peak RSS MB"],
        switched,
    )
    out += ["", "--explain at the largest N (live rules)"]
    out += [f"  {c.plane} {c.n:,} {a}: {e}" for c in ordered for a, e in c.explain.items()]
    notes = [f"  {c.plane} {c.n:,}: {note}" for c in ordered for note in c.notes]
    out += ["", "Notes", *notes] if notes else []
    return out + targets(cases)


def targets(cases: dict[str, Case]) -> list[str]:
    c = cases.get("nftables:50000")
    out = ["", "Targets (the issue's, nftables at 50,000 CIDRs with IPv6 enabled)"]
    if c is None or c.first is None or c.idle is None or c.foreign_idle is None:
        return [*out, "  not measured"]

    def verdict(ok: bool) -> str:
        return "MET" if ok else "MISSED"

    worst = max(c.idle, c.foreign_idle, key=lambda i: i.own_ms + i.children_ms)
    resync_s = (worst.own_ms + worst.children_ms) / 1000
    nft_per_resync = max(c.idle.processes, c.foreign_idle.processes)
    change = max(med(c.change), med(c.foreign_change))
    rss = max(c.first.hwm_mb, c.idle.hwm_mb, c.foreign_idle.hwm_mb, *(r.hwm_mb for r in c.steady))
    writes = c.idle.writes + c.foreign_idle.writes
    out += [
        f"  first sync under 2 s: {c.first.wall:.2f} s wall -> {verdict(c.first.wall < 2)}",
        f"  steady-state daemon resync under 0.5 s CPU: {c.idle.own_ms + c.idle.children_ms:.0f}"
        f" ms idle, {c.foreign_idle.own_ms + c.foreign_idle.children_ms:.0f} ms with a foreign"
        f" writer -> {verdict(resync_s < 0.5)}",
        f"  read-only: {writes} writes during the idle runs -> {verdict(writes == 0)}",
        f"  at most one nft process per resync: {c.idle.processes:.2f} idle,"
        f" {c.foreign_idle.processes:.2f} with a foreign writer"
        f" -> {verdict(nft_per_resync <= 1.0)}",
        f"  one CIDR change in the kernel under 1 s: median {med(c.change):.2f} s idle,"
        f" {med(c.foreign_change):.2f} s with a foreign writer -> {verdict(change < 1)}",
        f"  peak RSS under 100 MB: {rss:.0f} MB (largest of first sync, steady --once and the"
        f" daemons) -> {verdict(rss < 100)}",
        "",
        "The issue's figures for the iptables dataplane, for comparison: at 10,000 first sync"
        " 1.3 s, steady --once 0.77 s, one CIDR 1.3 s, 40 MB; at 50,000: 6.0 s, 3.3 s, 5.9 s,"
        " 100 MB; 1 -> 50,000 in one --once 17 s; idle daemon resync at 50,000 1.4 s CPU,"
        " 119 MB peak RSS.",
    ]
    return out


# --- the first sync alone (--first-sync) ---------------------------------------------

FIRST_OUT = RESULTS / "firstsync.txt"
FIRST_RUNS = 5


def first_sync_config(cfg: Path, n: int) -> None:
    """N non-adjacent /24s (one /24 in every /23 from 11.0.0.0) in files of 10,000: no two
    elements can merge into one interval, as issue 17 measures."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    nets = [str(ipaddress.IPv4Network((base + 512 * i, 24))) for i in range(n)]
    for old in cfg.glob("ip-masq*"):
        old.unlink()
    for i in range(0, n, PER_FILE):
        write_file(cfg, f"ip-masq-{i // PER_FILE:02d}", file_text(nets[i : i + PER_FILE]))


def first_sync_rows(sizes: list[int], runs: int, code: Path, label: str, tmp: Path) -> list[str]:
    """Median and best of ``runs`` first syncs per size and table family, each in a fresh
    namespace, the kernel's element count checked after the first of each."""
    from integration.topology import namespace  # see switch_case

    rows = []
    for n in sizes:
        cfg = tmp / f"cfg-first-{n}"
        cfg.mkdir(exist_ok=True)
        first_sync_config(cfg, n)
        for family, extra in (("ip", []), ("inet", ["--enable-ipv6"])):
            flags = [f"--config-dir={cfg}", *DATAPLANES["nftables"], *extra]
            done: list[OnceRun] = []
            for i in range(runs):
                with namespace("first") as ns, heavy_lock():
                    done.append(AgentRunner(ns, flags, tmp, code=code).once())
                    if i == 0:
                        listing = ns_run(ns, ["nft", "-j", "list", "set", family, TABLE, NFT_SET])
                        objects = json.loads(listing.stdout)["nftables"]
                        held = sum(len(o["set"].get("elem", ())) for o in objects if "set" in o)
                        if held != n:
                            raise RuntimeError(f"kernel holds {held} CIDRs, not {n}")
            walls = sorted(r.wall for r in done)
            print(f"  {label} {family} {n:,}: {walls}", flush=True)
            rows.append(
                f"{label:>7} {family:>5} {n:>8,} {med([r.wall for r in done]):>7.2f}"
                f" {walls[0]:>5.2f} {med([r.cpu for r in done]):>6.2f}"
                f" {med([r.own for r in done]):>6.2f} {med([r.children for r in done]):>9.2f}"
                f" {max(r.hwm_mb for r in done):>9.0f}"
            )
    return rows


def first_sync_main(sizes: list[int], runs: int, code: Path, label: str, note: str) -> int:
    """Replace this label's rows in firstsync.txt (a run per code version: before, after),
    with ``note`` saying what the label's code is."""
    precompile()
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(code / "masq")], check=True)
    with tempfile.TemporaryDirectory(prefix="mqfirst-") as d:
        rows = first_sync_rows(sizes, runs, code, label, Path(d))
    old = FIRST_OUT.read_text().splitlines() if FIRST_OUT.exists() else []
    notes = [ln for ln in old if ln.startswith("# code ") and ln.split()[2] != f"{label}:"]
    kept = [
        ln for ln in old if ln and not ln.startswith(("#", "   code")) and ln.split()[0] != label
    ]
    lines = [
        *header("the first sync alone: --once on an empty node, nftables", "bench_scale.py"),
        f"# N non-adjacent IPv4 /24s in files of 10,000; {runs} runs per row, each in a fresh"
        " namespace; wall and best wall, CPU = agent + children (RUSAGE_CHILDREN), agent and"
        " children from getrusage at its exit, peak RSS = the agent's VmHWM (largest run)",
        *notes,
        f"# code {label}: {note or code}",
        "",
        "   code table        N  wall s  best  CPU s agent s children s  peak RSS MB",
        *kept,
        *rows,
    ]
    FIRST_OUT.write_text("\n".join(lines) + "\n")
    print(FIRST_OUT.read_text())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watch-legacy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--watch-nft", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", default="", help="e.g. nftables:50000,iptables-nft:0")
    parser.add_argument("--fresh", action="store_true", help="forget cases measured before")
    parser.add_argument("--render", action="store_true", help="only rewrite scale.txt")
    parser.add_argument("--smoke", action="store_true", help="short runs, results not kept")
    parser.add_argument(
        "--first-sync", default="", help="only the first sync at these sizes, e.g. 50000,100000"
    )
    parser.add_argument("--runs", type=int, default=FIRST_RUNS, help="first syncs per row")
    parser.add_argument("--code", type=Path, default=REPO, help="the agent's code (a checkout)")
    parser.add_argument("--label", default="now", help="the rows' code label, e.g. before")
    parser.add_argument("--note", default="", help="what the label's code is (a commit)")
    args = parser.parse_args()
    if args.watch_legacy:
        watch_legacy()
        return 0
    if args.watch_nft:
        watch_nft()
        return 0
    if os.geteuid() != 0:
        print("run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    if args.first_sync:
        sizes = [int(n) for n in args.first_sync.split(",")]
        return first_sync_main(sizes, args.runs, args.code, args.label, args.note)
    if args.smoke:
        global IDLE_SECONDS, COUNT_SECONDS, STEADY_RUNS, CHANGE_TRIALS, CACHE, OUT
        IDLE_SECONDS, COUNT_SECONDS, STEADY_RUNS, CHANGE_TRIALS = 3.0, 2.0, 1, 2
        CACHE, OUT = Path("/tmp/mqscale-smoke.json"), Path("/tmp/mqscale-smoke.txt")
    cases = {} if args.fresh else load_cache()
    wanted = [f"{p}:{n}" for p in DATAPLANES for n in SIZES[p]]
    if args.only:
        wanted = [w for w in wanted if w in args.only.split(",")]
    elif not args.render:
        wanted = [w for w in wanted if w not in cases]
    if args.render:
        wanted = []
    precompile()
    with tempfile.TemporaryDirectory(prefix="mqscale-") as d:
        tmp = Path(d)
        make_wrappers(tmp, tmp / "exec.log")
        for key in wanted:
            plane, n = key.split(":")
            print(f"== {key}", flush=True)
            with nullcontext() if args.smoke else heavy_lock():
                case = run_case(plane, int(n), tmp, int(n) == max(SIZES[plane]))
            cases[key] = case
            save_cache(cases)
    OUT.write_text("\n".join(render(cases)) + "\n")
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
