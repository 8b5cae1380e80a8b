"""The nftables runner and the agent in nftables mode, against a scripted nft.

The scripted nft (``fake_nft.FakeNft``) applies each batch to a model of the table (the
core's apply_ops), refuses what nft refuses, and lists the table in nft's own JSON shape,
so these tests check the shell's choices (what is listed, when, what is handed over and
how failures are told apart) and what the agent's writes leave in the table, not nft
itself: the namespace tests and tests/properties/test_nftables_codec.py run the real nft.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fake_iptables import FakeIptables, FakeKernel
from fake_nft import FakeNft
from pyrsistent import pmap, pvector

from masq.core.addresses import IPNetwork
from masq.core.config import MasqConfig
from masq.core.decision import decide
from masq.core.nat import parse_to_ports
from masq.core.nftables.codec import state_of
from masq.core.nftables.model import NftState, NftTable
from masq.core.nftables.netlink import RuleCounter
from masq.core.nftables.table import desired_table
from masq.core.nftables.traffic import ScrapePlan, scrape_plan, traffic_of
from masq.core.options import DataplaneOptions
from masq.core.traffic import Counters
from masq.shell import nftables_runner
from masq.shell.agent import Agent
from masq.shell.dataplane import dataplane_options
from masq.shell.errors import AgentError, TransientError
from masq.shell.metrics import Metrics, capped
from masq.shell.nftables_runner import Nft, NftablesDataplane, failure, feature_missing
from masq.shell.options import Options
from masq.shell.process import Completed, Stdin


def ip(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def options(tmp_path: Path, **kw: object) -> Options:
    return Options(
        config_dir=str(tmp_path),
        dataplane="nftables",
        iptables_backend="nft",
        metrics_bind_address=None,
        **kw,  # type: ignore[arg-type]
    )


def test_failure_tells_transient_from_permanent_by_nfts_message() -> None:
    """Resource shortage is retried; a refusal (overlap, missing object, permission) is not."""

    def done(stderr: str, code: int = 1) -> Completed:
        return Completed(("nft", "-f", "-"), code, "", stderr)

    transient = [
        "netlink: Error: Could not process rule: No buffer space available",
        "netlink: Error: cache initialization failed: Device or resource busy",
        "netlink: Error: Could not process rule: Interrupted system call",
        "mnl.c:60: Unable to initialize Netlink socket: Too many open files",
        "timed out after 120s",
    ]
    permanent = [
        "Error: interval overlaps with an existing one\nadd element ip t s { 10.1.0.0/16 }\n  ^^^",
        "Error: Could not process rule: Operation not permitted",
        "Error: element does not exist",
        "Error: syntax error, unexpected ip",
    ]
    for text in transient:
        assert isinstance(failure(done(text), "nft batch"), TransientError), text
    for text in permanent:
        error = failure(done(text), "nft batch")
        assert type(error) is AgentError, text
    assert "at: add element ip t s { 10.1.0.0/16 }" in str(failure(done(permanent[0]), "x"))


# A rule of the probe with --to-ports=1024-2047,3000-3999 (line 15 of its batch)
TO_PORTS_RULE = (
    "meta l4proto tcp numgen random mod 2024 < 1024 masquerade to :1024-2047 fully-random"
)


@pytest.mark.parametrize(
    ("stderr", "says"),
    [
        (
            "Error: Could not process rule: No such file or directory\n"
            "fib daddr type local return\n^^^",
            "fib expression",
        ),
        (
            "Error: Could not process rule: No such file or directory\n"
            "type nat hook postrouting priority srcnat + 10; policy accept;\n^^^",
            "nat chains",
        ),
        ("Error: Could not process rule: Operation not permitted", "CAP_NET_ADMIN"),
        ("Error: Could not process rule: Protocol not supported", "nf_tables refused"),
        # As nft 1.0.6 prints a refusal of the probe's batch, read as /dev/stdin: the line
        # of the refused statement, carets under the expression the kernel refused in it
        # (its extack), or under the name of a set whatever it refused in the declaration.
        pytest.param(
            "/dev/stdin:15:3-25: Error: Could not process rule: No such file or directory\n"
            "\t\tmasquerade fully-random\n"
            "\t\t^^^^^^^^^^^^^^^^^^^^^^^\n",
            "masquerade (nft_masq)",
            id="masquerade",
        ),
        pytest.param(
            "/dev/stdin:15:50-86: Error: Could not process rule: No such file or directory\n"
            f"\t\t{TO_PORTS_RULE}\n"
            f"\t\t{' ' * 47}{'^' * 37}\n",
            "masquerade (nft_masq)",
            id="masquerade-in-a-to-ports-rule",
        ),
        pytest.param(
            "/dev/stdin:15:20-41: Error: Could not process rule: No such file or directory\n"
            f"\t\t{TO_PORTS_RULE}\n"
            f"\t\t{' ' * 17}{'^' * 22}\n",
            "numgen (nft_numgen)",
            id="numgen",
        ),
        pytest.param(
            "/dev/stdin:4:6-18: Error: Could not process rule: Operation not supported\n"
            "\tset masquerade-v4 {\n"
            "\t    ^^^^^^^^^^^^^\n",
            "interval sets (nft_set_rbtree)",
            id="interval-set",
        ),
        pytest.param(
            "/dev/stdin:9:6-22: Error: Could not process rule: Operation not supported\n"
            "\tset non-masquerade-v4 {\n"
            "\t    ^^^^^^^^^^^^^^^^^\n",
            "counters on set elements",
            id="element-counters",
        ),
    ],
)
def test_probe_refusal_names_the_missing_feature(stderr: str, says: str) -> None:
    """The feature named (the part before nft's own words, which echo the statement) is the
    one the kernel refused."""
    named = feature_missing(Completed(("nft",), 1, "", stderr)).split(": ", 1)[0]
    assert says in named


def test_batches_reach_nft_as_a_complete_file(tmp_path: Path) -> None:
    """Every batch (the probe too) is read by nft from a file descriptor holding all of it."""
    fake = FakeNft()
    plane = NftablesDataplane(DataplaneOptions(), fake, FakeKernel(gen=7))
    nft = plane.nft
    nft.run_batch("add table ip x\n")
    assert fake.calls == [["nft", "-f", "-"]]
    assert fake.batches == ["add table ip x\n"]
    nft.run_batch("add table ip x\n", check=True)
    assert fake.calls[-1] == ["nft", "-c", "-f", "-"]


def test_a_batch_that_runs_too_long_is_a_transient_failure() -> None:
    """Every batch is run with a time limit (nft can retry an interrupted read forever); a
    run killed at that limit is told as transient, so the sync is retried, not fatal."""
    from masq.shell.nftables_runner import BATCH_TIMEOUT_SECONDS
    from masq.shell.process import TIMEOUT_EXIT

    limits: list[float | None] = []

    def slow(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
        limits.append(timeout)
        return Completed(tuple(argv), TIMEOUT_EXIT, "", f"timed out after {timeout:g}s")

    with pytest.raises(TransientError, match="timed out after 120s"):
        Nft("ip-masq-agent", slow, FakeKernel()).run_batch("add table ip x\n")
    assert limits == [BATCH_TIMEOUT_SECONDS]


def test_missing_nft_with_no_netlink_answer_finds_no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """In iptables mode on a node without nft, looking for our table costs nothing and
    finds nothing (rather than failing the sync)."""
    kernel = FakeKernel()
    kernel.table_exists = lambda family, name: None  # type: ignore[method-assign]
    monkeypatch.setenv("PATH", "/nonexistent")
    assert Nft("ip-masq-agent", FakeNft(), kernel).families_present() == ()


def test_first_sync_probes_then_writes_the_whole_table(tmp_path: Path) -> None:
    """On an empty node: one ``nft -c`` probe of the table, then one batch that makes it."""
    fake = FakeNft()
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel(gen=1))
    assert agent.sync().wrote is True
    assert [c[1] for c in fake.calls] == ["-c", "-f"]
    written = fake.batches[-1]
    assert written.startswith("add table ip ip-masq-agent\ndelete table ip ip-masq-agent\n")
    assert "10.0.0.0/8" in written and "priority srcnat + 10" in written
    wanted = desired_table(agent.load().merged.config, dataplane_options(agent.opts))
    assert fake.state == state_of([wanted])


def test_only_a_sync_that_writes_probes_first(tmp_path: Path) -> None:
    """A kernel already holding the whole desired table has every feature the probe
    checks, so a steady ``--once`` runs no ``nft -c``; the first write is still probed."""
    fake = FakeNft()
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=fake.kernel())
    desired = desired_table(agent.load().merged.config, dataplane_options(agent.opts))
    fake.state = state_of([desired])
    assert agent.sync().wrote is False
    assert fake.nft_calls() == ["-j list"]  # the listing only: no probe, no batch
    fake.write("delete table ip ip-masq-agent\n")  # someone deleted the table
    assert agent.sync().wrote is True
    assert [c[1] for c in fake.calls[1:]] == ["-c", "-f"]
    assert fake.state == state_of([desired])


def test_an_unchanged_generation_skips_the_listing() -> None:
    """Once a sync found the table in sync, later syncs at the same nf_tables generation
    list nothing; a new generation (anyone's commit) lists again."""
    fake = FakeNft(state=state_of([desired_table(MasqConfig(), DataplaneOptions())]), generation=5)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel())
    assert plane.plan(MasqConfig()).ops == ()
    assert plane.plan(MasqConfig()).ops == ()
    assert plane.plan(MasqConfig()).listed is False
    assert fake.nft_calls() == ["-j list"]
    fake.commit_elsewhere()  # anyone's commit, to any table
    assert plane.plan(MasqConfig()).listed is True
    assert fake.nft_calls() == ["-j list"] * 2


def test_dry_run_prints_the_batch_and_writes_nothing(tmp_path: Path) -> None:
    import io

    fake = FakeNft()
    out = io.StringIO()
    agent = Agent(options(tmp_path, dry_run=True), Metrics(), fake, out=out, kernel=FakeKernel())
    assert agent.sync().wrote is False
    assert [c[1] for c in fake.calls] == ["-c"]  # the probe checks, nothing is written
    text = out.getvalue()
    assert text.startswith("# nft table ip ip-masq-agent: 1 change(s)")
    assert "* table ip ip-masq-agent {" in text


def test_a_refused_incremental_batch_falls_back_to_replacing_the_table() -> None:
    """A plan made from a stale listing (an element the kernel no longer holds) is refused
    by nft; the agent lists again and replaces the table in one batch."""
    from masq.core.nftables.plan import plan
    from masq.shell.nftables_runner import NftPlan

    ten = ipaddress.ip_network("10.0.0.0/8")
    desired = desired_table(MasqConfig(non_masquerade_cidrs=pvector([ten])), DataplaneOptions())
    stale_set = desired.sets["non-masquerade-v4"]
    stale_set = replace(stale_set, elements=stale_set.elements | {ip("100.64.0.0/10")})
    stale = state_of([replace(desired, sets=desired.sets.set(stale_set.name, stale_set))])
    fake = FakeNft(state=state_of([desired]))
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel())
    ops = plan(desired, stale)
    written = plane.apply(NftPlan(desired, stale, ops))
    assert len(fake.batches) == 2
    assert fake.batches[0].startswith("delete element ip ip-masq-agent non-masquerade-v4")
    assert fake.batches[1].startswith("add table ip ip-masq-agent\ndelete table ip ip-masq-agent\n")
    assert written.ops == len(ops) + 1
    assert fake.state == state_of([desired])


