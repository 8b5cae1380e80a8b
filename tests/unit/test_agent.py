"""One sync against scripted iptables: zero writes in steady state, fallback, errors, retries."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from fake_iptables import FakeIptables, FakeKernel, empty_nat

from masq.core.config import MasqConfig
from masq.core.iptables.model import DeleteRuleAt, Ruleset
from masq.core.iptables.plan import apply_ops
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.shell import agent as agent_module
from masq.shell import process
from masq.shell.agent import KUBE_PROXY_TABLE, Agent, backoff_seconds, with_retries
from masq.shell.configdir import FileCache
from masq.shell.errors import AgentError, TransientError
from masq.shell.metrics import Metrics
from masq.shell.options import Options

CHAIN = "IP-MASQ-AGENT"


def options(tmp_path: Path, **kw: object) -> Options:
    return Options(config_dir=str(tmp_path), iptables_backend="nft", **kw)  # type: ignore[arg-type]


def desired(config: MasqConfig) -> Ruleset:
    return desired_ruleset(config, "ipv4", RulesetOptions())


def in_sync(config: MasqConfig | None = None) -> FakeIptables:
    return FakeIptables.holding(desired(config or MasqConfig()))


def default_config(tmp_path: Path) -> MasqConfig:
    agent = Agent(options(tmp_path), Metrics())
    return agent.load().merged.config


def test_steady_state_runs_two_read_only_commands(tmp_path: Path) -> None:
    fake = in_sync(default_config(tmp_path))
    report = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert report.wrote is False
    assert fake.binaries() == ["iptables-nft", "iptables-nft"]


def test_empty_kernel_gets_one_restore(tmp_path: Path) -> None:
    """One transaction makes the chain and its jump, and the table then holds exactly
    what the config asks for (the fake applies the script; it is not told the result)."""
    fake = FakeIptables()
    report = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert report.wrote is True
    restores = [c for c in fake.binaries() if c.endswith("-restore")]
    assert restores == ["iptables-nft-restore"]
    assert fake.stdin[0].startswith("*nat\n")
    assert "-A POSTROUTING" in fake.stdin[0]
    assert fake.ruleset() == desired(default_config(tmp_path))


def test_one_added_cidr_is_one_insert(tmp_path: Path) -> None:
    fake = in_sync(default_config(tmp_path))
    (tmp_path / "ip-masq-agent").write_text(
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10]\n"
    )
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel())
    agent.sync()
    body = fake.stdin[0].splitlines()[1:-1]
    assert len(body) == 1
    assert body[0].startswith(f"-I {CHAIN} ")
    assert "100.64.0.0/10" in body[0]
    assert fake.ruleset() == desired(agent.load().merged.config)


def test_chain_moved_during_the_update_is_replaced_whole(tmp_path: Path) -> None:
    """The restore succeeds but another writer deletes a rule before the read-back: the
    agent notices and rebuilds the chain in a second transaction."""

    def other_writer(fake: FakeIptables) -> None:
        if len(fake.stdin) == 1:
            fake.rulesets["ipv4"] = apply_ops(fake.ruleset(), [DeleteRuleAt(CHAIN, 1)])

    fake = FakeIptables(after_restore=other_writer)
    Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert len(fake.stdin) == 2
    assert f":{CHAIN} - [0:0]" in fake.stdin[1]
    assert fake.ruleset() == desired(default_config(tmp_path))


def test_refused_restore_falls_back_to_replacing_the_chain(tmp_path: Path) -> None:
    fake = FakeIptables(restore_results=[(1, "iptables-restore: line 2 failed"), (0, "")])
    Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert len(fake.stdin) == 2
    assert f":{CHAIN} - [0:0]" in fake.stdin[1]
    assert fake.ruleset() == desired(default_config(tmp_path))
    # it re-observed between the two attempts
    restore_at = [i for i, c in enumerate(fake.binaries()) if c.endswith("-restore")]
    assert any(c[-1] == "-v" for c in fake.calls[restore_at[0] : restore_at[1]])


def test_both_attempts_refused_is_fatal(tmp_path: Path) -> None:
    fake = FakeIptables(restore_results=[(1, "line 2 failed"), (1, "line 3 failed")])
    with pytest.raises(AgentError, match="line 3 failed") as info:
        Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert not isinstance(info.value, TransientError)


def test_transient_restore_failure_does_not_fall_back(tmp_path: Path) -> None:
    fake = FakeIptables(restore_results=[(4, "Another app is currently holding the xtables lock")])
    with pytest.raises(TransientError) as raised:
        Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert str(raised.value) == (
        "ipv4 iptables-restore failed (iptables-nft-restore):"
        " Another app is currently holding the xtables lock"
    )
    assert len(fake.stdin) == 1


def test_dry_run_prints_and_writes_nothing(tmp_path: Path) -> None:
    fake = FakeIptables()
    out = io.StringIO()
    report = Agent(
        options(tmp_path, dry_run=True), Metrics(), fake, out=out, kernel=FakeKernel()
    ).sync()
    assert report.wrote is False
    assert fake.stdin == []
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("# ipv4")
    assert any(f"-A {CHAIN}" in ln for ln in lines)


def test_invalid_config_writes_nothing_and_reads_no_iptables(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-agent").write_text("nonMasqueradeCIDRs: [not-a-cidr]\n")
    fake = FakeIptables()
    with pytest.raises(AgentError, match="ip-masq-agent: nonMasqueradeCIDRs"):
        Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).sync()
    assert fake.calls == []


def test_ipv6_failure_in_planning_writes_nothing_for_ipv4(tmp_path: Path) -> None:
    """Every family is planned before any is written: ip6tables failing leaves the ipv4
    table as it was, with no restore run at all."""
    fake = FakeIptables()
    before = fake.ruleset("ipv4")

    def runner(
        argv: list[str], stdin: str | int | None = None, timeout: float | None = None
    ) -> process.Completed:
        if argv[0].startswith("ip6tables"):
            return process.Completed(tuple(argv), 2, "", "ip6tables: bad things")
        return fake(argv, stdin)

    with pytest.raises(AgentError, match="bad things"):
        Agent(options(tmp_path, enable_ipv6=True), Metrics(), runner, kernel=FakeKernel()).sync()
    assert fake.stdin == []
    assert fake.ruleset("ipv4") is before
    assert any(c[-1] == "-v" for c in fake.calls)  # ipv4 was listed before ipv6 failed


def test_conflict_fatal_only_with_flag(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("masqLinkLocal: true\n")
    (tmp_path / "ip-masq-b").write_text("masqLinkLocal: false\n")
    Agent(options(tmp_path), Metrics(), FakeIptables(), kernel=FakeKernel()).sync()
    fake = FakeIptables()
    with pytest.raises(AgentError, match=r"masqLinkLocal: ip-masq-a=true, ip-masq-b=false"):
        Agent(options(tmp_path, fail_on_conflict=True), Metrics(), fake, kernel=FakeKernel()).sync()
    assert fake.calls == []


def test_config_is_reparsed_only_when_bytes_change(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("masqLinkLocal: true\n")
    agent = Agent(options(tmp_path), Metrics(), FakeIptables(), kernel=FakeKernel())
    first = agent.load()
    assert agent.load() is first
    (tmp_path / "ip-masq-a").write_text("masqLinkLocal: false\n")
    assert agent.load() is not first


def test_idle_loads_read_no_file_and_an_edit_reads_that_file(tmp_path: Path) -> None:
    """The daemon's loads read a config file again only when it changed (or changed so
    recently that its timestamps cannot be trusted yet), and still see every change."""
    (tmp_path / "ip-masq-a").write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    (tmp_path / "ip-masq-b").write_text("nonMasqueradeCIDRs: [10.1.0.0/16]\n")
    reads: list[str] = []

    def opener(path: str) -> BinaryIO:
        reads.append(os.path.basename(path))
        return open(path, "rb")

    files = FileCache(opener=opener, clock=lambda: time.time_ns() + 10**10)
    agent = Agent(options(tmp_path), Metrics(), FakeIptables(), kernel=FakeKernel(), files=files)
    first = agent.load()
    for _ in range(3):
        assert agent.load() is first
    assert sorted(reads) == ["ip-masq-a", "ip-masq-b"]
    (tmp_path / "ip-masq-b").write_text("nonMasqueradeCIDRs: [10.2.0.0/16]\n")
    os.utime(tmp_path / "ip-masq-b", ns=(0, time.time_ns() + 10**9))  # a tick later
    assert [str(n) for n in agent.load().merged.config.non_masquerade_cidrs] == [
        "10.0.0.0/8",
        "10.2.0.0/16",
    ]
    assert sorted(reads) == ["ip-masq-a", "ip-masq-b", "ip-masq-b"]


def test_cleanup_removes_jump_and_chain(tmp_path: Path) -> None:
    fake = in_sync(default_config(tmp_path))
    Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).cleanup()
    script = fake.stdin[0]
    assert "-D POSTROUTING" in script
    assert f"-X {CHAIN}" in script
    assert fake.ruleset() == empty_nat("ipv4")


def test_cleanup_of_clean_kernel_writes_nothing(tmp_path: Path) -> None:
    fake = FakeIptables()
    assert Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel()).cleanup() == 0
    assert fake.stdin == []


def test_backoff_doubles_and_caps() -> None:
    # Fails if the backoff stops doubling or ignores the cap (the resync interval).
    assert [backoff_seconds(n, 3.0) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_with_retries_gives_up_after_ten_transient_failures() -> None:
    sleeps: list[float] = []

    def step() -> None:
        raise TransientError("lock")

    with pytest.raises(AgentError, match="10 attempts"):
        with_retries(step, cap=60.0, sleep=sleeps.append)
    assert len(sleeps) == 9


def test_with_retries_recovers() -> None:
    attempts = []

    def step() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("lock")

    with_retries(step, cap=60.0, sleep=lambda s: None)
    assert len(attempts) == 3


HINT = "kube-proxy runs in nftables mode here: consider --dataplane=nftables"


def hints(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == HINT]


def test_kube_proxy_nftables_table_gives_one_hint_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the iptables dataplane, kube-proxy's ``ip kube-proxy`` table (its nftables mode)
    is worth one info line at start, naming the flag: not one per sync."""
    fake = FakeIptables()
    kernel = FakeKernel(tables={("ip", KUBE_PROXY_TABLE)})
    with caplog.at_level(logging.INFO, logger="masq"):
        agent = Agent(options(tmp_path), Metrics(), fake, kernel=kernel)
        agent.sync()
        agent.sync()
    [hint] = hints(caplog)
    assert hint.levelno == logging.INFO
    assert "lookup" in hint.kv["why"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dataplane", "tables"),
    [
        ("iptables", set()),  # no kube-proxy table: iptables mode (or no kube-proxy)
        ("iptables", {("ip", "kube-proxy-not"), ("inet", KUBE_PROXY_TABLE)}),  # not its table
        ("nftables", {("ip", KUBE_PROXY_TABLE)}),  # already on the advised dataplane
    ],
)
def test_no_kube_proxy_hint_without_its_table_or_in_nftables_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dataplane: str, tables: set[tuple[str, str]]
) -> None:
    kernel = FakeKernel(tables=tables)
    with caplog.at_level(logging.DEBUG, logger="masq"):
        Agent(options(tmp_path, dataplane=dataplane), Metrics(), FakeIptables(), kernel=kernel)
    assert hints(caplog) == []


