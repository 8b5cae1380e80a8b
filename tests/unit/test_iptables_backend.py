"""``--iptables-backend=auto``: the decision, and that it asks for expensive signals last."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from masq.core.addresses import Family
from masq.core.options import DataplaneOptions
from masq.shell import iptables_backend as backend
from masq.shell import netlink
from masq.shell.iptables_backend import (
    SystemProbe,
    choose_backend,
    count_rules,
    iptables_binary,
    parse_nft_tables,
    resolve_backend,
)
from masq.shell.iptables_runner import Iptables, IptablesDataplane, ResolvedBackend
from masq.shell.process import Completed


@dataclass
class FakeProbe:
    legacy: frozenset[str] = frozenset()
    nft: frozenset[str] = frozenset()
    chains: set[tuple[str, str, str]] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def legacy_tables(self) -> frozenset[str]:
        self.asked.append("legacy_tables")
        return self.legacy

    def nft_tables(self) -> frozenset[str]:
        self.asked.append("nft_tables")
        return self.nft

    def has_chain(self, backend: ResolvedBackend, table: str, chain: str) -> bool:
        self.asked.append(f"has_chain {backend} {chain}")
        return (backend, table, chain) in self.chains

    def rule_count(self, backend: ResolvedBackend) -> int:
        self.asked.append(f"count {backend}")
        return self.counts.get(backend, 0)


ALL = frozenset({"filter", "nat", "mangle"})
Tool = Literal["", "save", "restore"]


def test_no_legacy_tables_means_nft_without_any_process() -> None:
    probe = FakeProbe(nft=ALL)
    assert choose_backend(probe)[0] == "nft"
    assert probe.asked == ["legacy_tables"]


def test_empty_node_defaults_to_nft() -> None:
    assert choose_backend(FakeProbe())[0] == "nft"


def test_only_legacy_tables_means_legacy() -> None:
    probe = FakeProbe(legacy=frozenset({"nat"}))
    assert choose_backend(probe)[0] == "legacy"
    assert probe.asked == ["legacy_tables", "nft_tables"]


@pytest.mark.parametrize(
    ("chains", "expected"),
    [
        ({("nft", "mangle", "KUBE-IPTABLES-HINT")}, "nft"),
        ({("legacy", "mangle", "KUBE-IPTABLES-HINT")}, "legacy"),
        ({("nft", "mangle", "KUBE-KUBELET-CANARY")}, "nft"),
        ({("legacy", "mangle", "KUBE-KUBELET-CANARY")}, "legacy"),
        # the hint outranks the canary, whichever backend holds the canary
        (
            {("legacy", "mangle", "KUBE-IPTABLES-HINT"), ("nft", "mangle", "KUBE-KUBELET-CANARY")},
            "legacy",
        ),
    ],
)
def test_kubelet_hints_decide_when_both_have_tables(
    chains: set[tuple[str, str, str]], expected: str
) -> None:
    probe = FakeProbe(legacy=ALL, nft=ALL, chains=chains, counts={"legacy": 0, "nft": 10000})
    assert choose_backend(probe)[0] == expected
    assert not any(a.startswith("count") for a in probe.asked)


@pytest.mark.parametrize(
    ("legacy", "nft", "expected"),
    [
        (10, 50000, "legacy"),  # the wrapper's rule: 10 legacy rules are enough
        (3, 2, "legacy"),
        (3, 3, "legacy"),
        (3, 4, "nft"),
        (0, 0, "nft"),
        (0, 5, "nft"),
    ],
)
def test_counting_when_no_hint(legacy: int, nft: int, expected: str) -> None:
    probe = FakeProbe(legacy=ALL, nft=ALL, counts={"legacy": legacy, "nft": nft})
    assert choose_backend(probe)[0] == expected


def test_many_legacy_rules_skip_counting_nft() -> None:
    probe = FakeProbe(legacy=ALL, nft=ALL, counts={"legacy": 10})
    assert choose_backend(probe) == ("legacy", "iptables-legacy holds 10 rules")
    assert "count nft" not in probe.asked


def test_parse_nft_tables_keeps_only_iptables_nft_tables() -> None:
    text = "table ip nat\ntable ip6 mangle\ntable inet firewalld\ntable ip kube-proxy\n"
    assert parse_nft_tables(text) == frozenset({"nat", "mangle"})


def test_count_rules_counts_appends_with_or_without_counters() -> None:
    text = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A X -j RETURN\n[1:2] -A Y -j RETURN\nCOMMIT\n"
    assert count_rules(text) == 2


def test_system_probe_reads_legacy_names_files(tmp_path: Path) -> None:
    (tmp_path / "v4").write_text("nat\nfilter\n")
    probe = SystemProbe(names_files=[str(tmp_path / "v4"), str(tmp_path / "missing")])
    assert probe.legacy_tables() == frozenset({"nat", "filter"})


def test_system_probe_nft_failure_falls_back_to_counting() -> None:
    def runner(
        argv: list[str], stdin: str | int | None = None, timeout: float | None = None
    ) -> Completed:
        return Completed(tuple(argv), 1, "", "Operation not permitted")

    # Unknown nft state must not look like "no nft tables" (that would pick legacy).
    assert SystemProbe(runner=runner).nft_tables() == backend.IPTABLES_TABLES


def test_resolve_backend_keeps_no_state_between_calls() -> None:
    """Nothing is cached in the module, so no test needs to reset it: each call with
    ``auto`` asks its probe, and an explicit backend asks nothing."""
    first = FakeProbe(legacy=frozenset({"nat"}))
    assert resolve_backend("auto", first) == "legacy"
    second = FakeProbe()
    assert resolve_backend("auto", second) == "nft"
    assert second.asked == ["legacy_tables"]
    third = FakeProbe()
    assert resolve_backend("legacy", third) == "legacy"
    assert third.asked == []


def test_the_iptables_dataplane_asks_for_the_backend_once() -> None:
    """auto's choice is made once per run: the dataplane keeps the answer it got."""
    asked: list[str] = []

    def choose() -> ResolvedBackend:
        asked.append("auto")
        return "legacy"

    plane = IptablesDataplane(DataplaneOptions(enable_ipv6=True), backend=choose)
    first, second = plane.tables(), plane.tables()
    assert [t.binary for t in first + second] == ["iptables-legacy", "ip6tables-legacy"] * 2
    assert asked == ["auto"]