def test_a_transient_failure_is_not_turned_into_a_replace(tmp_path: Path) -> None:
    from masq.core.nftables.plan import plan
    from masq.shell.nftables_runner import NftPlan

    fake = FakeNft(
        fail_next=[(1, "netlink: Error: Could not process rule: No buffer space available")]
    )
    plane = NftablesDataplane(DataplaneOptions(), fake, FakeKernel())
    desired = desired_table(MasqConfig(), DataplaneOptions())
    with pytest.raises(TransientError):
        plane.apply(NftPlan(desired, NftState(), plan(desired, NftState())))
    assert len(fake.batches) == 1


def test_element_counts_in_rule_writes(tmp_path: Path) -> None:
    """Each element is one write, labelled with its own family whatever its set is called."""
    from masq.core.nftables.model import AddElements, DeleteElements
    from masq.shell.nftables_runner import write_labels

    nets = tuple(ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(3))
    v6 = (ipaddress.ip_network("fd00::/8"),)
    labels = write_labels(
        [
            AddElements("inet", "t", "renamed-v6", nets),
            AddElements("inet", "t", "masquerade-v4", v6),
            DeleteElements("inet", "t", "x", v6),
        ]
    )
    assert labels == {"ipv4": ("add_element",) * 3, "ipv6": ("add_element", "delete_element")}


