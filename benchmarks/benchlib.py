"""Helpers shared by the benchmarks that run the real agent in network namespaces.

Every command is an argv list run under ``ip netns exec`` in a namespace the benchmark
created and deletes again with the tests' harness (``integration.topology.namespace``;
``tests/`` is on PYTHONPATH, as benchmarks/run.sh sets it); nothing here touches the
host's own tables.  Heavy phases
take /tmp/masq-heavy.lock (flock(2), the lock ``flock(1)`` takes), so benchmarks of
other jobs on this shared machine do not run at the same time.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PYTHON = sys.executable
HEAVY_LOCK = Path("/tmp/masq-heavy.lock")
WRAPPED = [
    f"{fam}-{backend}{suffix}"
    for fam in ("iptables", "ip6tables")
    for backend in ("nft", "legacy")
    for suffix in ("", "-save", "-restore")
] + ["iptables", "ip6tables", "nft"]
SHARED_MACHINE = (
    "machine: 2 CPUs shared with other jobs; every measuring phase held /tmp/masq-heavy.lock,"
    " but unlocked work of other jobs may still run (figures, not thresholds)"
)


def env(path_prefix: Path | None = None) -> dict[str, str]:
    """The agent's environment: this checkout's code, bytecode caching on (as in production)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO)
    # Without bytecode caching every start recompiles the agent, which production never does.
    e.pop("PYTHONDONTWRITEBYTECODE", None)
    if path_prefix is not None:
        e["PATH"] = f"{path_prefix}:{e.get('PATH', '')}"
    return e


def precompile() -> None:
    """Write the agent's bytecode once, so no measured start pays for compiling it."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(REPO / "masq")], check=True, env=env())


def ns_run(
    ns: str,
    argv: list[str],
    environ: dict[str, str] | None = None,
    *,
    check: bool = True,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        check=check,
        capture_output=True,
        text=True,
        input=stdin,
        env=environ if environ is not None else env(),
    )


@contextmanager
def heavy_lock() -> Iterator[None]:
    """The machine-wide lock for heavy runs, held for the ``with`` block."""
    with HEAVY_LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_wrappers(tmp: Path, log: Path) -> Path:
    """A directory of scripts that log each exec of the tools the agent runs, then exec them."""
    wrap = tmp / "wrap"
    wrap.mkdir(exist_ok=True)
    for name in WRAPPED:
        real = shutil.which(name)
        if real is None:
            continue
        script = wrap / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexec "{real}" "$@"\n')
        script.chmod(0o755)
    return wrap


def stat_cpu(pid: int) -> tuple[float, float]:
    """(own utime+stime, reaped children's cutime+cstime) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, children


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a live process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slash24s(first: int, count: int) -> list[ipaddress.IPv4Network]:
    """``count`` distinct /24s from the ``first``-th after 11.0.0.0."""
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [ipaddress.IPv4Network((base + (first + i) * 256, 24)) for i in range(count)]


PER_FILE = 10_000  # CIDRs per config file: 10,000 /24s are ~180 kB, a file may hold 1 MiB
CIDR_LIMIT = 200_000


def file_text(cidrs: Sequence[str]) -> str:
    if not cidrs:
        return "nonMasqueradeCIDRs: []\n"
    return f"cidrLimit: {CIDR_LIMIT}\nnonMasqueradeCIDRs:\n" + "".join(f"  - {c}\n" for c in cidrs)


def write_file(cfg: Path, name: str, text: str) -> None:
    """Atomically, as the kubelet swaps a ConfigMap (dot-names are never read)."""
    tmp = cfg / f".{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, cfg / name)


def write_config(cfg: Path, n: int) -> list[list[str]]:
    """N /24s in files of 10,000; returns each file's CIDRs (the first file may be empty)."""
    for old in cfg.glob("ip-masq*"):
        old.unlink()
    nets = [str(c) for c in slash24s(0, n)]
    files = [nets[i : i + PER_FILE] for i in range(0, n, PER_FILE)] or [[]]
    for i, part in enumerate(files):
        write_file(cfg, f"ip-masq-{i:02d}", file_text(part))
    return files


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "absent"
    return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"


def header(title: str, script: str, *, root: bool = True) -> list[str]:
    """The lines every results file starts with: what, when, where, with what, how run."""
    command = os.environ.get("BENCH_COMMAND") or (
        f"PYTHONPATH={REPO}:{REPO}/tests {PYTHON} benchmarks/{script}"
        f" {' '.join(sys.argv[1:])}".rstrip()
    )
    return [
        f"# {title}",
        f"# date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"# kernel {platform.release()}, python {platform.python_version()},"
        f" {_version(['nft', '--version'])}, {_version(['iptables-nft', '--version'])},"
        f" {_version(['iptables-legacy', '--version'])}",
        f"# {SHARED_MACHINE}",
        f"# command: {command}{' (as root)' if root else ''}",
    ]