@pytest.mark.parametrize(
    ("family", "backend_name", "tool", "expected"),
    [
        ("ipv4", "nft", "", "iptables-nft"),
        ("ipv6", "nft", "", "ip6tables-nft"),
        ("ipv4", "legacy", "save", "iptables-legacy-save"),
        ("ipv6", "legacy", "restore", "ip6tables-legacy-restore"),
    ],
)
def test_iptables_binary_names(
    family: Family,
    backend_name: ResolvedBackend,
    tool: Literal["", "save", "restore"],
    expected: str,
) -> None:
    assert iptables_binary(family, backend_name, tool) == expected


def test_the_runner_uses_the_one_name_builder() -> None:
    table = Iptables("legacy", "ipv6")
    assert (table.binary, table.restore_binary) == ("ip6tables-legacy", "ip6tables-legacy-restore")


def test_system_probe_runs_the_binaries_it_names() -> None:
    ran: list[list[str]] = []

    def runner(
        argv: list[str], stdin: str | int | None = None, timeout: float | None = None
    ) -> Completed:
        ran.append(argv)
        return Completed(tuple(argv), 0, "-A X -j RETURN\n", "")

    probe = SystemProbe(runner=runner)
    assert probe.rule_count("legacy") == 2
    assert probe.has_chain("nft", "mangle", "KUBE-IPTABLES-HINT")
    assert ran == [
        ["iptables-legacy-save"],
        ["ip6tables-legacy-save"],
        ["iptables-nft", "-t", "mangle", "-S", "KUBE-IPTABLES-HINT"],
    ]


def test_legacy_table_names_are_read_by_one_reader(tmp_path: Path) -> None:
    """netlink's per-family reader and the probe's read the same /proc format alike."""
    names = tmp_path / "ip_tables_names"
    names.write_text("nat\n\nfilter\n")
    assert netlink.read_table_names(str(names)) == frozenset({"nat", "filter"})
    assert netlink.read_table_names(str(tmp_path / "missing")) == frozenset()
    assert SystemProbe(names_files=[str(names)]).legacy_tables() == frozenset({"nat", "filter"})
