#!/usr/bin/env python3
"""What the agent costs when nothing changes (the operations issue); run as root.

On an otherwise empty node (a fresh network namespace: empty nat table), IPv4 only,
the default config (an empty config dir, so RFC 1918) and default flags otherwise
(/metrics served), for the iptables dataplane on the nft backend and for
``--dataplane=nftables``:

- the daemon at ``--resync-interval=1``, idle for 60 s: CPU per resync of the agent
  plus its children (target <= 8 ms), the agent alone, the Python side (target < 2 ms),
  processes per resync, peak RSS;
- ``--once`` on the unchanged table: wall time, median of 10 (target < 0.2 s, measured with the
  ``sh`` package running the commands).

And as shipped: ``--once`` of the image's entrypoint (Debian's python3, a regular
install with compiled bytecode, built by scripts/build-image.sh) timed inside the
container, in a namespace of its own, with the default config and with one YAML
ConfigMap file; ``--no-image`` skips it (it needs buildah and debootstrap).

When a target is missed, the costs behind it: a cProfile of the daemon's sync run in
process (the loop's own calls, 300 syncs) and ``python -X importtime`` of ``--once``.
Writes benchmarks/results/steady.txt.  Run: benchmarks/run.sh steady
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from agentproc import AgentRunner, Idle, OnceRun
from benchlib import (
    PYTHON,
    REPO,
    RESULTS,
    env,
    header,
    heavy_lock,
    make_wrappers,
    ns_run,
    precompile,
)
from integration.topology import namespace

OUT = RESULTS / "steady.txt"
PLANES: dict[str, list[str]] = {
    "iptables-nft": ["--iptables-backend=nft"],
    "nftables": ["--dataplane=nftables"],
}
IDLE_SECONDS = 60.0
COUNT_SECONDS = 10.0
ONCE_RUNS = 10
PROFILE_SYNCS = 300
TARGET_RESYNC_MS = 8.0
TARGET_PYTHON_MS = 2.0
TARGET_ONCE_S = 0.2
IMAGE_TAG = "localhost/ip-masq-agent:bench"
IN_IMAGE = r"""
import os, statistics, subprocess, sys, tempfile, time
runs = int(sys.argv[1])
def wall(argv):
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start
def median(argv):
    return statistics.median(wall(argv) for _ in range(runs))
agent = sys.argv[2:]
empty, yaml_dir = tempfile.mkdtemp(), tempfile.mkdtemp()
with open(os.path.join(yaml_dir, "ip-masq-agent"), "w") as f:
    f.write("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 172.16.0.0/12\n  - 192.168.0.0/16\n")
first = wall([*agent, "--once", f"--config-dir={empty}"])
print(f"first={first:.4f}")
print(f"defaults={median([*agent, '--once', f'--config-dir={empty}']):.4f}")
print(f"yaml={median([*agent, '--once', f'--config-dir={yaml_dir}']):.4f}")
print(f"pass={median([sys.executable, '-c', 'pass']):.4f}")
"""
BEFORE = "the issue's 'before': 17-20 ms per idle resync, 32 MB peak RSS, --once 0.22-0.27 s"


def profile_sync(syncs: int, flags: list[str]) -> None:
    """In the namespace: the daemon loop's calls around one sync, timed and profiled.

    Also by hand, for a big config: ``ip netns exec NS python benchmarks/bench_steady.py
    --profile-sync 20 --config-dir=DIR --enable-ipv6 --dataplane=nftables``.
    """
    from masq.core.config import MIN_RESYNC_SECONDS, effective_resync
    from masq.core.iptables.model import OP_LABELS as IPTABLES_OPS
    from masq.core.nftables.model import OP_LABELS as NFT_OPS
    from masq.shell import logs
    from masq.shell.agent import Agent
    from masq.shell.cli import parse_args
    from masq.shell.metrics import Metrics

    opts = parse_args(flags).options
    logs.setup(opts.verbosity, opts.log_format)
    metrics = Metrics(
        resync_interval=max(MIN_RESYNC_SECONDS, opts.resync_interval),
        max_cidr_series=opts.metrics_max_cidr_series,
        write_ops=(NFT_OPS if opts.dataplane == "nftables" else IPTABLES_OPS).values(),
    )
    agent = Agent(opts, metrics)
    metrics.refresh_with(agent.traffic_now)

    def one() -> None:  # as daemon._loop does it
        metrics.loop_alive()
        started = time.monotonic()
        report = agent.sync()
        metrics.sync_finished(True, time.monotonic() - started)
        effective_resync(opts.resync_interval, report.loaded.merged.config)

    one()
    one()
    start = time.process_time()
    for _ in range(syncs):
        one()
    per_sync = (time.process_time() - start) / syncs
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(syncs):
        one()
    profiler.disable()
    top = []
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats(key).print_stats(14)
        lines = buf.getvalue().splitlines()
        start_at = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
        top.append(lines[start_at : start_at + 15])
    print(json.dumps({"per_sync_ms": per_sync * 1000, "tottime": top[0], "cumulative": top[1]}))


def import_times(runner: AgentRunner) -> list[str]:
    """``python -X importtime`` of ``--once``: where the start-up's imports go."""
    argv = [PYTHON, "-X", "importtime", "-m", "masq", *runner.flags, "--once"]
    done = ns_run(runner.ns, argv)
    rows: list[tuple[int, int, int, str]] = []  # own us, cumulative us, depth, module
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line[12:].split("|")
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((int(own), int(cumulative), depth, name.strip()))
    # importtime prints a module after everything it imported: its parent comes later.
    pulled: list[tuple[int, str, str]] = []
    for i, (_, total_us, depth, module) in enumerate(rows):
        parent = next((r[3] for r in rows[i + 1 :] if r[2] < depth), "")
        if parent.startswith("masq") and not module.startswith("masq"):
            pulled.append((total_us, module, parent))
    total = sum(r[0] for r in rows)
    ours = sorted((r for r in rows if r[3].startswith("masq")), key=lambda r: -r[0])[:10]
    out = [f"    all imports: {total / 1000:.0f} ms over {len(rows)} modules (own times summed)"]
    out += ["    masq modules by own time (ms):"]
    out += [f"      {o / 1000:6.1f}  {n}" for o, _, _, n in ours]
    out += ["    what masq modules import from outside, by cumulative time (ms):"]
    out += [f"      {c / 1000:6.1f}  {n} (from {p})" for c, n, p in sorted(pulled)[::-1][:12]]
    return out