class UnknowingKernel(FakeKernel):
    """netlink cannot answer (no nf_tables, no permission): every table is "cannot tell"."""

    def table_exists(self, family: str, name: str) -> bool | None:
        return None


def test_no_kube_proxy_hint_when_the_kernel_cannot_tell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="masq"):
        Agent(options(tmp_path), Metrics(), FakeIptables(), kernel=UnknowingKernel())
    assert hints(caplog) == []


def test_a_scrape_before_the_first_config_read_shows_no_cidr_series(tmp_path: Path) -> None:
    """The per-CIDR series are the config's CIDRs: before the agent read it, a scrape lists
    nothing (not the kernel's rules alone, which would lack the covered CIDRs' zeros)."""
    config = default_config(tmp_path)
    fake = in_sync(config)
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel())
    assert agent.traffic_now() == {}
    assert fake.binaries() == []
    agent.load()
    assert list(agent.traffic_now()) == ["ipv4"]
    assert fake.binaries() != []


def test_output_address_not_on_the_node_is_warned_once_per_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An outputAddress the node does not hold is warned about once when the config sets it,
    not again while it stays (other keys may change), again when it changes, and never for an
    address the node holds or when the kernel cannot tell (ip_nonlocal_bind)."""
    local = {"192.0.2.1": True, "192.0.2.2": False, "192.0.2.3": None, "192.0.2.4": False}
    monkeypatch.setattr(agent_module, "local_address", lambda ip: local[str(ip)])
    agent = Agent(options(tmp_path), Metrics(), FakeIptables(), kernel=FakeKernel())

    def load(address: str, extra: str = "") -> list[str]:
        caplog.clear()
        (tmp_path / "ip-masq-a").write_text(f"outputAddress: {address}\n{extra}")
        with caplog.at_level(logging.WARNING):
            agent.load()
        return [
            r.getMessage()
            for r in caplog.records
            if "not an address of this node" in r.getMessage()
        ]

    assert load("192.0.2.2") == [
        "outputAddress is not an address of this node: replies to SNATed packets will not come"
        " back here"
    ]
    assert load("192.0.2.2", "masqLinkLocal: true\n") == []
    assert len(load("192.0.2.4")) == 1
    assert load("192.0.2.1") == []
    assert load("192.0.2.3") == []


def test_an_egress_config_syncs_and_then_writes_nothing(tmp_path: Path) -> None:
    """A config with every egress key converges in one restore (the strict fake applies it to
    the kernel model and refuses what iptables would), then a second sync writes nothing."""
    (tmp_path / "ip-masq-a").write_text(
        "outputInterfaces: [eth1, wl*]\nsourceCIDRs: [10.8.0.0/16]\noutputAddress: 192.0.2.10\n"
    )
    fake = FakeIptables()
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel())
    agent.sync()
    config = agent.load().merged.config
    assert fake.ruleset() == desired(config)
    assert "-s 10.8.0.0/16 -o wl+" in fake.stdin[0]
    assert "-j SNAT --to-source 192.0.2.10 --random-fully" in fake.stdin[0]
    writes = len(fake.stdin)
    agent.sync()
    assert len(fake.stdin) == writes
