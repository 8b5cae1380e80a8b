"""The daemon's wake-ups: config changes (inotify), the resync timer, and signals."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from fake_iptables import FakeIptables, FakeKernel
from prometheus_client.parser import text_string_to_metric_families
from pyrsistent import pvector

from masq.core.iptables.rules import desired_ruleset
from masq.core.traffic import Counters
from masq.shell import cli, daemon
from masq.shell.agent import Agent, SyncHooks
from masq.shell.configdir import load, read_files
from masq.shell.daemon import ConfigWatcher, Stopper, wait_for_change
from masq.shell.dataplane import dataplane_options
from masq.shell.errors import AgentError
from masq.shell.metrics import Metrics
from masq.shell.options import Options


@pytest.fixture
def stopper() -> Iterator[Stopper]:
    s = Stopper()
    yield s
    s.close()


def later(seconds: float, action: object) -> threading.Timer:
    t = threading.Timer(seconds, action)  # type: ignore[arg-type]
    t.start()
    return t


def test_timeout_without_events(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        assert wait_for_change(watcher, stopper, 0.05) == "timeout"
    finally:
        watcher.close()


def test_new_file_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        later(0.05, lambda: (tmp_path / "ip-masq-x").write_text("a"))
        assert wait_for_change(watcher, stopper, 5) == "config"
    finally:
        watcher.close()


def test_kubelet_data_symlink_swap_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..data").symlink_to("..v1")
    watcher = ConfigWatcher(str(tmp_path))

    def swap() -> None:
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.rename(tmp_path / "..data_tmp", tmp_path / "..data")

    try:
        later(0.05, swap)
        assert wait_for_change(watcher, stopper, 5) == "config"
    finally:
        watcher.close()


def test_missing_dir_is_watched_through_its_parent(tmp_path: Path, stopper: Stopper) -> None:
    cfg = tmp_path / "cfg"
    watcher = ConfigWatcher(str(cfg))
    try:
        assert not watcher.polling
        later(0.05, cfg.mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        # now the dir itself is watched: a file in it wakes us
        later(0.05, lambda: (cfg / "ip-masq-a").write_text("x"))
        assert wait_for_change(watcher, stopper, 5) == "config"
        # and then quiet: the replaced parent watch's late IN_IGNORED is not a change
        # (fails if stale events trigger a rewatch, which loops forever)
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_deleted_and_recreated_dir_is_followed(tmp_path: Path, stopper: Stopper) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    watcher = ConfigWatcher(str(cfg))
    try:
        later(0.05, cfg.rmdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        later(0.05, cfg.mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        later(0.05, lambda: (cfg / "ip-masq-a").write_text("x"))
        assert wait_for_change(watcher, stopper, 5) == "config"
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_no_dir_and_no_parent_polls(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path / "a" / "b"))
    try:
        assert watcher.polling
        later(0.05, (tmp_path / "a").mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        assert not watcher.polling
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_sigterm_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        later(0.05, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert wait_for_change(watcher, stopper, 5) == "signal"
        assert stopper.signum == signal.SIGTERM
    finally:
        watcher.close()


def test_no_inotify_instance_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fails if inotify_init's EMFILE escapes daemon.run as a traceback, or if the
    # signal handlers it installed stay behind.
    def exhausted() -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(daemon, "INotify", exhausted)
    before = signal.getsignal(signal.SIGTERM)
    opts = Options(config_dir=str(tmp_path), metrics_bind_address=None)
    with pytest.raises(AgentError, match=r"cannot watch .*Too many open files"):
        daemon.run(opts)
    assert signal.getsignal(signal.SIGTERM) is before


# --- the loop itself: daemon.run with the kernel and the idle wait faked ---------------------

CHAIN = "IP-MASQ-AGENT"


@dataclass
class Loop:
    """What one ``daemon.run`` did: the waits between its syncs (each the effective resync
    interval the loop chose) and the ``Metrics`` it built."""

    resyncs: int
    waits: list[float] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)
    kernel: FakeIptables = field(default_factory=FakeIptables)


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[int], Loop]]:
    """Runs the real ``cli.main`` -> ``daemon.run`` -> ``_loop`` against fake iptables: the
    Agent the daemon builds gets the fake iptables and kernel (nothing else changes), and the
    idle wait returns at once, recording its timeout, until the loop has synced ``resyncs``
    times; then it stops the loop as SIGTERM does."""
    monkeypatch.setenv("XTABLES_LOCKFILE", str(tmp_path / "xtables.lock"))
    log = logging.getLogger("masq")
    handlers, level = list(log.handlers), log.level  # cli.main sets logging up
    current: list[Loop] = []

    def agent(opts: Options, metrics: SyncHooks) -> Agent:
        assert isinstance(metrics, Metrics)
        current[-1].metrics.append(metrics)
        return Agent(opts, metrics, current[-1].kernel, kernel=FakeKernel())

    def wait(watcher: ConfigWatcher, stopper: Stopper, timeout: float, **_: object) -> str:
        run = current[-1]
        run.waits.append(timeout)
        if len(run.waits) < run.resyncs:
            return "timeout"
        stopper.signum = signal.SIGTERM
        return "signal"

    monkeypatch.setattr(daemon, "Agent", agent)
    monkeypatch.setattr(daemon, "wait_for_change", wait)

    def make(resyncs: int) -> Loop:
        current.append(Loop(resyncs))
        return current[-1]

    yield make
    log.handlers[:] = handlers
    log.setLevel(level)


def daemon_args(config_dir: Path, *flags: str) -> list[str]:
    return [
        f"--config-dir={config_dir}",
        "--iptables-backend=nft",
        "--metrics-bind-address=0",
        *flags,
    ]


def in_sync_kernel(argv: list[str], packets: Mapping[str, int] | None = None) -> FakeIptables:
    """iptables holding exactly what the agent wants for this command line's config, each
    rule of our chain counting ``packets[cidr]`` packets (100 bytes each) as ``-S -v`` shows."""
    opts = cli.parse_args(argv).options
    files = read_files(opts.config_dir, opts.config_prefix).unwrap()
    config = load(files, opts).unwrap().merged.config
    desired = desired_ruleset(config, "ipv4", dataplane_options(opts))
    if packets is not None:
        own = desired.chains[CHAIN]
        rules = [
            replace(r, counters=Counters(packets[cidr], packets[cidr] * 100))
            for r in own.rules
            for cidr in [str(r.destination or "0.0.0.0/0")]
        ]
        desired = replace(
            desired, chains=desired.chains.set(CHAIN, replace(own, rules=pvector(rules)))
        )
    return FakeIptables.holding(desired)


SERIES_CONFIG = (
    "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10,"
    " 198.18.0.0/15, 203.0.113.0/24]\n"
)
# every rule of the chain that config makes: link-local, six RETURNs, the final MASQUERADE
SERIES_RULES = {
    "169.254.0.0/16": "RETURN",
    "10.0.0.0/8": "RETURN",
    "172.16.0.0/12": "RETURN",
    "192.168.0.0/16": "RETURN",
    "100.64.0.0/10": "RETURN",
    "198.18.0.0/15": "RETURN",
    "203.0.113.0/24": "RETURN",
    "0.0.0.0/0": "MASQUERADE",
}


@pytest.mark.parametrize("cap", [0, 3, 7, 8, 300])
def test_max_cidr_series_flag_caps_the_exposed_series_and_sums_the_rest(
    loop: Callable[[int], Loop], tmp_path: Path, cap: int
) -> None:
    """``--metrics-max-cidr-series=N`` from the command line to /metrics' text: N per-CIDR
    series per family, the rest summed per action under cidr="other" (none when all fit)."""
    (tmp_path / "ip-masq-agent").write_text(SERIES_CONFIG)
    argv = daemon_args(tmp_path, f"--metrics-max-cidr-series={cap}")
    counts = {cidr: 2**i for i, cidr in enumerate(SERIES_RULES)}  # any sum tells its rows
    run = loop(1)
    run.kernel = in_sync_kernel(argv, counts)
    assert cli.main(argv) == 0
    [metrics] = run.metrics
    exposed: dict[str, dict[tuple[str, str], float]] = {"packets": {}, "bytes": {}}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for kind, series in exposed.items():
            if family.name == f"ip_masq_agent_{kind}":
                for s in family.samples:
                    assert s.labels["family"] == "ipv4"
                    series[(s.labels["cidr"], s.labels["action"])] = s.value
    packets = exposed["packets"]
    shown = {key: v for key, v in packets.items() if key[0] != "other"}
    assert len(shown) == min(cap, len(SERIES_RULES))
    assert all(SERIES_RULES[cidr] == action for cidr, action in shown)
    assert all(v == counts[cidr] for (cidr, _), v in shown.items())  # the kernel's own counter
    rest = [cidr for cidr in SERIES_RULES if (cidr, SERIES_RULES[cidr]) not in shown]
    other = {action: v for (cidr, action), v in packets.items() if cidr == "other"}
    assert other == {
        action: sum(counts[c] for c in rest if SERIES_RULES[c] == action)
        for action in {SERIES_RULES[c] for c in rest}
    }
    assert {k: v / 100 for k, v in exposed["bytes"].items()} == packets


def floor_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


CONFIG_FLOOR = "resyncInterval is below the floor, using the floor"
FLAG_FLOOR = "--resync-interval is below the floor, using the floor"


@dataclass(frozen=True)
class Asked:
    config: str
    flags: tuple[str, ...]
    said: tuple[str, ...]  # the warnings expected, in order


@pytest.mark.parametrize(
    "asked",
    [
        Asked("resyncInterval: 100ms\n", (), (CONFIG_FLOOR,)),  # the config asks for it
        Asked("resyncInterval: 1ns\n", ("--resync-interval=30",), (CONFIG_FLOOR,)),
        Asked("masqLinkLocal: false\n", ("--resync-interval=0.2",), (FLAG_FLOOR,)),  # the flag
        Asked("resyncInterval: 2s\n", ("--resync-interval=0.2",), (FLAG_FLOOR,)),
        Asked("resyncInterval: 300ms\n", ("--resync-interval=0.5",), (FLAG_FLOOR, CONFIG_FLOOR)),
    ],
    ids=["config", "config-1ns", "flag", "flag-config-above", "both"],
)
def test_a_resync_interval_below_the_floor_warns_once_and_resyncs_every_second(
    loop: Callable[[int], Loop], tmp_path: Path, caplog: pytest.LogCaptureFixture, asked: Asked
) -> None:
    """Asking for less than 1 s is one warning naming the floor and what asked (the config's
    resyncInterval or the flag; two when both do), however many resyncs follow, and the loop
    waits 1 s between them (the exported interval and /healthz's limit follow)."""
    (tmp_path / "ip-masq-agent").write_text(asked.config)
    argv = daemon_args(tmp_path, *asked.flags)
    run = loop(4)
    run.kernel = in_sync_kernel(argv)
    with caplog.at_level(logging.INFO, logger="masq"):
        assert cli.main(argv) == 0
    assert run.waits == [1.0, 1.0, 1.0, 1.0]
    warnings = floor_warnings(caplog)
    assert tuple(r.getMessage() for r in warnings) == asked.said
    assert all(r.kv["floor"] == 1.0 for r in warnings)  # type: ignore[attr-defined]
    [metrics] = run.metrics
    assert metrics.resync_interval == 1.0
    assert b"ip_masq_agent_resync_interval_seconds 1.0" in metrics.exposition()
    assert run.kernel.stdin == []  # in sync all along: the four syncs wrote nothing


def test_an_interval_at_the_floor_does_not_warn(
    loop: Callable[[int], Loop], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ip-masq-agent").write_text("resyncInterval: 1s\n")
    argv = daemon_args(tmp_path, "--resync-interval=1")
    run = loop(2)
    run.kernel = in_sync_kernel(argv)
    with caplog.at_level(logging.INFO, logger="masq"):
        assert cli.main(argv) == 0
    assert run.waits == [1.0, 1.0]
    assert floor_warnings(caplog) == []


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_new_config_is_frozen_out_of_the_collectors_walks_once() -> None:
    """After a sync that loaded a new config its objects are frozen; an unchanged config
    is not collected again; the next new one unfreezes (so that what the last one left in
    cycles can go) and collects before freezing."""
    import gc
    import weakref

    from masq.shell.agent import SyncReport
    from masq.shell.collector import ConfigFreezer

    first = load((("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8]\n"),), Options()).unwrap()
    second = load((("ip-masq-a", b"nonMasqueradeCIDRs: [10.1.0.0/16]\n"),), Options()).unwrap()
    freezer = ConfigFreezer()
    try:
        held = _Cycle()  # alive at the first freeze, garbage by the second
        old = weakref.ref(held)
        assert freezer.after(SyncReport(first, wrote=True))
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del held
        assert not freezer.after(SyncReport(first, wrote=False))  # nothing new
        assert gc.get_freeze_count() == frozen
        assert old() is not None  # frozen: no collection freed it
        fresh = weakref.ref(_Cycle())  # garbage in a cycle made after the freeze
        assert freezer.after(SyncReport(second, wrote=True))
        assert fresh() is None  # collected before the freeze
        assert old() is None  # unfrozen first, so the last config's garbage went too
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_no_cyclic_collection_runs_while_paused() -> None:
    import gc

    from masq.shell.collector import paused

    runs: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(phase)

    gc.callbacks.append(seen)
    try:
        with paused():
            assert not gc.isenabled()
            keep = [[i] for i in range(50_000)]  # far past the first generation's threshold
            inside = list(runs)
        assert gc.isenabled()
        assert inside == []
        keep += [[i] for i in range(50_000)]
        assert runs  # enabled again: the same allocations collect
    finally:
        gc.callbacks.remove(seen)