def startup_baseline(ns: str) -> float:
    """Median wall of ``python -c pass`` in the namespace (interpreter and site start)."""
    samples = []
    for _ in range(ONCE_RUNS):
        start = time.perf_counter()
        ns_run(ns, [PYTHON, "-c", "pass"])
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_plane(plane: str, tmp: Path) -> list[str]:
    cfg = tmp / f"cfg-{plane}"
    cfg.mkdir()
    flags = [f"--config-dir={cfg}", *PLANES[plane]]
    with heavy_lock(), namespace("steady") as ns:
        runner = AgentRunner(ns, flags, tmp)
        first = runner.once()
        runs = [runner.once() for _ in range(ONCE_RUNS)]
        counted = runner.once(wrap=True)
        baseline = startup_baseline(ns)
        idle = runner.idle_figures(IDLE_SECONDS, COUNT_SECONDS)
        print(f"  {plane}: idle {idle.own_ms + idle.children_ms:.1f} ms/resync", flush=True)
        out = report(plane, first=first, runs=runs, counted=counted, baseline=baseline, idle=idle)
        if any("MISSED" in line for line in out):
            out += profiles(runner)
    return out


def bench_image() -> list[str]:
    """``--once`` as the image runs it (iptables-nft backend), timed inside the container."""
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing:
        return ["", "[image]", f"  skipped: {', '.join(missing)} not installed"]
    build = [str(REPO / "scripts" / "build-image.sh"), "--debootstrap-base", "--tag", IMAGE_TAG]
    subprocess.run(build, check=True, stdout=subprocess.DEVNULL)
    inspect = subprocess.run(
        ["buildah", "inspect", "--type", "image", IMAGE_TAG], check=True, capture_output=True
    )
    entry: list[str] = json.loads(inspect.stdout)["OCIv1"]["config"]["Entrypoint"]
    name = f"mqsteady-{uuid.uuid4().hex[:8]}"
    subprocess.run(["buildah", "from", "--name", name, IMAGE_TAG], check=True, capture_output=True)
    try:
        with heavy_lock(), namespace("steady-image") as ns:
            argv = ["ip", "netns", "exec", ns, "buildah", "run", "--isolation", "chroot"]
            argv += ["--cap-add", "CAP_NET_ADMIN", "--cap-add", "CAP_NET_RAW", name, "--"]
            argv += ["/usr/bin/python3", "-c", IN_IMAGE, str(ONCE_RUNS), *entry]
            argv.append("--iptables-backend=nft")
            done = subprocess.run(argv, check=True, capture_output=True, text=True)
    finally:
        subprocess.run(["buildah", "rm", name], check=False, capture_output=True)
    got = dict(line.split("=", 1) for line in done.stdout.split())
    figures = {k: float(v) for k, v in got.items()}
    ok = "met" if figures["defaults"] < TARGET_ONCE_S else "MISSED"
    return [
        "",
        f"[image: {IMAGE_TAG}, iptables-nft, timed inside the container]",
        f"  entrypoint: {' '.join(entry)} (Debian's python3, compiled bytecode)",
        f"  first sync (--once on the empty node): {figures['first']:.3f} s wall",
        f"  --once on the unchanged table, median of {ONCE_RUNS}, default config (no file):"
        f" {figures['defaults']:.3f} s wall (target < {TARGET_ONCE_S:g} s: {ok})",
        f"  the same with one YAML ConfigMap file (RFC 1918 listed; PyYAML imported):"
        f" {figures['yaml']:.3f} s wall",
        f"  for scale: `python3 -c pass` in the image takes {figures['pass']:.3f} s (median)",
    ]


