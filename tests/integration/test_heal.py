"""Knowing without looking, against a real kernel (issue 17, items 1-3).

The daemon in nftables mode watches nf_tables' notifications: each kind of foreign change
to its table is repaired within a second at ``--resync-interval=60`` (judged by packets);
lost notifications (a tiny receive buffer and a burst of commits) make it list and repair;
a foreign writer committing to its own table for a minute makes it list nothing and write
nothing (counted); a one-CIDR change to a 20,000-element set beside that writer reaches the
kernel within a second, and an nft listing that spins beside a writer is bounded, told in
one line and retried with backoff; two agents that disagree back off; iptables-nft lists
nothing beside kube-proxy.
A SIGKILL during a netlink batch: tests/integration/test_nft_netlink.py (the batch alone)
and test_nftables_atomicity.py (the agent, whose big change now goes over netlink).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration import nft
from integration.agent import (
    agent_env,
    background,
    daemon,
    start_agent,
    stop_agent,
    wait_for,
    write_config,
)
from integration.netns_thread import inside
from integration.nft import NFTABLES, TABLE
from integration.packets import verdicts
from integration.planes import NftablesPlane
from integration.topology import DEST_DOC_A, DEST_UPLINK, Topology, namespace, run
from masq.core.nftables.model import NftTable
from masq.core.nftables.netlink import Committed, Event, Lost, ObjectChanged, SetEdit
from masq.shell import agent, nftables_runner
from masq.shell.nft_elements import Listener, write_elements
from masq.shell.nftables_runner import Nft
from masq.shell.process import Completed, Runner, Stdin, run_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HEALTHY = {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}
WATCHED = (*NFTABLES, "--resync-interval=60", "--v=2")
HEAL_SECONDS = 1.0


@pytest.fixture
def nftables(nft_topo: Topology) -> NftablesPlane:
    return NftablesPlane(nft_topo)


def _last_rule_handle(topo: Topology) -> str:
    listed = nft.nft(topo, "-a", "list", "chain", "ip", TABLE, "postrouting")
    handles = re.findall(r"jump snat-to-node # handle (\d+)", listed)
    assert handles, listed
    return str(handles[-1])


FOREIGN: dict[str, tuple[tuple[str, ...], str]] = {
    "element-deleted": (
        ("delete", "element", "ip", TABLE, "non-masquerade-v4", "{ 192.168.0.0/16 }"),
        DEST_UPLINK,
    ),
    "set-flushed": (("flush", "set", "ip", TABLE, "non-masquerade-v4"), DEST_UPLINK),
    "chain-flushed": (("flush", "chain", "ip", TABLE, "postrouting"), DEST_DOC_A),
    "rule-deleted": (("delete", "rule", "ip", TABLE, "postrouting", "handle", "LAST"), DEST_DOC_A),
    "table-deleted": (("delete", "table", "ip", TABLE), DEST_DOC_A),
}
"""A foreign change, and the destination whose new flows it decides wrong until healed."""


def healthy(topo: Topology, *dests: str) -> bool:
    return verdicts(topo, *dests) == {d: HEALTHY[d] for d in dests}


def log_count(log: Path, needle: str, start: int = 0) -> int:
    return log.read_text()[start:].count(needle)


@contextlib.contextmanager
def watched_daemon(
    nftables: NftablesPlane,
    config_dir: Path,
    log: Path,
    *flags: str,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[str]]:
    topo = nftables.topo
    proc = start_agent(topo, config_dir, *WATCHED, *flags, log=log, env=env)
    try:
        ready = wait_for(lambda: "nftables: elements over netlink" in log.read_text(), 20)
        assert ready is not None, log.read_text()
        assert "notifications=watched" in log.read_text(), log.read_text()
        assert wait_for(lambda: nft.our_tables(topo) == ["ip"], 20) is not None, log.read_text()
        yield proc
        assert proc.poll() is None, log.read_text()
    finally:
        stop_agent(proc)


@pytest.mark.parametrize("change", sorted(FOREIGN))
def test_each_kind_of_foreign_change_is_healed_within_a_second(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path, change: str
) -> None:
    topo = nftables.topo
    log = tmp_path / "agent.log"
    with watched_daemon(nftables, config_dir, log):
        assert wait_for(lambda: healthy(topo, DEST_DOC_A, DEST_UPLINK), 10) is not None
        pristine = nftables.installed()
        command, dest = FOREIGN[change]
        if "LAST" in command:
            command = tuple(_last_rule_handle(topo) if w == "LAST" else w for w in command)
        start = len(log.read_text())
        nft.nft(topo, *command)
        changed = time.monotonic()
        took = wait_for(lambda: healthy(topo, dest), 5, 0.02)
        assert took is not None, log.read_text()
        healed = time.monotonic() - changed
        assert healed < HEAL_SECONDS, (change, healed, log.read_text())
        assert wait_for(lambda: nftables.installed() == pristine, 2) is not None
        text = log.read_text()
        assert text.count("foreign change, repairing") == 1, text
        assert re.search(r"foreign change, repairing.*by=\"?pid \d+ \(nft\)", text), text
        # element changes are followed from the notifications; the rest is listed
        elements_only = change in ("element-deleted", "set-flushed")
        assert log_count(log, "msg=followed", start) == int(elements_only), text[start:]
        assert log_count(log, "msg=listed", start) == int(not elements_only), text[start:]
        assert healthy(topo, DEST_DOC_A, DEST_UPLINK)


@contextlib.contextmanager
def foreign_writer(topo: Topology, every: float = 0.5) -> Iterator[subprocess.Popen[str]]:
    """A program committing to its own table every ``every`` seconds (kube-proxy-like)."""
    nft.nft(topo, "add", "table", "ip", "writer")
    nft.nft(topo, "add", "chain", "ip", "writer", "c")
    script = (
        "import subprocess, sys, time\n"
        "i = 0\n"
        "while True:\n"
        "    i += 1\n"
        "    subprocess.run(['nft', 'add', 'rule', 'ip', 'writer', 'c', 'ip', 'daddr',\n"
        "                    f'10.{i // 256 % 256}.{i % 256}.1', 'counter'], check=True)\n"
        "    if i % 50 == 0:\n"
        "        subprocess.run(['nft', 'flush', 'chain', 'ip', 'writer', 'c'], check=True)\n"
        f"    time.sleep({every})\n"
    )
    with open("/dev/null", "w") as sink:
        proc = background(topo.in_ns(topo.node, [sys.executable, "-c", script]), stdout=sink)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL  # it ran all along


WRITER_SECONDS = 60.0


def counting_nft(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An env whose PATH finds an ``nft`` that notes its arguments in a file, then execs the
    real one (same pid, so its commits stay the agent's): every nft the agent starts, for a
    listing or a batch, is counted."""
    real = shutil.which("nft")
    assert real is not None
    bin_dir, runs = tmp_path / "bin", tmp_path / "nft-runs"
    bin_dir.mkdir()
    runs.touch()
    wrapper = bin_dir / "nft"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(runs))}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    env = agent_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env, runs


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its waited-for children (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def test_a_foreign_writer_for_a_minute_makes_the_daemon_list_nothing_and_write_nothing(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """Beside a program committing to its own table every 0.5 s for a whole minute, the
    periodic resyncs (every second here) list nothing and write nothing, counted three
    ways: no nft process started by the agent (a counting nft on its PATH), no commit that
    names the agent's table in the kernel's own notification stream (read by the test,
    none lost), and no listing, repair or write in its log; meanwhile it resynced every
    second and the writer committed over a hundred times.  The notifications prove nobody
    touched the agent's table, so a resync costs a few milliseconds of CPU."""
    topo = nftables.topo
    log = tmp_path / "agent.log"
    env, runs = counting_nft(tmp_path)
    with watched_daemon(nftables, config_dir, log, "--resync-interval=1", env=env) as proc:
        assert wait_for(lambda: healthy(topo, DEST_DOC_A), 10) is not None
        assert runs.read_text(), "the agent's nft did not go through the counting wrapper"
        time.sleep(1.5)  # the first sync and its own notifications have settled
        with inside(topo.node):
            listener = Listener()
        events: list[Event] = []
        with listener:
            start, nft_runs, cpu = (
                len(log.read_text()),
                len(runs.read_text()),
                cpu_seconds(proc.pid),
            )
            with foreign_writer(topo):
                ends = time.monotonic() + WRITER_SECONDS
                while time.monotonic() < ends:
                    time.sleep(1.0)
                    events += listener.drain()  # drained often: nothing is lost
                rules = nft.nft(topo, "list", "chain", "ip", "writer", "c").count("counter")
            events += listener.drain()
            used = cpu_seconds(proc.pid) - cpu
        text = log.read_text()[start:]
        assert rules > 0  # the writer committed
        writer_commits = [e for e in events if isinstance(e, Committed) and e.process == "nft"]
        assert len(writer_commits) >= 100, len(writer_commits)
        assert Lost() not in events
        ours = [e for e in events if isinstance(e, ObjectChanged) and e.table == TABLE]
        assert ours == [], ours[:5]  # nobody wrote the agent's table: not the agent either
        assert runs.read_text()[nft_runs:] == ""  # no nft started: no listing, no batch
        resyncs = log_count(log, "reason=timeout", start)
        assert resyncs >= WRITER_SECONDS * 0.8, text
        for quiet in ("msg=listed", "msg=followed", "table updated", "table replaced", "foreign"):
            assert log_count(log, quiet, start) == 0, (quiet, text)
        assert used / resyncs < 0.02, (used, resyncs)  # issue 17's target: < 20 ms a resync
        assert healthy(topo, DEST_DOC_A, DEST_UPLINK)


def test_lost_notifications_make_the_daemon_list_and_repair(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receive buffer too small for a burst of foreign commits: the kernel drops the
    notifications, the agent is told so (ENOBUFS), lists, and repairs what the burst did.
    Whether a given flood overflows the buffer depends on how fast the agent drains it on
    the other CPU, so the flood is repeated (each time with a new table) until one did."""
    topo = nftables.topo
    log = tmp_path / "agent.log"
    monkeypatch.setenv("IP_MASQ_AGENT_NOTIFY_RCVBUF", "1")  # the kernel's minimum
    many = ", ".join(f"11.{i // 256}.{i % 256}.0/24" for i in range(20_000))
    with watched_daemon(nftables, config_dir, log):
        assert wait_for(lambda: healthy(topo, DEST_DOC_A, DEST_UPLINK), 10) is not None
        time.sleep(1.0)
        start = len(log.read_text())
        heals = []
        for attempt in range(5):
            flood = [f"table ip flood{attempt} {{", " set s { type ipv4_addr; flags interval; }"]
            flood += ["}", f"add element ip flood{attempt} s {{ {many} }}"]
            flood.append(f"delete element ip {TABLE} non-masquerade-v4 {{ 192.168.0.0/16 }}")
            run(topo.in_ns(topo.node, ["nft", "-f", "-"]), stdin="\n".join(flood) + "\n")
            changed = time.monotonic()
            assert wait_for(lambda: healthy(topo, DEST_UPLINK), 10, 0.02) is not None
            heals.append(time.monotonic() - changed)
            if wait_for(lambda: log_count(log, "notifications lost", start) > 0, 1) is not None:
                break
        text = log.read_text()[start:]
        assert "notifications lost" in text, text
        assert "msg=listed" in text.split("notifications lost", 1)[1], text
        assert heals[0] < HEAL_SECONDS, (heals, text)  # later ones may be backed off
        assert healthy(topo, DEST_DOC_A, DEST_UPLINK)


def cidrs(first: int, count: int) -> list[str]:
    base = int(ipaddress.IPv4Address("11.0.0.0"))
    return [f"{ipaddress.IPv4Address(base + (first + i) * 512)}/24" for i in range(count)]


def big_config(nets: list[str]) -> str:
    return json.dumps({"cidrLimit": 100_000, "nonMasqueradeCIDRs": nets})


def test_one_cidr_reaches_a_large_set_within_a_second_beside_a_writer(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """nft downloads a whole interval set to add one element and restarts whenever the
    generation moves: beside a busy writer it may never finish.  Over netlink the element
    is one small batch: a new flow to the added CIDR keeps the pod's address within 1 s.
    The CIDRs are in ten files, so only the changed one is parsed again (one file of
    20,000 takes the Python side ~1 s on a loaded CI machine: issue 17 item 5)."""
    topo = nftables.topo
    log = tmp_path / "agent.log"
    nets = cidrs(0, 20_000)
    parts = [nets[i : i + 2_000] for i in range(0, len(nets), 2_000)]  # ten files, as on a node
    for i, part in enumerate(parts):
        write_config(config_dir, f"ip-masq-agent-{i}", big_config(part))
    with watched_daemon(nftables, config_dir, log):
        loaded = wait_for(lambda: "table updated" in log.read_text(), 60)
        assert loaded is not None, log.read_text()
        assert healthy(topo, DEST_DOC_A)
        with foreign_writer(topo):
            time.sleep(2)
            start = len(log.read_text())
            write_config(config_dir, "ip-masq-agent-9", big_config([*parts[9], "203.0.113.0/24"]))
            changed = time.monotonic()
            kept = wait_for(lambda: verdicts(topo, DEST_DOC_A) == {DEST_DOC_A: "kept"}, 10, 0.02)
            assert kept is not None, log.read_text()[start:]
            took = time.monotonic() - changed
        assert took < HEAL_SECONDS, (took, log.read_text()[start:])
        assert log_count(log, "msg=listed", start) == 0, log.read_text()[start:]


SPIN_TIMEOUT = 3.0
SPIN_ELEMENTS = 20_000


def in_namespace(ns: str) -> Runner:
    """The agent's command runner, each command in namespace ``ns`` (``ip netns exec``
    execs it: the pid the runner kills at the timeout is nft's own)."""

    def runner(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
        return run_command(["ip", "netns", "exec", ns, *argv], stdin, timeout)

    return runner


class FastWriter:
    """kube-proxy-like, only faster: commits an element to its own set every ~5 ms over
    netlink, in a thread inside ``ns``, until stopped."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.commits = 0
        self._stop = threading.Event()
        nft_ns = ["ip", "netns", "exec", ns, "nft"]
        run([*nft_ns, "add", "table", "ip", "writer"])
        run([*nft_ns, "add", "set", "ip", "writer", "s", "{ type ipv4_addr; flags interval; }"])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with inside(self.ns):
            while not self._stop.is_set():
                i = self.commits
                added = ipaddress.ip_network(f"10.9.{i // 256 % 256}.{i % 256}/32")
                write_elements([SetEdit("ip", "writer", "s", add=(added,))])
                self.commits += 1
                time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def spinning_listing(
    ns: str, monkeypatch: pytest.MonkeyPatch, quiet_timeout: float
) -> tuple[list[float], list[float], list[NftTable | None]]:
    """The agent's listing of its 20,000-element table retried as the agent retries it while
    a fast writer commits, which stops after the second back-off (and the timeout is the
    agent's own again: a quiet listing on a loaded machine took 2.8 s once): (each try's
    seconds, the back-offs slept, what the tries listed)."""
    agent_nft = Nft(TABLE, in_namespace(ns))
    writer = FastWriter(ns)
    took: list[float] = []
    slept: list[float] = []
    listed: list[NftTable | None] = []

    def step() -> None:
        began = time.monotonic()
        try:
            listed.append(agent_nft.list("ip"))
        finally:
            took.append(time.monotonic() - began)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # two tries spun: the writer stops before the third
            writer.stop()
            monkeypatch.setattr(nftables_runner, "LIST_TIMEOUT_SECONDS", quiet_timeout)
        time.sleep(seconds)

    try:
        assert wait_for(lambda: writer.commits > 10, 10) is not None
        assert agent_nft.structure("ip") is not None  # the netlink path's listing finishes
        agent.with_retries(step, cap=8.0, sleep=sleep)
    finally:
        writer.stop()
    return took, slept, listed


def test_an_nft_listing_that_spins_beside_a_writer_is_bounded_told_in_one_line_and_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """nft lists an interval set again from the start whenever a commit moves the generation
    under it: beside a writer committing every few milliseconds a listing of a 20,000-element
    set never finishes (the case issue 17 measured at 100,000 beside a 0.5 s writer).  The
    agent's nft, run as the agent runs it against a real kernel, is killed at the listing
    timeout (3 s here), each try is one line, the retries back off (0.5 s, then 1 s), and the
    try after the writer stops (at the agent's own timeout again) lists the whole set; no nft
    is left running.  Its structure
    listing (``-t``, no elements: what the netlink path runs) finishes beside the writer."""
    original = nftables_runner.LIST_TIMEOUT_SECONDS
    monkeypatch.setattr(nftables_runner, "LIST_TIMEOUT_SECONDS", SPIN_TIMEOUT)
    nets = tuple(ipaddress.ip_network(n) for n in cidrs(0, SPIN_ELEMENTS))
    table = f"table ip {TABLE} {{ set non-masquerade-v4 {{ type ipv4_addr; flags interval;"
    with namespace("spin") as ns:
        run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=f"{table} counter; }}; }}\n")
        with inside(ns):
            write_elements([SetEdit("ip", TABLE, "non-masquerade-v4", add=nets)], timeout=60)
        with caplog.at_level(logging.WARNING, logger="masq"):
            took, slept, listed = spinning_listing(ns, monkeypatch, original)
        left = run(["ip", "netns", "pids", ns]).stdout.split()
    assert slept == [0.5, 1.0]
    assert len(took) == 3 and len(listed) == 1, took
    assert all(SPIN_TIMEOUT <= t < SPIN_TIMEOUT + 1.5 for t in took[:2]), took
    assert listed[0] is not None
    assert len(listed[0].sets["non-masquerade-v4"].elements) == SPIN_ELEMENTS
    lines = [r for r in caplog.records if r.getMessage() == "failed, will retry"]
    assert [r.kv["attempt"] for r in lines] == [1, 2]  # type: ignore[attr-defined]
    for record in lines:
        error = record.kv["error"]  # type: ignore[attr-defined]
        assert error == f"listing table ip {TABLE} failed (nft): timed out after 3s", error
    assert left == []  # the spinning nfts were killed, not left behind


def test_two_agents_that_disagree_back_off_instead_of_fighting_in_a_loop(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """An old pod and a new one in a rolling update, with different configs: each repairs
    what the other wrote, but the same objects repaired again soon wait longer each time,
    so in 12 s each repairs a handful of times, not hundreds, and says it backs off."""
    topo = nftables.topo
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write_config(other_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n")
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n")
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    with (
        daemon(topo, config_dir, *WATCHED, log=one) as first,
        daemon(topo, other_dir, *WATCHED, log=two) as second,
    ):
        time.sleep(12)
        assert first.poll() is None and second.poll() is None
    repairs = [log_count(log, "foreign change") for log in (one, two)]
    assert sum(repairs) >= 2, (one.read_text(), two.read_text())  # they did disagree
    assert max(repairs) <= 10, repairs
    assert any(log_count(log, "repair backed off") for log in (one, two)), repairs


# --- item 6: iptables on the nft backend ------------------------------------------------------


def test_iptables_nft_lists_nothing_beside_kube_proxy_and_heals_its_chain_at_once(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """iptables-nft also writes nf_tables, and its notifications name table nat and the
    chain: a kube-proxy-like writer rewriting its own nat chain every 0.5 s makes the
    daemon list nothing; a rule deleted from our chain is put back within a second."""
    topo = nft_topo
    log = tmp_path / "agent.log"
    topo.ipt("-t", "nat", "-N", "KUBE-SERVICES")
    script = (
        "import subprocess, time\n"
        "while True:\n"
        "    subprocess.run(['iptables-nft-restore', '--noflush'], check=True,\n"
        "                   input=b'*nat\\n:KUBE-SERVICES - [0:0]\\n'\n"
        "                         b'-A KUBE-SERVICES -d 10.96.0.1/32 -j RETURN\\nCOMMIT\\n')\n"
        "    time.sleep(0.5)\n"
    )
    with daemon(topo, config_dir, "--resync-interval=1", "--v=2", log=log) as proc:
        assert wait_for(lambda: healthy(topo, DEST_DOC_A, DEST_UPLINK), 10) is not None
        time.sleep(1.5)
        start = len(log.read_text())
        with open("/dev/null", "w") as sink:
            writer = background(topo.in_ns(topo.node, [sys.executable, "-c", script]), stdout=sink)
        try:
            time.sleep(8)
            assert writer.poll() is None  # it kept committing
        finally:
            writer.kill()
            writer.wait(timeout=10)
        assert log_count(log, "reason=timeout", start) >= 4, log.read_text()[start:]
        assert log_count(log, "msg=listed", start) == 0, log.read_text()[start:]
        rules = topo.rules(family=4)
        masq = [r for r in rules if "192.168.0.0/16" in r]
        assert masq, rules
        topo.ipt("-t", "nat", "-D", *shlex.split(masq[0])[1:])
        changed = time.monotonic()
        assert wait_for(lambda: healthy(topo, DEST_UPLINK), 5, 0.02) is not None
        assert time.monotonic() - changed < HEAL_SECONDS, log.read_text()[start:]
        assert log_count(log, "foreign change, repairing", start) == 1, log.read_text()[start:]
        assert proc.poll() is None
