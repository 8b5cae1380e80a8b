#!/usr/bin/env python3
"""Issue 17's target table, measured (run as root): the nftables control plane at scale.

For N non-adjacent IPv4 /24s (every other /24 from 11.0.0.0; 50,000 and 100,000 by
default) in files of 10,000, nftables mode, with and without ``--enable-ipv6`` (with it:
also 100 IPv6 /64s, and the table is ``inet``), in a fresh pod -> node -> dest topology
(tests/integration/topology.py) per case:

1. first sync: ``--once`` on an empty node: wall, CPU of the agent and its children;
2. idle resync, quiet: a daemon at ``--resync-interval=1`` (not the default 60 s, to get
   many resyncs): CPU of the agent and its children per resync (/proc/PID/stat between
   two sync ends), processes started per resync (a second run with logging wrappers on
   PATH), listings (the ``listed`` lines ``--v=2`` logs for each listing of our table);
3. the same beside a foreign writer committing its own small table every 0.5 s
   (bench_scale.foreign_writer);
4. one daemon at the default 60 s resync through the rest, at ``--v=2``:
   a. refreshing /metrics scrapes (each the first more than 5 s after the last refresh,
      as bench_scrape.py forces it): the agent's CPU per scrape;
   b. one CIDR (198.51.100.0/24) added to a file of 10,000 (atomic rename): time from
      the rename until new flows from pod to 198.51.100.10 keep the pod's address at
      dest and keep it from then on (UDP flows every 10 ms, each from a new source port,
      so each is a new NAT decision; arrival times stamped by the sink in dest with the
      machine's one monotonic clock); removed again between trials;
   c. one of our elements (172.20.0.0/24) deleted by ``nft delete element`` in the node
      namespace: time from the first flow to 172.20.0.10 masqueraded (the deletion in
      effect) until new flows keep the pod's address again, for good;
   d. b again beside the foreign writer, and one refreshing scrape beside it;
   e. the daemon's VmHWM at the end (its peak RSS through all of 4).

Writes benchmarks/results/controlplane.txt (finished cases are kept in
benchmarks/results/controlplane.json.tmp, so a run can be resumed or rendered again).
Each case holds /tmp/masq-heavy.lock.  Run: benchmarks/run.sh controlplane [ARGS]
(``--cases 2000`` for a quick check; ``--cases 50000,100000,50000+v6``).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agentproc import LISTED, AgentRunner, Daemon, Idle, OnceRun
from bench_scale import foreign_writer, table
from bench_scrape import FRESH_SECONDS, Scraper
from benchlib import (
    PER_FILE,
    RESULTS,
    file_text,
    header,
    heavy_lock,
    make_wrappers,
    precompile,
    stat_cpu,
    vm_hwm_mb,
    write_file,
)
from integration import flows
from integration.topology import (
    DEST_DOC_B,
    DEST_PRIVATE,
    NODE_UPLINK,
    POD_IP,
    Topology,
    run,
    topology,
)

OUT = RESULTS / "controlplane.txt"
WRITER_INTERVAL = 0.5
IDLE_RESYNC = 1.0
IDLE_SECONDS = 15.0
COUNT_SECONDS = 6.0
SCRAPES = 4
QUICK = 5  # scrapes right after a refreshing one, within FRESH_SECONDS: no refresh
CHANGE_TRIALS = 3
HEAL_TRIALS = 2
HEAL_APART = 11.0  # s between deletions: a repeat within 10 s is backed off (by design)
WAIT = 10.0  # how long a change or a repair may take before it counts as missed
STABLE = 0.3  # the new decision must hold this long (every flow in it) to count
PROBE_INTERVAL = 0.01
ADDED = "198.51.100.0/24"  # DEST_DOC_B's: added and removed by the change trials
DELETED = "172.20.0.0/24"  # DEST_PRIVATE's: in the config, deleted by "another program"
IPV6_CIDRS = 100
SINK_PORT = 9998

# A sink in dest that prints each flow as it arrives: monotonic time and source address.
_TIMED_SINK = r"""
import signal, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind((sys.argv[1], int(sys.argv[2])))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
while True:
    _, addr = s.recvfrom(2048)
    print(f"{time.monotonic():.6f} {addr[0]}", flush=True)
