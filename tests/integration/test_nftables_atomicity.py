"""A SIGKILL of the agent at any instant never leaves a partial nftables table.

nft commits whatever it parsed before EOF when it reads a pipe, so an agent killed while
writing one could commit half a batch.  The agent hands nft the whole batch in a memfd;
these tests kill it at random instants during a big first load and during a big change,
and check after every kill that the kernel holds the old table or the new one, exactly.
A first load on an empty node comes in stages (the structure with a base chain without
rules, the elements in one netlink batch, the rules): killed between them, the kernel
holds a table that decides nothing, as no table does, with all its elements or none,
and the next sync completes it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.agent import agent_argv, agent_env, run_agent, wait_for, write_config
from integration.topology import REPO_ROOT, Topology, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TABLE = ("ip", "ip-masq-agent")
KILLS = 8  # kills during the big change, one in each eighth of its uninterrupted run


def cidrs(first: int, count: int) -> list[str]:
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [f"{ipaddress.IPv4Address(base + (first + i) * 256)}/24" for i in range(count)]


def config(nets: list[str]) -> str:
    return json.dumps({"cidrLimit": 100_000, "nonMasqueradeCIDRs": nets})


def elements(topo: Topology) -> set[str] | None:
    """The table's non-masquerade elements (None: no table); asserts the chains are whole."""
    listed = run(
        topo.in_ns(topo.node, ["nft", "-j", "list", "table", *TABLE]), check=False, timeout=60
    )
    if listed.returncode != 0:
        assert "No such file or directory" in listed.stderr, listed.stderr
        return None
    objects = json.loads(listed.stdout)["nftables"]
    rules = [o["rule"] for o in objects if "rule" in o]
    assert len([r for r in rules if r["chain"] == "postrouting"]) == 5, rules
    assert len([r for r in rules if r["chain"] == "snat-to-node"]) == 1, rules
    return elements_of(listed.stdout)


def elements_of(listing: str) -> set[str]:
    """The non-masquerade elements of a ``nft -j list table`` listing."""
    objects = json.loads(listing)["nftables"]
    (s,) = [o["set"] for o in objects if "set" in o and o["set"]["name"] == "non-masquerade-v4"]
    out = set()
    for item in s.get("elem", []):
        value = item["elem"]["val"]
        out.add(f"{value['prefix']['addr']}/{value['prefix']['len']}")
    return out