@pytest.mark.parametrize(("ipv6", "families"), [(False, ["ipv4"]), (True, ["ipv4", "ipv6"])])
def test_table_and_chain_ops_count_for_every_family_their_table_serves(
    ipv6: bool, families: list[str]
) -> None:
    """An ``ip`` table serves IPv4 only; an ``inet`` one (IPv6 enabled) both families."""
    from masq.core.config import MasqConfig
    from masq.core.nftables.model import DeleteTable, NftOp, ReplaceChain, ReplaceTable
    from masq.core.nftables.table import desired_table
    from masq.shell.nftables_runner import write_labels

    table = desired_table(MasqConfig(), DataplaneOptions(enable_ipv6=ipv6))
    chain = table.chains["postrouting"]
    ops: list[NftOp] = [ReplaceTable(table), ReplaceChain(table.family, table.name, chain)]
    ops.append(DeleteTable(table.family, table.name))
    labels = write_labels(ops)
    assert sorted(labels) == families
    for written in labels.values():
        assert written == ("replace_table", "replace_chain", "delete_table")


def test_traffic_reads_each_sets_kind_not_its_name() -> None:
    """A set's counters are reported under the list it holds (its ``kind``), so renaming
    the sets cannot turn masqueraded traffic into kept traffic."""
    from dataclasses import replace
    from types import MappingProxyType

    from pyrsistent import pmap

    from masq.core.config import MasqConfig
    from masq.core.nftables.table import desired_table
    from masq.core.nftables.traffic import traffic_of
    from masq.core.traffic import Counters

    net = ipaddress.ip_network("203.0.113.0/24")
    keep = ipaddress.ip_network("10.0.0.0/8")
    config = MasqConfig(masquerade_cidrs=pvector([net]), non_masquerade_cidrs=pvector([keep]))
    table = desired_table(config, DataplaneOptions())
    sets = {
        f"set-{i}": replace(
            s, name=f"set-{i}", counters=MappingProxyType({e: Counters(7, 700) for e in s.elements})
        )
        for i, s in enumerate(table.sets.values())
    }
    rows = traffic_of(replace(table, sets=pmap(sets)))["ipv4"]
    assert {(r.cidr, r.action, r.packets) for r in rows if r.packets} == {
        ("203.0.113.0/24", "MASQUERADE", 7),
        ("10.0.0.0/8", "RETURN", 7),
    }