"""


# --- flows from pod, as dest sees them -------------------------------------------------


class FlowLog:
    """New flows pod -> ``dest`` every 10 ms while it runs; what dest saw, and when."""

    def __init__(self, topo: Topology, dest: str) -> None:
        topo.conntrack_flush()  # source ports restart: no old NAT decision may be reused
        self.seen: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self.sink = flows._start(topo, topo.dest, _TIMED_SINK, dest, SINK_PORT)
        threading.Thread(target=self._read, daemon=True).start()
        self.sender = flows._start(
            topo,
            topo.pod,
            flows._SENDER,
            SINK_PORT,
            flows.FIRST_SOURCE_PORT,
            0,
            PROBE_INTERVAL,
            dest,
        )

    def _read(self) -> None:
        assert self.sink.stdout is not None
        for raw in iter(self.sink.stdout.readline, b""):
            at, source = raw.decode().split()
            with self._lock:
                self.seen.append((float(at), source))

    def since(self, start: float) -> list[tuple[float, str]]:
        with self._lock:
            return [s for s in self.seen if s[0] >= start]

    def settled(self, start: float, source: str, timeout: float = WAIT) -> float | None:
        """When the flows after ``start`` began to come from ``source`` for good (every flow
        for at least STABLE s, and until now); None if that did not happen in ``timeout``."""
        deadline = start + timeout + STABLE
        while time.monotonic() < deadline:
            time.sleep(0.05)
            flows_ = self.since(start)
            first = None
            for at, src in flows_:
                if src != source:
                    first = None
                elif first is None:
                    first = at
            if first is not None and flows_[-1][0] - first >= STABLE:
                return first
        return None

    def first_from(self, start: float, source: str) -> float | None:
        return next((at for at, src in self.since(start) if src == source), None)

    def stop(self) -> None:
        for proc in (self.sender, self.sink):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def flow_log(topo: Topology, dest: str) -> Iterator[FlowLog]:
    log = FlowLog(topo, dest)
    try:
        time.sleep(0.3)  # flows are arriving
        yield log
    finally:
        log.stop()


# --- the config -----------------------------------------------------------------------


def cidrs(n: int, ipv6: bool) -> list[str]:
    """N non-adjacent /24s (every other one from 11.0.0.0), DELETED first; IPv6 /64s too."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    v4 = [DELETED] + [str(ipaddress.IPv4Network((base + 512 * i, 24))) for i in range(n - 1)]
    v6 = [f"fd00:1000:0:{2 * i:x}::/64" for i in range(IPV6_CIDRS)] if ipv6 else []
    return v4 + v6


def write_files(cfg: Path, nets: list[str]) -> list[list[str]]:
    for old in cfg.glob("ip-masq*"):
        old.unlink()
    files = [nets[i : i + PER_FILE] for i in range(0, len(nets), PER_FILE)]
    for i, part in enumerate(files):
        write_file(cfg, f"ip-masq-{i:02d}", file_text(part))
    return files


# --- one case -------------------------------------------------------------------------


@dataclass
class Case:
    n: int
    ipv6: bool
    date: str = ""
    load: str = ""
    first: OnceRun | None = None
    idle: Idle | None = None
    writer_idle: Idle | None = None
    scrape_ms: list[float] = field(default_factory=list)  # agent + children, per scrape
    scrape_wall: list[float] = field(default_factory=list)
    quick_scrape_ms: list[float] = field(default_factory=list)  # scrapes that do not refresh
    writer_scrape_ms: list[float] = field(default_factory=list)
    change: list[float] = field(default_factory=list)
    writer_change: list[float] = field(default_factory=list)
    heal: list[float] = field(default_factory=list)
    daemon_hwm_mb: float = float("nan")
    daemon_listings: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.n}{'+v6' if self.ipv6 else ''}"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def scrape(d: Daemon, scraper: Scraper, last: float) -> tuple[float, float, float, float]:
    """A refreshing scrape (the first after FRESH_SECONDS): agent+children ms, wall s, when;
    and the mean CPU ms of QUICK scrapes right after it (they do not refresh)."""
    time.sleep(max(last + FRESH_SECONDS + 0.5 - time.monotonic(), 0))
    c0 = stat_cpu(d.pid)
    found = scraper.get()
    c1 = stat_cpu(d.pid)
    for _ in range(QUICK):
        scraper.get()
    c2 = stat_cpu(d.pid)
    quick = 1000 * (c2[0] - c1[0] + c2[1] - c1[1]) / QUICK
    # the next refreshing scrape waits from here: one of these may have refreshed (after a
    # refresh that failed fast, the agent retries 5 s after it)
    at = time.monotonic()
    return 1000 * (c1[0] - c0[0] + c1[1] - c0[1]), float(found["wall"]), at, quick


