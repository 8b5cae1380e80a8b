"""``python -m tests.soak``: one soak run, its summary on stdout, exit 1 on any violation."""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import get_args

from integration import topology

from soak import checker, driver, report
from soak.dataplane import DATAPLANES, dataplane
from soak.schedule import SCENARIOS, scenario


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the driver's clean-up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "120"))
    )
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--dataplane", choices=DATAPLANES, default="iptables")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="storm",
        help="storm (default): every operation and fault; rolling-update: two agents and"
        " config changes only",
    )
    parser.add_argument(
        "--backend",
        choices=get_args(topology.Backend),
        default="nft",
        help="iptables backend: the agent's (iptables dataplane) and the foreign iptables"
        " writer's (both dataplanes)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's files (logs, probes)")
    parser.add_argument(
        "--print-schedule", action="store_true", help="print the schedule for the seed and exit"
    )
    parser.add_argument(
        "--judge", type=Path, metavar="DIR", help="judge a kept run's files again and exit"
    )
    args = parser.parse_args(argv)
    if args.judge is not None:
        log = driver.load(args.judge)
        plane = dataplane(log.dataplane, log.backend)
        verdict = checker.judge(log)
        schedule = scenario(log.scenario, log.seed, log.seconds, plane.faults)
        print(report.summary(log, verdict, schedule))
        return 1 if verdict.violations else 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    if args.print_schedule:
        plane = dataplane(args.dataplane, args.backend)
        schedule = scenario(args.scenario, seed, args.seconds, plane.faults)
        print("\n".join(schedule.lines()))
        print(f"digest {schedule.digest}")
        return 0
    problem = topology.environment_problem()
    if problem is not None:
        print(f"soak: cannot run here: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    topology.sweep_stale_namespaces()
    print(f"soak: seed {seed}, {args.seconds:g}s, {args.dataplane}/{args.backend}", flush=True)
    settings = driver.Settings(
        seed=seed,
        seconds=args.seconds,
        backend=args.backend,
        dataplane=args.dataplane,
        scenario=args.scenario,
        keep=args.keep,
        progress=sys.stderr,
    )
    log, verdict, schedule, work = driver.run(settings)
    print(report.summary(log, verdict, schedule))
    if verdict.violations or args.keep:
        print(f"run files kept in {work}")
    return 1 if verdict.violations else 0
