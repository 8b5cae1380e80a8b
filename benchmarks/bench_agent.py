#!/usr/bin/env python3
"""Agent benchmarks (run as root; each backend gets its own throwaway network namespace).

Measures, per iptables backend (nft, legacy):
  1. the iptables* processes a steady-state ``--once`` starts (a PATH of wrapper
     scripts logs every exec), per enabled family;
  2. steady-state sync wall time on a nat table holding 50,000 foreign rules
     divided by the same on an empty table (in-process ``Agent.sync()``, median;
     and the whole ``--once`` process, which adds Python start-up);
  3. config-change-to-rule latency in daemon mode (write a file, poll ``-S``);
  4. daemon CPU time per idle resync at ``--resync-interval=1``.

Writes the figures to benchmarks/results/agent.txt.  Never touches the host's
own tables: every iptables command runs under ``ip netns exec``.  Commands are
argv lists (subprocess, never a shell string).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import PYTHON, REPO, env, make_wrappers, ns_run, stat_cpu

RESULTS = REPO / "benchmarks" / "results" / "agent.txt"
CHAIN = "IP-MASQ-AGENT"
FOREIGN_RULES = 50_000
RULES_PER_CHAIN = 100
ROUNDS = 7
CONFIG = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 172.16.0.0/12\n  - 192.168.0.0/16\n"


def agent_argv(backend: str, cfg: Path, *extra: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "masq",
        f"--iptables-backend={backend}",
        f"--config-dir={cfg}",
        "--metrics-bind-address=0",
        *extra,
    ]


def count_processes(ns: str, backend: str, cfg: Path, tmp: Path, *extra: str) -> list[str]:
    """Every iptables*/nft exec of one ``--once`` run, as the PATH wrappers logged them."""
    log = tmp / "exec.log"
    log.write_text("")
    ns_run(ns, agent_argv(backend, cfg, "--once", *extra), env(tmp / "wrap"))
    return log.read_text().splitlines()


def time_sync_in_process(ns: str, backend: str, cfg: Path, n: int) -> float:
    out = ns_run(ns, [PYTHON, __file__, "--time-sync", backend, str(cfg), str(n)]).stdout.strip()
    return float(json.loads(out.splitlines()[-1])["median"])


def time_once_process(ns: str, backend: str, cfg: Path, n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        ns_run(ns, agent_argv(backend, cfg, "--once"))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def load_foreign_rules(ns: str, backend: str) -> None:
    """kube-proxy-like: many chains, a jump to each from one dispatch chain, in nat."""
    chains = FOREIGN_RULES // RULES_PER_CHAIN
    lines = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    lines += [f":KUBE-SVC-{i:05d} - [0:0]" for i in range(chains)]
    lines.append("-A PREROUTING -m comment --comment kube -j KUBE-SERVICES")
    lines.append("-A POSTROUTING -m comment --comment kube -j KUBE-POSTROUTING")
    lines.append("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN")
    count = 3
    for i in range(chains):
        lines.append(f"-A KUBE-SERVICES -d 10.96.{i // 250}.{i % 250 + 1}/32 -j KUBE-SVC-{i:05d}")
        count += 1
        for j in range(RULES_PER_CHAIN - 1):
            a, b = divmod(i * RULES_PER_CHAIN + j, 250)
            lines.append(
                f"-A KUBE-SVC-{i:05d} -s 10.{a // 250 % 250}.{a % 250}.{b + 1}/32"
                f' -p tcp -m comment --comment "ns/svc-{i}:port" -j RETURN'
            )
            count += 1
    lines.append("COMMIT\n")
    subprocess.run(
        ["ip", "netns", "exec", ns, f"iptables-{backend}-restore", "--noflush"],
        input="\n".join(lines),
        text=True,
        check=True,
    )
    total = ns_run(ns, [f"iptables-{backend}-save", "-t", "nat"]).stdout.count("\n-A ")
    print(f"  loaded {count} foreign rules ({total} -A lines in nat)", flush=True)


def chain_listing(ns: str, backend: str) -> str:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, f"iptables-{backend}", "-t", "nat", "-S", CHAIN],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout


def daemon_figures(ns: str, backend: str, cfg: Path, trials: int = 5) -> dict[str, float]:
    """Latency of config changes, then idle CPU per resync at --resync-interval=1."""
    log = cfg.parent / f"daemon-{backend}.log"
    figures: dict[str, float] = {}
    # (3) latency, default resync interval so only inotify can explain a fast reaction
    with open(log, "w") as err:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *agent_argv(backend, cfg, "--v=1")],
            stderr=err,
            stdout=subprocess.DEVNULL,
            env=env(),
        )
    try:
        time.sleep(1.5)
        latencies = []
        for t in range(trials):
            cidr = f"100.{64 + t}.0.0/16"
            start = time.perf_counter()
            (cfg / f"ip-masq-bench-{t}").write_text(f"nonMasqueradeCIDRs: [{cidr}]\n")
            while cidr not in chain_listing(ns, backend):
                if time.perf_counter() - start > 10:
                    raise RuntimeError(f"rule for {cidr} never appeared")
                time.sleep(0.005)
            latencies.append(time.perf_counter() - start)
            time.sleep(0.3)
        figures["latency_median_s"] = statistics.median(latencies)
        figures["latency_max_s"] = max(latencies)
    finally:
        proc.terminate()
        stop_start = time.perf_counter()
        proc.wait(timeout=10)
        figures["sigterm_exit_s"] = time.perf_counter() - stop_start
        figures["sigterm_exit_code"] = float(proc.returncode)
    for t in range(trials):
        (cfg / f"ip-masq-bench-{t}").unlink()
    # (4) idle CPU per resync
    with open(log, "w") as err:
        proc = subprocess.Popen(
            # ``ip netns exec`` execs in place, so proc.pid is the agent itself
            ["ip", "netns", "exec", ns, *agent_argv(backend, cfg, "--resync-interval=1", "--v=1")],
            stderr=err,
            stdout=subprocess.DEVNULL,
            env=env(),
        )
    try:
        time.sleep(3)
        before = stat_cpu(proc.pid)
        before_syncs = log.read_text().count('msg="in sync"')
        time.sleep(10)
        after = stat_cpu(proc.pid)
        syncs = log.read_text().count('msg="in sync"') - before_syncs
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    figures["idle_resyncs"] = float(syncs)
    figures["cpu_own_per_resync_ms"] = 1000 * (after[0] - before[0]) / max(syncs, 1)
    figures["cpu_children_per_resync_ms"] = 1000 * (after[1] - before[1]) / max(syncs, 1)
    return figures


def bench_backend(backend: str, tmp: Path, out: list[str]) -> None:
    """Two namespaces per backend, one empty and one with 50k foreign rules, so the
    ratio can alternate between them and machine-load drift cancels out."""
    # here, not at the top: the in-namespace child re-runs this file without tests/ on its path
    from integration.topology import namespace

    print(f"== {backend}", flush=True)
    labels = ("empty nat table", f"{FOREIGN_RULES} foreign nat rules")
    with (
        namespace(f"bench-{backend}-empty") as empty,
        namespace(f"bench-{backend}-loaded") as loaded,
    ):
        cfgs = {}
        for ns in (empty, loaded):
            cfg = tmp / f"cfg-{ns}"
            cfg.mkdir()
            (cfg / "ip-masq-agent").write_text(CONFIG)
            cfgs[ns] = cfg
            ns_run(ns, agent_argv(backend, cfg, "--once", "--enable-ipv6"))
        load_foreign_rules(loaded, backend)
        version = ns_run(empty, [f"iptables-{backend}", "--version"]).stdout.strip()
        out.append(f"[{backend}] {version}")
        in_proc: dict[str, list[float]] = {empty: [], loaded: []}
        whole: dict[str, list[float]] = {empty: [], loaded: []}
        for _ in range(ROUNDS):
            for ns in (empty, loaded):
                in_proc[ns].append(time_sync_in_process(ns, backend, cfgs[ns], 10))
                whole[ns].append(time_once_process(ns, backend, cfgs[ns], 1))
        for label, ns in zip(labels, (empty, loaded), strict=True):
            cfg = cfgs[ns]
            procs = count_processes(ns, backend, cfg, tmp, "--enable-ipv6")
            v4 = [p for p in procs if p.startswith("iptables")]
            v6 = [p for p in procs if p.startswith("ip6tables")]
            writes = [p for p in procs if "-restore" in p.split()[0]]
            out.append(
                f"  {label}: steady-state --once --enable-ipv6 started {len(procs)} processes:"
                f" ipv4 {len(v4)}, ipv6 {len(v6)}, writes {len(writes)}"
            )
            out += [f"      {p}" for p in procs]
            out.append(
                f"  {label}: steady-state sync (ipv4) in-process median"
                f" {statistics.median(in_proc[ns]) * 1000:.1f} ms;"
                f" whole --once process median {statistics.median(whole[ns]) * 1000:.0f} ms"
            )
            figures = daemon_figures(ns, backend, cfg)
            out.append(
                f"  {label}: daemon config-change-to-rule latency median"
                f" {figures['latency_median_s'] * 1000:.0f} ms, max"
                f" {figures['latency_max_s'] * 1000:.0f} ms (5 trials);"
                f" SIGTERM exit {figures['sigterm_exit_s'] * 1000:.0f} ms,"
                f" code {figures['sigterm_exit_code']:.0f}"
            )
            out.append(
                f"  {label}: daemon idle CPU per resync at --resync-interval=1:"
                f" agent {figures['cpu_own_per_resync_ms']:.1f} ms,"
                f" iptables children {figures['cpu_children_per_resync_ms']:.1f} ms"
                f" ({figures['idle_resyncs']:.0f} resyncs in 10 s)"
            )
        ratio_in = statistics.median(in_proc[loaded]) / statistics.median(in_proc[empty])
        ratio_whole = statistics.median(whole[loaded]) / statistics.median(whole[empty])
        out.append(
            f"  RATIO 50k/empty steady-state sync ({ROUNDS} alternating rounds):"
            f" in-process {ratio_in:.2f}, whole --once process {ratio_whole:.2f}"
        )
        print("\n".join(out[-1:]), flush=True)


def time_sync_main(backend: str, cfg: str, n: int) -> None:
    """Inside the netns: median wall time of n steady-state Agent.sync() calls."""
    sys.path.insert(0, str(REPO))
    from masq.shell.agent import Agent
    from masq.shell.metrics import Metrics
    from masq.shell.options import Options

    agent = Agent(Options(config_dir=cfg, iptables_backend=backend), Metrics())  # type: ignore[arg-type]
    agent.sync()  # warm: version cache, config parse
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        report = agent.sync()
        samples.append(time.perf_counter() - start)
        if report.wrote:
            raise RuntimeError("steady-state sync wrote rules")
    print(json.dumps({"median": statistics.median(samples), "n": n}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-sync", nargs=3, metavar=("BACKEND", "CFG", "N"))
    parser.add_argument("--backends", default="nft,legacy")
    args = parser.parse_args()
    if args.time_sync:
        backend, cfg, n = args.time_sync
        time_sync_main(backend, cfg, int(n))
        return 0
    if os.geteuid() != 0:
        print("run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    out = [
        "ip-masq-agent benchmarks (benchmarks/bench_agent.py)",
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"foreign rules: {FOREIGN_RULES} in {FOREIGN_RULES // RULES_PER_CHAIN} nat chains",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="masq-bench-") as d:
        tmp = Path(d)
        make_wrappers(tmp, tmp / "exec.log")
        for backend in args.backends.split(","):
            bench_backend(backend, tmp, out)
            out.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(out) + "\n")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