def test_after_its_own_write_the_agent_knows_the_table_without_listing_it() -> None:
    """When the generation after a batch is the planned one plus one, only that batch was
    committed: the next sync plans from the modelled table, listing nothing; any other
    commit in between (generation + 2) makes it list again."""
    fake = FakeNft(generation=10)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel())
    first = plane.plan(MasqConfig())
    assert first.listed is True
    plane.apply(first)  # the one commit: generation 11
    again = plane.plan(MasqConfig())
    assert again.listed is False and again.ops == ()
    bigger = MasqConfig(non_masquerade_cidrs=pvector([ip("100.64.0.0/10")]))
    step = plane.plan(bigger)
    assert step.listed is False and len(step.ops) == 1
    fake.commit_elsewhere()  # someone else's commit, then ours: 13
    plane.apply(step)
    # the start-up probe (-c) and the two batches: nothing listed yet
    assert fake.nft_calls() == ["-c -f", "-f -", "-f -"]
    assert plane.plan(bigger).listed is True and fake.nft_calls()[-1] == "-j list"
    assert fake.state.tables["ip"] == desired_table(bigger, DataplaneOptions())


def test_iptables_mode_without_nft_leaves_a_table_of_ours_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A table nftables mode left behind, on a node whose nft is gone: iptables mode syncs,
    says once that the table stays, and never fails for want of nft."""
    kernel = FakeKernel(tables={("ip", "ip-masq-agent")}, chains=None)
    fake = FakeIptables()
    agent = Agent(
        Options(config_dir=str(tmp_path), iptables_backend="nft", metrics_bind_address=None),
        Metrics(),
        fake,
        kernel=kernel,
    )
    monkeypatch.setattr("masq.shell.nftables_runner._which", lambda name: None)
    agent.sync()
    agent.sync()
    warnings = [r for r in caplog.records if "nft is not installed" in r.getMessage()]
    assert len(warnings) == 1
    assert not any(c[0] == "nft" for c in fake.calls)


def test_an_idle_resync_builds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same generation, same config object: no listing, and the desired table is built once
    (at 50,000 CIDRs building it costs 0.2 s, far over an idle resync's budget)."""
    from masq.shell import nftables_runner

    built: list[int] = []

    def counting(config: MasqConfig, options: DataplaneOptions, previous: object = None) -> object:
        built.append(1)
        return desired_table(config, options)

    monkeypatch.setattr(nftables_runner, "desired_table", counting)
    config = MasqConfig()
    fake = FakeNft(state=state_of([desired_table(config, DataplaneOptions())]))
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel())
    for _ in range(5):
        assert plane.plan(config).ops == ()
    assert len(built) == 1
    assert fake.nft_calls() == ["-j list"]
    assert plane.plan(MasqConfig()).ops == ()  # an equal config, a new object: built again
    assert len(built) == 2


