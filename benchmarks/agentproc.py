"""Running the real agent in a namespace and measuring it: ``--once`` and the daemon.

- ``--once``: wall time, CPU of the agent and its children (our RUSAGE_CHILDREN delta;
  ``ip netns exec`` execs in place, so the agent is our child), the agent's own share
  and its peak RSS (reported at its exit by a few lines run before ``python -m masq``'s
  own code, ``BOOT``), the processes it started (logging wrappers on PATH).
- the daemon: CPU per resync between two sync ends (``/proc/PID/stat``: the agent with
  every thread, and its reaped children), processes per resync, VmHWM.  Syncs are
  counted by the ``in sync`` lines ``--v=1`` logs (one per family in iptables mode).
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import PYTHON, env, ns_run, stat_cpu, vm_hwm_mb

IN_SYNC = 'msg="in sync"'
LISTED = "msg=listed "  # nftables at --v=2: one line per listing of our table (logfmt)
WRITES = ("updated", "replaced", "removed")  # what the agent logs when it wrote
# ``python -m masq`` as runpy runs it, plus a report of its own CPU and peak RSS at exit.
# getrusage, not os.times: its clock ticks (10 ms) round a 5 ms listing's CPU to 0.
BOOT = """import atexit, os, resource, runpy, sys
def _report():
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    hwm = next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    with open(os.environ["MASQ_BENCH_REPORT"], "w") as f:
        f.write(f"{me.ru_utime + me.ru_stime} {kids.ru_utime + kids.ru_stime} {hwm}")