def change_trials(
    topo: Topology, cfg: Path, files: list[list[str]], trials: int, notes: list[str]
) -> list[float]:
    """ADDED into file 00: seconds until new flows keep the pod's address; then out again."""
    out: list[float] = []
    with flow_log(topo, DEST_DOC_B) as log:
        for _ in range(trials):
            if log.settled(time.monotonic() - 0.2, NODE_UPLINK) is None:
                notes.append(f"flows to {DEST_DOC_B} were not masqueraded before a trial")
                break
            start = time.monotonic()
            write_file(cfg, "ip-masq-00", file_text([*files[0], ADDED]))
            kept = log.settled(start, POD_IP)
            out.append(math.inf if kept is None else kept - start)
            back = time.monotonic()
            write_file(cfg, "ip-masq-00", file_text(files[0]))
            if log.settled(back, NODE_UPLINK) is None:
                notes.append(f"{ADDED} removed: flows still kept the pod's address {WAIT:g} s on")
                break
            if kept is None:
                notes.append(f"{ADDED} added: flows not kept within {WAIT:g} s")
    return out


def heal_trials(topo: Topology, family: str, trials: int, notes: list[str]) -> list[float]:
    """Another program deletes DELETED: seconds from the first masqueraded flow (the delete
    in effect) until new flows keep the pod's address again for good."""
    out: list[float] = []
    delete = ["nft", "delete", "element", family, "ip-masq-agent", "non-masquerade-v4"]
    with flow_log(topo, DEST_PRIVATE) as log:
        for trial in range(trials):
            if trial:
                time.sleep(HEAL_APART)
            if log.settled(time.monotonic() - 0.2, POD_IP) is None:
                notes.append(f"flows to {DEST_PRIVATE} were masqueraded before a trial")
                break
            start = time.monotonic()
            done = run(topo.in_ns(topo.node, [*delete, f"{{ {DELETED} }}"]), timeout=120)
            returned = time.monotonic() - start
            effect = log.first_from(start, NODE_UPLINK)
            if effect is None:
                time.sleep(0.5)
                effect = log.first_from(start, NODE_UPLINK)
            if effect is None:
                notes.append(
                    f"nft delete (exit {done.returncode}, {returned:.2f} s) never showed in"
                    " flows: repaired before the next flow, or not deleted"
                )
                continue
            healed = log.settled(effect, POD_IP)
            out.append(math.inf if healed is None else healed - effect)
            if healed is None:
                notes.append(f"{DELETED} deleted: not healed within {WAIT:g} s")
                break
            notes.append(f"heal trial: nft delete took {returned:.2f} s to return")
    return out