def test_a_refused_probe_exits_with_the_missing_feature_named(tmp_path: Path) -> None:
    """The start-up probe's refusal reaches the operator as what is missing, nothing written."""
    fake = FakeNft(
        fail_next=[
            (
                1,
                "Error: Could not process rule: No such file or directory\n"
                "fib daddr type local return\n^^^",
            )
        ]
    )
    agent = Agent(options(tmp_path), Metrics(), fake, kernel=FakeKernel(gen=1))
    with pytest.raises(AgentError, match=r"nftables dataplane unavailable: .*fib expression"):
        agent.sync()
    assert [c[1] for c in fake.calls] == ["-c"]  # the probe only: nothing was written
    assert fake.state == NftState()


def test_a_config_edit_is_planned_from_the_change_alone(tmp_path: Path) -> None:
    """After the agent's own write, a one-CIDR edit of one file is merged from the last
    merge, its table derived from the last desired table (which the kernel is known to
    hold, same elements object) and planned from the recorded change: one element op,
    nothing listed, and the kernel ends up with exactly the table built from scratch."""
    from masq.shell.configdir import load

    opts = Options(dataplane="nftables", config_dir=str(tmp_path))
    files = [
        ("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]\n"),
        ("ip-masq-b", b"masqueradeCIDRs: [10.1.0.0/16]\n"),
    ]
    first = load(tuple(files), opts).unwrap()
    fake = FakeNft(generation=3)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel())
    plane.apply(plane.plan(first.merged.config))
    files[0] = ("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8, 12.0.0.0/8]\n")
    second = load(tuple(files), opts, first).unwrap()
    assert second.merged.config.change is not None
    step = plane.plan(second.merged.config)
    assert step.listed is False
    assert step.desired is not None
    known = step.observed.tables["ip"].sets["non-masquerade-v4"].elements
    assert step.desired.sets["non-masquerade-v4"].delta_from(known) == (
        frozenset(),
        frozenset([ip("12.0.0.0/8")]),
    )
    assert len(step.ops) == 1
    plane.apply(step)
    assert fake.state.tables["ip"] == desired_table(second.merged.config, DataplaneOptions())


class _StateCounters:
    """A ``CounterReader`` over a FakeNft's kernel state, counting what it is asked."""

    def __init__(self, fake: FakeNft) -> None:
        self.fake = fake
        self.elements_read = 0

    def rules(self, proto: str, table: str, chain: str) -> list[RuleCounter]:
        rules = self.fake.state.tables[proto].chains[chain].rules  # type: ignore[index]
        return [RuleCounter(r.daddr_set, r.counters if r.counter else None) for r in rules]

    def elements(
        self, proto: str, table: str, set_name: str, nets: Sequence[IPNetwork]
    ) -> dict[IPNetwork, Counters | None]:
        self.elements_read += len(nets)
        s = self.fake.state.tables[proto].sets[set_name]  # type: ignore[index]
        return {n: s.counters.get(n, Counters(0, 0)) if n in s.elements else None for n in nets}


def _counted(fake: FakeNft) -> None:
    """Traffic in the fake kernel: each element and counted rule some packets, each set
    lookup rule the sum of its set's elements (as the kernel counts them)."""
    table = fake.state.tables["ip"]
    sets = {
        n: replace(
            s, counters={e: Counters(i + 1, 100 * (i + 1)) for i, e in enumerate(s.elements)}
        )
        for n, s in table.sets.items()
    }
    chain = table.chains["postrouting"]
    rules = []
    for r in chain.rules:
        if r.counter and r.daddr_set is not None:
            values = sets[r.daddr_set].counters.values()
            rules.append(
                replace(
                    r,
                    counters=Counters(sum(c.packets for c in values), sum(c.bytes for c in values)),
                )
            )
        else:
            rules.append(replace(r, counters=Counters(5, 500)) if r.counter else r)
    chains = table.chains.set("postrouting", replace(chain, rules=pvector(rules)))
    fake.state = replace(
        fake.state,
        tables=fake.state.tables.set("ip", replace(table, sets=pmap(sets), chains=chains)),
    )