def report(
    plane: str,
    *,
    first: OnceRun,
    runs: list[OnceRun],
    counted: OnceRun,
    baseline: float,
    idle: Idle,
) -> list[str]:
    walls = [r.wall for r in runs]
    once_wall = statistics.median(walls)
    total = idle.own_ms + idle.children_ms

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    return [
        "",
        f"[{plane}]",
        f"  first sync (--once on the empty node): {first.wall:.3f} s wall",
        f"  daemon idle at --resync-interval=1: {idle.resyncs} resyncs in {idle.seconds:.0f} s,"
        f" {idle.writes} writes",
        f"    CPU per resync, agent + children: {total:.2f} ms"
        f" (target <= {TARGET_RESYNC_MS:g} ms: {verdict(total <= TARGET_RESYNC_MS)})",
        f"    the agent alone (Python side): {idle.own_ms:.2f} ms from /proc/PID/stat"
        f" (target < {TARGET_PYTHON_MS:g} ms: {verdict(idle.own_ms < TARGET_PYTHON_MS)});"
        f" by thread (schedstat): main {idle.main_thread_ms:.2f} ms,"
        f" others {idle.other_threads_ms:.2f} ms (the /metrics server's)",
        f"    children: {idle.children_ms:.2f} ms; processes per resync: {idle.processes:.2f}"
        f" ({'; '.join(idle.commands) or 'none'})",
        f"    peak RSS (VmHWM): {idle.hwm_mb:.1f} MB",
        f"  --once on the unchanged table, median of {len(runs)}: {once_wall:.3f} s wall"
        f" (min {min(walls):.3f}, max {max(walls):.3f};"
        f" target < {TARGET_ONCE_S:g} s: {verdict(once_wall < TARGET_ONCE_S)})",
        f"    CPU {statistics.median(r.cpu for r in runs):.3f} s (agent"
        f" {statistics.median(r.own for r in runs):.3f} s, children"
        f" {statistics.median(r.children for r in runs):.3f} s), peak RSS"
        f" {statistics.median(r.hwm_mb for r in runs):.1f} MB",
        f"    processes: {len(counted.processes)} ({'; '.join(counted.processes) or 'none'})",
        f"    for scale: `python -c pass` in the namespace takes {baseline:.3f} s (median)",
    ]


def profiles(runner: AgentRunner) -> list[str]:
    argv = [PYTHON, __file__, "--profile-sync", str(PROFILE_SYNCS), *runner.flags]
    argv.append("--resync-interval=1")
    environ = env()  # this script imports the tests' namespace harness (integration.topology)
    environ["PYTHONPATH"] += os.pathsep + str(REPO / "tests")
    done = ns_run(runner.ns, argv, environ)
    found = json.loads(done.stdout.splitlines()[-1])
    out = [
        "  profiles (a target was missed):",
        f"    in-process sync as the daemon loop runs it: {found['per_sync_ms']:.2f} ms CPU per"
        f" sync (time.process_time over {PROFILE_SYNCS}; no /metrics scrape, no select)",
        f"    cProfile of {PROFILE_SYNCS} syncs, by own time:",
        *(f"      {ln}" for ln in found["tottime"]),
        "    by cumulative time:",
        *(f"      {ln}" for ln in found["cumulative"]),
        "  python -X importtime of --once:",
        *import_times(runner),
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile-sync", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.add_argument("--no-image", action="store_true", help="skip the image's --once")
    args = parser.parse_args()
    if args.profile_sync is not None:
        profile_sync(int(args.profile_sync[0]), args.profile_sync[1:])
        return 0
    if os.geteuid() != 0:
        print("run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    precompile()
    out = header("idle cost on an empty node (benchmarks/bench_steady.py)", "bench_steady.py")
    out += [
        "# IPv4 only, default config (empty config dir: RFC 1918), /metrics served (default);",
        "# the daemon logs at --v=1 so its syncs can be counted (one line per sync)",
        f"# {BEFORE}",
    ]
    with tempfile.TemporaryDirectory(prefix="mqsteady-") as d:
        tmp = Path(d)
        make_wrappers(tmp, tmp / "exec.log")
        for plane in PLANES:
            print(f"== {plane}", flush=True)
            out += bench_plane(plane, tmp)
    if not args.no_image:
        print("== image", flush=True)
        out += bench_image()
    OUT.write_text("\n".join(out) + "\n")
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