def run_case(n: int, ipv6: bool, tmp: Path, say: Callable[[str], None]) -> Case:
    case = Case(n, ipv6, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    case.load = uptime()
    cfg = tmp / f"cfg-{case.key}"
    cfg.mkdir(exist_ok=True)
    files = write_files(cfg, cidrs(n, ipv6))
    flags = [f"--config-dir={cfg}", "--dataplane=nftables"] + (["--enable-ipv6"] if ipv6 else [])
    family = "inet" if ipv6 else "ip"
    with topology("nft") as topo:
        runner = AgentRunner(topo.node, flags, tmp, verbosity=2, resync=IDLE_RESYNC)
        case.first = runner.once()
        say(f"first sync {case.first.wall:.2f} s, {case.first.cpu:.2f} s CPU")
        case.idle = runner.idle_figures(IDLE_SECONDS, COUNT_SECONDS)
        say(f"idle {case.idle.own_ms + case.idle.children_ms:.1f} ms/resync")
        with foreign_writer(topo.node, WRITER_INTERVAL):
            case.writer_idle = runner.idle_figures(IDLE_SECONDS, COUNT_SECONDS)
        w = case.writer_idle
        say(f"idle beside the writer {w.own_ms + w.children_ms:.1f} ms, {w.listings} listings")
        with runner.daemon(60.0) as d:
            scraper = Scraper(topo.node)
            try:
                last = time.monotonic()
                for _ in range(SCRAPES):
                    ms, wall, last, quick = scrape(d, scraper, last)
                    case.scrape_ms.append(ms)
                    case.scrape_wall.append(wall)
                    case.quick_scrape_ms.append(quick)
                say(f"scrape {med(case.scrape_ms):.0f} ms CPU")
                case.change = change_trials(topo, cfg, files, CHANGE_TRIALS, case.notes)
                say(f"one CIDR {case.change}")
                case.heal = heal_trials(topo, family, HEAL_TRIALS, case.notes)
                say(f"healed {case.heal}")
                with foreign_writer(topo.node, WRITER_INTERVAL):
                    case.writer_change = change_trials(topo, cfg, files, CHANGE_TRIALS, case.notes)
                    say(f"one CIDR beside the writer {case.writer_change}")
                    ms, _, last, _ = scrape(d, scraper, last)
                    case.writer_scrape_ms.append(ms)
            finally:
                scraper.stop()
            case.daemon_hwm_mb = vm_hwm_mb(d.pid)
            case.daemon_listings = d.text().count(LISTED)
            said = [ln for ln in d.text().splitlines() if "refresh failed" in ln]
            case.notes += [f"the daemon logged: {ln[:400]}" for ln in said[:3]]
            case.notes += [f"... and {len(said) - 3} more such lines"] if len(said) > 3 else []
        say(f"daemon VmHWM {case.daemon_hwm_mb:.0f} MB")
    return case


# --- results ----------------------------------------------------------------------------


def cache_of(output: Path) -> Path:
    return output.with_name(output.stem + ".json.tmp")


def load_cache(cache: Path) -> dict[str, Case]:
    if not cache.exists():
        return {}
    out: dict[str, Case] = {}
    for key, raw in json.loads(cache.read_text()).items():
        raw["first"] = OnceRun(**raw["first"]) if raw.get("first") else None
        for name in ("idle", "writer_idle"):
            raw[name] = Idle(**raw[name]) if raw.get(name) else None
        out[key] = Case(**raw)
    return out


def save_cache(cache: Path, cases: dict[str, Case]) -> None:
    cache.write_text(json.dumps({k: asdict(c) for k, c in cases.items()}, indent=1))


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def per_resync(i: Idle | None) -> float:
    return math.nan if i is None else i.own_ms + i.children_ms


def rss_of(c: Case) -> float:
    found = [c.daemon_hwm_mb, *(i.hwm_mb for i in (c.idle, c.writer_idle) if i)]
    return max(found)


@dataclass
class Row:
    what: str
    now: str
    target: str
    cell: Callable[[Case], str]
    ok: Callable[[Case], bool | None]  # None: no target at this size


def rows() -> list[Row]:
    def fin(x: float) -> bool:
        return not math.isnan(x)

    def secs(values: Sequence[float]) -> str:
        if not values:
            return "-"
        worst = max(values)
        return f"{med(values):.2f} (max {worst:.2f})" if math.isfinite(worst) else "never"

    return [
        Row(
            f"idle resync, quiet (--resync-interval={IDLE_RESYNC:g}): CPU ms, processes",
            "10 ms",
            "< 10 ms, 0 processes",
            lambda c: (
                f"{per_resync(c.idle):.1f} ms, {c.idle.processes:.2f} proc" if c.idle else "-"
            ),
            lambda c: c.idle is not None and per_resync(c.idle) < 10 and c.idle.processes == 0,
        ),
        Row(
            "idle resync beside the writer: CPU ms, listings",
            "1.8 s (a listing each)",
            "< 20 ms, no listing",
            lambda c: (
                f"{per_resync(c.writer_idle):.1f} ms, {c.writer_idle.listings} listed"
                f" / {c.writer_idle.resyncs}+ resyncs"
                if c.writer_idle
                else "-"
            ),
            lambda c: (
                c.writer_idle is not None
                and per_resync(c.writer_idle) < 20
                and c.writer_idle.listings == 0
            ),
        ),
        Row(
            "refreshing /metrics scrape: CPU ms (quiet; beside the writer)",
            "2.9 s (5.9 s at 100k)",
            "< 50 ms",
            lambda c: (
                f"{med(c.scrape_ms):.0f} ms; {med(c.writer_scrape_ms):.0f}"
                if c.scrape_ms and c.writer_scrape_ms
                else "-"
            ),
            lambda c: bool(c.scrape_ms) and max(med(c.scrape_ms), *c.writer_scrape_ms) < 50,
        ),
        Row(
            "one CIDR added -> new flows kept, quiet: s",
            "1.5 s (3.1 s at 100k)",
            "< 0.3 s",
            lambda c: secs(c.change),
            lambda c: bool(c.change) and med(c.change) < 0.3,
        ),
        Row(
            "one CIDR added -> new flows kept, beside the writer: s",
            "5.0 s (never at 100k)",
            "< 0.5 s",
            lambda c: secs(c.writer_change),
            lambda c: bool(c.writer_change) and med(c.writer_change) < 0.5,
        ),
        Row(
            "our element deleted by nft -> new flows right again: s",
            "12 s (resync; <= 60 s)",
            "< 1 s",
            lambda c: secs(c.heal),
            lambda c: bool(c.heal) and max(c.heal) < 1,
        ),
        Row(
            "first sync (--once, empty node): wall s, CPU s",
            "1.6 s (3.65 s at 100k)",
            "< 2 s at 100k",
            lambda c: f"{c.first.wall:.2f} s, {c.first.cpu:.2f} CPU" if c.first else "-",
            lambda c: None if c.n < 100_000 else c.first is not None and c.first.wall < 2,
        ),
        Row(
            "peak RSS of the daemons (VmHWM): MB",
            "122 MB (217 MB at 100k)",
            "< 100 MB at 50k, < 120 at 100k",
            lambda c: f"{rss_of(c):.0f} MB" if fin(c.daemon_hwm_mb) else "-",
            lambda c: fin(rss_of(c)) and rss_of(c) < (100 if c.n <= 50_000 else 120),
        ),
    ]


def render(cases: dict[str, Case]) -> list[str]:
    ordered = sorted(cases.values(), key=lambda c: (c.ipv6, c.n))
    out = header(
        "issue 17 targets: the nftables control plane (bench_controlplane.py)",
        "bench_controlplane.py",
    )
    out += [
        f"# N non-adjacent IPv4 /24s (every other /24) in files of 10,000 (+v6: --enable-ipv6,"
        f" an inet table, also {IPV6_CIDRS} IPv6 /64s); a fresh pod -> node -> dest topology"
        " per case",
        f"# idle rows: a daemon at --resync-interval={IDLE_RESYNC:g} (not 60 s: many resyncs),"
        f" ~{IDLE_SECONDS:g} s, CPU = agent + reaped children per resync (/proc/PID/stat);"
        f" processes from a {COUNT_SECONDS:g} s run with logging wrappers; listings = the"
        " 'listed' lines --v=2 logs",
        f"# writer: another program committing its own table every {WRITER_INTERVAL:g} s"
        " (nft -f, bench_scale.foreign_writer)",
        "# the rest: one daemon at the default 60 s resync: refreshing scrapes"
        f" (median of {SCRAPES}, 10 ms ticks; beside the writer: one),"
        f" one-CIDR changes ({CHANGE_TRIALS} trials each,"
        f" median (max)), element deletions ({HEAL_TRIALS} trials {HEAL_APART:g} s apart: a"
        " repeat within 10 s is backed off by design), judged by UDP flows every"
        f" {1000 * PROBE_INTERVAL:g} ms from pod, as dest sees their source; a decision counts"
        f" once every flow for {STABLE:g} s has it",
        "# 'now' is the issue's column (50,000 CIDRs, IPv4, before netlink and notifications)",
    ]
    for c in ordered:
        out.append(f"# {c.key}: measured {c.date}; at its start: {c.load}")
    out.append(f"# written: {uptime()}")
    columns = ["", "now (issue)", "target", *(c.key for c in ordered), "verdict"]
    lines = []
    for r in rows():
        verdicts = [r.ok(c) for c in ordered]
        judged = [v for v in verdicts if v is not None]
        verdict = "-" if not judged else "met" if all(judged) else "MISSED"
        if judged and not all(judged):
            missed = [c.key for c, v in zip(ordered, verdicts, strict=True) if v is False]
            verdict += f" ({', '.join(missed)})"
        lines.append([r.what, r.now, r.target, *(r.cell(c) for c in ordered), verdict])
    out += table("Targets", columns, lines)
    out += [
        "",
        "Reading it: CPU comes from /proc in 10 ms ticks, so an idle figure is a mean over"
        " many resyncs and a scrape's is a median of a few; 'one CIDR' starts at the",
        "file's rename and so includes the daemon's 0.1 s debounce of the config dir's"
        " events and the flows' 10 ms spacing. The 60 s daemon's peak RSS is above the",
        "idle daemons' (which never scrape) by what the scrapes and changes add (the idle"
        " daemons' VmHWM is in the idle lines below).",
    ]
    out += ["", "Details"]
    for c in ordered:
        for name, i in (("idle", c.idle), ("beside the writer", c.writer_idle)):
            if i is not None:
                out.append(
                    f"  {c.key} {name}: {i.resyncs} resyncs in {i.seconds:.1f} s; agent"
                    f" {i.own_ms:.1f} + children {i.children_ms:.1f} ms per resync (threads by"
                    f" schedstat: main {i.main_thread_ms:.2f}, others {i.other_threads_ms:.2f});"
                    f" writes {i.writes}; listings {i.listings}; VmHWM {i.hwm_mb:.0f} MB;"
                    f" processes: {'; '.join(i.commands) or 'none'}"
                )
        if c.first:
            out.append(
                f"  {c.key} first sync: agent {c.first.own:.2f} s + children"
                f" {c.first.children:.2f} s, peak RSS {c.first.hwm_mb:.0f} MB"
            )
        if c.scrape_ms:
            out.append(
                f"  {c.key} scrapes: CPU ms {[round(x) for x in c.scrape_ms]}, wall s"
                f" {[round(x, 3) for x in c.scrape_wall]}; beside the writer"
                f" {[round(x) for x in c.writer_scrape_ms]}; a scrape that does not refresh"
                f" (mean of {QUICK} after each): {[round(x, 1) for x in c.quick_scrape_ms]} ms"
            )
        out.append(
            f"  {c.key} one CIDR, quiet: {[round(x, 3) for x in c.change]}; beside the writer:"
            f" {[round(x, 3) for x in c.writer_change]}; healed: {[round(x, 3) for x in c.heal]}"
        )
        out.append(
            f"  {c.key} the 60 s daemon: VmHWM {c.daemon_hwm_mb:.0f} MB, {c.daemon_listings}"
            " listings in all (its first sync's included)"
        )
        out += [f"  {c.key}: {note}" for note in c.notes]
    return out


def parse_cases(text: str) -> list[tuple[int, bool]]:
    out = []
    for part in text.split(","):
        size, v6 = part.removesuffix("+v6"), part.endswith("+v6")
        out.append((int(size.replace("_", "")), v6))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cases", default="50000,100000,50000+v6,100000+v6", help="N[+v6],... to measure"
    )
    parser.add_argument("--fresh", action="store_true", help="forget cases measured before")
    parser.add_argument("--render", action="store_true", help="only rewrite controlplane.txt")
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    cases = {} if args.fresh else load_cache(cache_of(args.output))
    precompile()
    if not args.render:
        with tempfile.TemporaryDirectory(prefix="mqcontrol-") as d:
            tmp = Path(d)
            make_wrappers(tmp, tmp / "exec.log")
            for n, v6 in parse_cases(args.cases):
                label = f"{n}{'+v6' if v6 else ''}"
                print(f"== {label}", flush=True)

                def say(what: str, label: str = label) -> None:
                    print(f"  {label}: {what}", flush=True)

                with heavy_lock():
                    case = run_case(n, v6, tmp, say)
                cases[case.key] = case
                save_cache(cache_of(args.output), cases)
    args.output.write_text("\n".join(render(cases)) + "\n")
    print(args.output.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