def test_a_scrape_reads_only_the_counters_it_shows() -> None:
    """With 1,000 CIDRs and a cap of 10 series, a refreshing scrape reads the base chain's
    rule counters and at most 10 elements, lists nothing, and shows exactly what the capped
    full listing shows (``other`` from the lookup rules' totals); a chain that is not the
    desired one is listed whole instead."""
    nets = pvector(ipaddress.ip_network(f"11.{i // 250}.{i % 250}.0/24") for i in range(1000))
    config = MasqConfig(non_masquerade_cidrs=nets, cidr_limit=5000)
    fake = FakeNft(generation=2)
    reader = _StateCounters(fake)
    plane = NftablesDataplane(
        DataplaneOptions(), fake, fake.kernel(), max_series=10, counters=reader
    )
    plane.apply(plane.plan(config))
    _counted(fake)
    calls = len(fake.nft_calls())
    shown = capped([t for rows in plane.traffic(config).values() for t in rows], 10)
    assert len(fake.nft_calls()) == calls  # no nft started, nothing listed
    assert 0 < reader.elements_read <= 10
    every = traffic_of(fake.state.tables["ip"], [decide(config, "ipv4")])
    listed = capped([t for rows in every.values() for t in rows], 10)
    assert shown == listed
    assert any(t.cidr == "other" and t.packets > 0 for t in shown)
    table = fake.state.tables["ip"]
    chain = table.chains["postrouting"]
    fake.state = replace(
        fake.state,
        tables=fake.state.tables.set(
            "ip",
            replace(
                table,
                chains=table.chains.set("postrouting", replace(chain, rules=chain.rules[:-1])),
            ),
        ),
    )
    plane.traffic(config)
    assert fake.nft_calls()[-1] == "-j list"


def test_the_scrape_plan_is_made_once_per_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which series a scrape shows and which elements it reads follow from the config and
    its desired table alone: scrapes reuse the plan until the config changes."""
    made: list[MasqConfig] = []

    def counting(table: NftTable, config: MasqConfig, *rest: Any) -> ScrapePlan:
        made.append(config)
        return scrape_plan(table, config, *rest)

    monkeypatch.setattr(nftables_runner, "scrape_plan", counting)
    nets = pvector(ipaddress.ip_network(f"11.0.{i}.0/24") for i in range(20))
    fake = FakeNft(generation=2)
    plane = NftablesDataplane(
        DataplaneOptions(), fake, fake.kernel(), max_series=5, counters=_StateCounters(fake)
    )
    first = MasqConfig(non_masquerade_cidrs=nets)
    plane.apply(plane.plan(first))
    shown = [plane.traffic(first) for _ in range(3)]
    assert made == [first]
    assert shown[0] == shown[2]
    second = MasqConfig(non_masquerade_cidrs=nets[1:])
    plane.apply(plane.plan(second))
    plane.traffic(second)
    assert made == [first, second]


@pytest.mark.parametrize("enable_ipv6", [False, True])
def test_an_egress_config_converges_and_then_writes_nothing(
    tmp_path: Path, enable_ipv6: bool
) -> None:
    """A config with every egress key (a wildcard interface beside a name it covers, sources of
    both families, SNAT addresses, --to-ports) is written in one batch the strict fake accepts
    (it refuses what nft refuses: overlapping interval elements, ports without a protocol)
    and lists back as the desired table; the next sync changes nothing."""
    text = "outputInterfaces: [eth0, 'eth*', wl0]\nsourceCIDRs: [10.244.0.0/16]\n"
    text += "outputAddress: 192.0.2.10\n"
    if enable_ipv6:
        text += "sourceCIDRs: [10.244.0.0/16, 'fd00:244::/64']\noutputAddressIPv6: '2001:db8::10'\n"
        text = text.replace("sourceCIDRs: [10.244.0.0/16]\n", "")
    (tmp_path / "ip-masq-egress").write_text(text)
    fake = FakeNft()
    opts = options(
        tmp_path, enable_ipv6=enable_ipv6, to_ports=parse_to_ports("1024-29999").unwrap()
    )
    agent = Agent(opts, Metrics(), fake, kernel=fake.kernel())
    assert agent.sync().wrote is True
    written = fake.batches[-1]
    assert 'oifname != { "eth*", "wl0" } return' in written
    assert "snat" in written and "192.0.2.10" in written
    wanted = desired_table(agent.load().merged.config, dataplane_options(agent.opts))
    assert fake.state == state_of([wanted])
    assert agent.sync().wrote is False