atexit.register(_report)
sys.argv[0] = "masq"
runpy.run_module("masq", run_name="__main__", alter_sys=True)
"""


@dataclass
class OnceRun:
    wall: float
    cpu: float  # agent + children, from our RUSAGE_CHILDREN
    own: float  # the agent itself, os.times() at its exit
    children: float
    hwm_mb: float
    processes: list[str] = field(default_factory=list)


@dataclass
class Idle:
    resyncs: int
    seconds: float
    own_ms: float  # per resync
    children_ms: float
    hwm_mb: float
    processes: float = float("nan")  # per resync, from the wrapper run
    writes: int = 0
    commands: list[str] = field(default_factory=list)
    listings: int = 0  # in the measured window, from the "listed" lines (verbosity >= 2)
    # per resync, from schedstat: the main thread, and the other threads alive at the end
    main_thread_ms: float = float("nan")
    other_threads_ms: float = float("nan")


def live_threads_cpu(pid: int) -> tuple[float, float]:
    """Seconds on CPU of (the main thread, the other threads alive now), ns precision.

    Threads that exited (HTTP handlers, one per request) are missing.
    """
    main = others = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ran = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if task.name == str(pid):
            main += ran
        else:
            others += ran
    return main / 1e9, others / 1e9


class Daemon:
    """The agent as a daemon (``ip netns exec`` execs in place: the pid is the agent's)."""

    def __init__(
        self, argv: list[str], log: Path, in_sync_lines: int, wrap: Path | None, verbosity: int = 1
    ) -> None:
        self.log = log
        self.in_sync_lines = in_sync_lines
        with log.open("w") as err:
            self.proc = subprocess.Popen(
                [*argv, f"--v={verbosity}"], stdout=subprocess.DEVNULL, stderr=err, env=env(wrap)
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text()

    def syncs(self) -> int:
        return self.text().count(IN_SYNC) // self.in_sync_lines

    def writes(self) -> int:
        text = self.text()
        return sum(text.count(w) for w in WRITES)

    def wait_sync_end(self, after: int, timeout: float = 300.0) -> int:
        """Wait until more than ``after`` syncs have ended; the count then."""
        deadline = time.monotonic() + timeout
        while (count := self.syncs()) <= after:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {self.text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no sync ended in {timeout:.0f} s: {self.text()[-2000:]}")
            time.sleep(0.01)
        return count

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class AgentRunner:
    """The agent with fixed flags in one namespace; ``tmp`` holds wrap/ and exec.log."""

    ns: str
    flags: list[str]
    tmp: Path
    in_sync_lines: int = 1
    verbosity: int = 1  # the daemon's --v (2 logs each nftables listing)
    resync: float = 1.0  # the idle daemon's --resync-interval
    code: Path | None = None  # --once runs the agent from this checkout (None: this one)

    @property
    def exec_log(self) -> Path:
        return self.tmp / "exec.log"

    def argv(self, *extra: str) -> list[str]:
        return [PYTHON, "-m", "masq", *self.flags, *extra]

    def once(self, wrap: bool = False) -> OnceRun:
        report = self.tmp / "report"
        self.exec_log.write_text("")
        environ = env(self.tmp / "wrap" if wrap else None)
        environ["MASQ_BENCH_REPORT"] = str(report)
        if self.code is not None:  # and not the working directory's (PYTHONSAFEPATH)
            environ["PYTHONPATH"], environ["PYTHONSAFEPATH"] = str(self.code), "1"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = ns_run(self.ns, [PYTHON, "-c", BOOT, *self.flags, "--once"], environ, check=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"--once failed ({done.returncode}): {done.stderr[-2000:]}")
        own, children, hwm = report.read_text().split()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        procs = self.exec_log.read_text().splitlines() if wrap else []
        return OnceRun(wall, cpu, float(own), float(children), int(hwm) / 1024, procs)

    @contextmanager
    def daemon(self, resync: float, *extra: str, wrap: bool = False) -> Iterator[Daemon]:
        argv = ["ip", "netns", "exec", self.ns, *self.argv(f"--resync-interval={resync:g}")]
        wrap_dir = self.tmp / "wrap" if wrap else None
        d = Daemon(
            [*argv, *extra], self.tmp / "daemon.log", self.in_sync_lines, wrap_dir, self.verbosity
        )
        try:
            d.wait_sync_end(0)
            yield d
        finally:
            d.stop()

    def idle(self, seconds: float, wrap: bool = False) -> Idle:
        """CPU between the end of one resync and the end of the first one ``seconds`` later."""
        with self.daemon(self.resync, wrap=wrap) as d:
            n0 = d.wait_sync_end(d.syncs())
            c0, live0, t0 = stat_cpu(d.pid), live_threads_cpu(d.pid), time.monotonic()
            listed0 = d.text().count(LISTED)
            lines0 = len(self.exec_log.read_text().splitlines())
            time.sleep(seconds)
            n1 = d.wait_sync_end(d.syncs())
            c1, live1, t1 = stat_cpu(d.pid), live_threads_cpu(d.pid), time.monotonic()
            commands = self.exec_log.read_text().splitlines()[lines0:]
            hwm = vm_hwm_mb(d.pid)
            writes = d.writes()
            listings = d.text().count(LISTED) - listed0
        count = n1 - n0
        return Idle(
            resyncs=count,
            seconds=t1 - t0,
            own_ms=1000 * (c1[0] - c0[0]) / count,
            children_ms=1000 * (c1[1] - c0[1]) / count,
            hwm_mb=hwm,
            processes=len(commands) / count if wrap else float("nan"),
            writes=writes,
            commands=sorted(set(commands)),
            main_thread_ms=1000 * (live1[0] - live0[0]) / count,
            other_threads_ms=1000 * (live1[1] - live0[1]) / count,
            listings=listings,
        )

    def idle_figures(self, seconds: float, count_seconds: float) -> Idle:
        """CPU without wrappers; processes per resync from a shorter run with them."""
        figures = self.idle(seconds)
        self.exec_log.write_text("")
        counted = self.idle(count_seconds, wrap=True)
        figures.processes = counted.processes
        figures.commands = counted.commands
        figures.writes += counted.writes
        figures.listings += counted.listings
        return figures