def start_agent(topo: Topology, config_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        agent_argv(topo, config_dir, "--dataplane=nftables"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=agent_env(),
    )


def kill(topo: Topology, proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the agent; wait until nft has finished."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # An nft child the agent started lives on and commits whole (or not at all).
    assert wait_for(lambda: not nft_running(topo), timeout=30) is not None


def killed_after(topo: Topology, config_dir: Path, delay: float) -> None:
    """Start ``--once`` and SIGKILL it after ``delay`` seconds."""
    proc = start_agent(topo, config_dir)
    time.sleep(delay)
    kill(topo, proc)


def killed_while_committing(topo: Topology, config_dir: Path) -> None:
    """Start ``--once`` and SIGKILL it while its nft batch (not the ``-c`` probe) runs: the
    kill lands after the batch was handed over, whatever the machine's speed."""
    for _ in range(3):
        if kill_once_committing(topo, config_dir):
            return
    # An element-only change goes over netlink, not through nft: no nft process to see;
    # the agent ran to its end, so the kill landed after its batch (the caller checks it).


def kill_once_committing(topo: Topology, config_dir: Path) -> bool:
    """One try: False when the agent finished before its batch was seen running."""
    proc = start_agent(topo, config_dir)
    seen = wait_for(
        lambda: nft_running(topo, committing=True) or proc.poll() is not None,
        timeout=60,
        interval=0.002,
    )
    assert seen is not None
    landed = proc.poll() is None
    kill(topo, proc)
    return landed


def aim_at_missed_sides(
    topo: Topology,
    config_dir: Path,
    outcomes: list[str],
    reset: Callable[[], None],
    *,
    old: set[str] | None,
    new: set[str],
) -> None:
    """Kills must land both before the batch reaches nft ("old" stays) and after ("new" is
    whole), else the test proves less; on a loaded machine the random ones may all fall on
    one side, so a side missing from ``outcomes`` is aimed at, after ``reset``."""
    if "new" not in outcomes:
        reset()
        killed_while_committing(topo, config_dir)
        assert elements(topo) == new
    if "old" not in outcomes:
        reset()
        killed_after(topo, config_dir, 0.0)
        assert elements(topo) == old


def nft_running(topo: Topology, *, committing: bool = False) -> bool:
    """Whether an ``nft ... -f`` process runs in the node's network namespace
    (``committing``: one that commits, not a ``-c`` check)."""
    node = os.stat(f"/run/netns/{topo.node}").st_ino
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            same = os.stat(f"/proc/{pid}/ns/net").st_ino == node
        except OSError:
            continue  # gone meanwhile
        nft = same and argv[0].endswith(b"nft") and b"-f" in argv
        if nft and not (committing and b"-c" in argv):
            return True
    return False


def timed_once(topo: Topology, config_dir: Path) -> float:
    start = time.monotonic()
    done = run_agent(topo, config_dir, "--dataplane=nftables", timeout=120)
    assert done.returncode == 0, done.stderr
    return time.monotonic() - start


def first_load_outcome(topo: Topology, want: set[str]) -> str:
    """After a kill during a first load: "old" (no table of ours), "between" (the table whose
    base chain holds no rule yet, so it decides nothing, with none of its elements or all of
    them) or "new" (the whole table); anything else fails."""
    listed = run(
        topo.in_ns(topo.node, ["nft", "-j", "list", "table", *TABLE]), check=False, timeout=60
    )
    if listed.returncode != 0:
        assert "No such file or directory" in listed.stderr, listed.stderr
        return "old"
    rules = [o["rule"] for o in json.loads(listed.stdout)["nftables"] if "rule" in o]
    if any(r["chain"] == "postrouting" for r in rules):
        assert elements(topo) == want
        return "new"
    assert len([r for r in rules if r["chain"] == "snat-to-node"]) == 1, rules
    held = elements_of(listed.stdout)
    assert held in (set(), want), len(held)
    return "between"


def killed_at_batch(topo: Topology, config_dir: Path, nth: int) -> None:
    """Start ``--once`` and SIGKILL it while its ``nth`` committing nft runs (a first load:
    1 is the structure, 2 the rules after the elements), or after it ended."""
    proc = start_agent(topo, config_dir)
    for i in range(nth):
        if i:
            wait_for(
                lambda: not nft_running(topo, committing=True) or proc.poll() is not None,
                timeout=60,
                interval=0.001,
            )
        wait_for(
            lambda: nft_running(topo, committing=True) or proc.poll() is not None,
            timeout=60,
            interval=0.001,
        )
    kill(topo, proc)


def test_a_kill_during_the_first_load_leaves_no_table_or_the_whole_one(
    nft_topo: Topology, config_dir: Path
) -> None:
    """Killed at random while loading 20,000 elements: after each kill the kernel holds no
    table of ours, the whole table with every element, or (killed between the stages of
    the load) a table that decides nothing, with every element or none, which the next
    sync completes."""
    want = set(cidrs(0, 20_000))
    write_config(config_dir, "ip-masq-agent", config(sorted(want)))
    full = timed_once(nft_topo, config_dir)
    rng = random.Random(20261127)

    def no_table() -> None:
        run(nft_topo.in_ns(nft_topo.node, ["nft", "delete", "table", *TABLE]), check=False)

    outcomes = []
    for _ in range(12):
        no_table()
        killed_after(nft_topo, config_dir, rng.uniform(0.0, full))
        outcomes.append(first_load_outcome(nft_topo, want))
    # Each outcome is also aimed at: before any batch, between the stages, at the last one.
    aims: list[tuple[str, Callable[[], None]]] = [
        ("old", lambda: killed_after(nft_topo, config_dir, 0.0)),
        ("between", lambda: killed_at_batch(nft_topo, config_dir, 1)),
        ("new", lambda: killed_at_batch(nft_topo, config_dir, 2)),
    ]
    for outcome, aim in aims:
        no_table()
        aim()
        assert first_load_outcome(nft_topo, want) == outcome
        assert elements_after_sync(nft_topo, config_dir) == want


def test_a_kill_during_a_big_change_leaves_the_old_table_or_the_new_one(
    nft_topo: Topology, config_dir: Path
) -> None:
    """Killed while replacing 5,000 of 15,000 elements (deletes and adds in one batch): the
    kernel holds exactly the old set or exactly the new one.  The kills are spread over the
    time an uninterrupted change takes, one in each of KILLS equal slices of it, so they land
    before the batch reaches nft (the old set stays) and after (the new one is whole); a side
    no random kill reached is then aimed at, so both are always checked."""
    old, new = set(cidrs(0, 15_000)), set(cidrs(5_000, 15_000))

    def change() -> None:
        """The old table in the kernel, the new config in the directory."""
        write_config(config_dir, "ip-masq-agent", config(sorted(old)))
        assert elements_after_sync(nft_topo, config_dir) == old
        write_config(config_dir, "ip-masq-agent", config(sorted(new)))

    change()
    full = timed_once(nft_topo, config_dir)
    rng = random.Random(7)
    outcomes = []
    for kill in range(KILLS):
        change()
        delay = full * (kill + rng.random()) / KILLS
        killed_after(nft_topo, config_dir, delay)
        got = elements(nft_topo)
        assert got in (old, new), None if got is None else (len(got & old), len(got & new))
        outcomes.append("new" if got == new else "old")
    aim_at_missed_sides(nft_topo, config_dir, outcomes, change, old=old, new=new)
    assert elements_after_sync(nft_topo, config_dir) == new


def elements_after_sync(topo: Topology, config_dir: Path) -> set[str] | None:
    timed_once(topo, config_dir)
    return elements(topo)
