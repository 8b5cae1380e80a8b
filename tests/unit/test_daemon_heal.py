"""The daemon's third wake-up: a foreign change to what the agent owns, told by the kernel.

A fake ``Watching`` stands for the dataplane's notification socket (a pipe makes it
readable); these tests check the debounce (a burst is one wake-up, a writer that never
stops still gets a repair within the bound), that the agent's own commits wake nothing,
and what one repair logs and counts, with back-off.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from masq.core.nftables.netlink import ForeignCommit, ObjectChanged
from masq.shell import daemon
from masq.shell.agent import SyncReport
from masq.shell.configdir import load
from masq.shell.daemon import ConfigWatcher, KernelWatcher, Stopper, wait_for_change
from masq.shell.metrics import Metrics
from masq.shell.nft_watch import Burst, RepairBackoff
from masq.shell.options import Options


def commit(pid: int, name: str = "non-masquerade-v4") -> ForeignCommit:
    change = ObjectChanged("element", False, "ip", "ip-masq-agent", name, 0)
    return ForeignCommit(7, pid, "nft", (change,))


class PipeWatching:
    """Bursts queued by the test; the pipe is readable while any is queued."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.queued: list[Burst] = []
        self.lock = threading.Lock()

    def fileno(self) -> int:
        return self.read_fd

    def push(self, burst: Burst) -> None:
        with self.lock:
            self.queued.append(burst)
        os.write(self.write_fd, b"x")

    def poll(self) -> Burst:
        os.read(self.read_fd, 1)
        with self.lock:
            return self.queued.pop(0) if self.queued else Burst()

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@pytest.fixture
def stopper() -> Iterator[Stopper]:
    s = Stopper()
    yield s
    s.close()


@pytest.fixture
def watcher(tmp_path: Path) -> Iterator[ConfigWatcher]:
    w = ConfigWatcher(str(tmp_path))
    yield w
    w.close()


@pytest.fixture
def watching() -> Iterator[PipeWatching]:
    w = PipeWatching()
    yield w
    w.close()


def test_a_burst_of_foreign_commits_is_one_wake_up_after_a_quiet_spell(
    watcher: ConfigWatcher, stopper: Stopper, watching: PipeWatching
) -> None:
    kernel = KernelWatcher(watching)
    for i in range(3):  # queued together: select finds the socket readable again at once
        watching.push(Burst((commit(100 + i),)))
    started = time.monotonic()
    assert wait_for_change(watcher, stopper, 5, kernel=kernel) == "kernel"
    took = time.monotonic() - started
    burst = kernel.take()
    assert [c.pid for c in burst.commits] == [100, 101, 102]  # one burst, all three
    assert daemon.HEAL_QUIET_SECONDS <= took < daemon.HEAL_MAX_WAIT_SECONDS + 1.0
    assert not kernel.take()


def test_a_writer_that_never_pauses_still_gets_its_repair_within_the_bound(
    watcher: ConfigWatcher, stopper: Stopper, watching: PipeWatching
) -> None:
    kernel = KernelWatcher(watching)
    done = threading.Event()

    def busy() -> None:
        while not done.is_set():
            watching.push(Burst((commit(7),)))
            time.sleep(0.05)

    writer = threading.Thread(target=busy)
    writer.start()
    try:
        started = time.monotonic()
        assert wait_for_change(watcher, stopper, 5, kernel=kernel) == "kernel"
        assert time.monotonic() - started < daemon.HEAL_MAX_WAIT_SECONDS + 1.0
    finally:
        done.set()
        writer.join()


def test_the_agents_own_commits_wake_nothing(
    watcher: ConfigWatcher, stopper: Stopper, watching: PipeWatching
) -> None:
    watching.push(Burst())  # what poll() returns for our own commits
    assert wait_for_change(watcher, stopper, 0.3, kernel=KernelWatcher(watching)) == "timeout"


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name} {labels} not exposed")


def test_each_repair_is_one_line_with_who_and_repeats_back_off_in_log_and_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    repairs = RepairBackoff(first=0.5, cap=60.0)
    fight = Burst((commit(4242),))
    with caplog.at_level(logging.INFO, logger="masq"):
        delays = [daemon._repair(fight, repairs, metrics) for _ in range(4)]
        lost = daemon._repair(Burst(lost=True), repairs, metrics)
    assert delays == [0.0, 0.5, 1.0, 2.0] and lost == 0.0
    lines = [r for r in caplog.records if r.name == "masq.daemon"]
    assert [r.getMessage() for r in lines] == [
        "foreign change, repairing",
        *["foreign change again, repair backed off"] * 3,
        "foreign change, repairing",
    ]
    kv = lines[0].kv  # type: ignore[attr-defined]
    assert kv == {"by": "pid 4242 (nft)", "changes": "element non-masquerade-v4 deleted"}
    assert lines[3].kv["backoff"] == "2s" and lines[3].kv["repeats"] == 3  # type: ignore[attr-defined]
    assert lines[4].kv["changes"] == "notifications lost"  # type: ignore[attr-defined]
    assert metric(metrics, "ip_masq_agent_repairs_total", reason="foreign") == 4
    assert metric(metrics, "ip_masq_agent_repairs_total", reason="lost") == 1
    assert metric(metrics, "ip_masq_agent_repair_backoffs_total") == 3
    assert metric(metrics, "ip_masq_agent_repair_backoff_seconds") == 0.0  # the last: at once


class LoopAgent:
    """A daemon's agent whose every sync writes (``wrote``) or not, and after which the
    kernel reports lost notifications again: a small buffer on a busy node."""

    def __init__(self, watching: PipeWatching, stopper: Stopper, *, wrote: bool, rounds: int):
        self.loaded = load((("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8]\n"),), Options())
        self.watching, self.stopper = watching, stopper
        self.wrote, self.rounds = wrote, rounds
        self.syncs = 0

    def sync(self) -> SyncReport:
        self.syncs += 1
        if self.syncs > self.rounds:
            self.stopper._handle(signal.SIGTERM, None)
        self.watching.push(Burst(lost=True))
        return SyncReport(self.loaded.unwrap(), self.wrote)


@pytest.mark.parametrize("wrote", [False, True])
def test_repairs_that_find_the_table_whole_never_back_off_but_a_fight_does(
    watcher: ConfigWatcher,
    stopper: Stopper,
    watching: PipeWatching,
    caplog: pytest.LogCaptureFixture,
    wrote: bool,
) -> None:
    """Notifications lost again and again, and each repair's listing finds the table whole
    (it writes nothing): every one is repaired at once, so a real foreign change among them
    waits for no back-off.  Repairs that write (someone keeps undoing them) back off."""
    agent = LoopAgent(watching, stopper, wrote=wrote, rounds=4)
    with caplog.at_level(logging.INFO, logger="masq"):
        code = daemon._loop(
            Options(resync_interval=1.0),
            agent,  # type: ignore[arg-type]
            Metrics(),
            watcher,
            stopper,
            kernel=KernelWatcher(watching),
        )
    assert code == 0 and agent.syncs == 5
    said = [r.getMessage() for r in caplog.records if r.name == "masq.daemon"]
    repairs = [m for m in said if m.startswith("foreign change")]
    if wrote:
        assert repairs == [
            "foreign change, repairing",
            *["foreign change again, repair backed off"] * 3,
        ]
    else:
        assert repairs == ["foreign change, repairing"] * 4
