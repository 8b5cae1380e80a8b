"""Metrics names and labels (parsed back with prometheus_client's parser), and health."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fake_clock import FakeClock
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pyrsistent import pmap, pvector

from masq import __version__
from masq.core.addresses import Family, IPNetwork
from masq.core.config import MasqConfig
from masq.core.fragment import Fragment
from masq.core.iptables.model import (
    AppendRule,
    Chain,
    CreateChain,
    DeleteRule,
    DeleteRuleAt,
    InsertRule,
    Op,
    Rule,
    Ruleset,
    op_labels,
)
from masq.core.iptables.rules import desired_ruleset, jump_rule
from masq.core.iptables.traffic import traffic_of
from masq.core.merge import Merged, merge
from masq.core.names import POSTROUTING
from masq.core.options import DataplaneOptions
from masq.core.traffic import OTHER_CIDRS, Counters
from masq.shell.metrics import HEALTH_INTERVALS, TRAFFIC_FAMILIES, Metrics, capped

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(m: Metrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(m: Metrics) -> dict[str, tuple[str, set[str]]]:
    """Family name -> (type, label names over its samples)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        names = {k for s in family.samples for k in s.labels if k != "le"}
        out[family.name] = (family.type, names)
    return out


def value(m: Metrics, name: str, **labels: str) -> float:
    return samples(m)[(name, tuple(sorted(labels.items())))]


def rule(action: str, cidr: str | None, packets: int, nbytes: int, **kw: object) -> Rule:
    return Rule(
        action=action,  # type: ignore[arg-type]
        comment="c",
        destination=ipaddress.ip_network(cidr) if cidr else None,
        counters=Counters(packets, nbytes),
        **kw,  # type: ignore[arg-type]
    )


def observed(family: Family, *rules: Rule, chain: str = "IP-MASQ-AGENT") -> Ruleset:
    jump = jump_rule(chain)
    return Ruleset(
        family=family,
        chains=pmap(
            {
                POSTROUTING: Chain(
                    POSTROUTING,
                    pvector([replace(jump, counters=Counters(999, 99999))]),
                ),
                chain: Chain(chain, pvector(rules)),
            }
        ),
    )


def test_every_required_metric_with_its_type_and_labels() -> None:
    m = Metrics()
    m.traffic(traffic_of(observed("ipv4", rule("RETURN", "10.0.0.0/8", 1, 2))))
    m.rule_writes("ipv4", op_labels(CreateChain("X")))
    got = families(m)
    expected = {
        "ip_masq_agent_syncs": ("counter", {"result"}),
        "ip_masq_agent_sync_duration_seconds": ("histogram", set()),
        "ip_masq_agent_rule_writes": ("counter", {"family", "op"}),
        "ip_masq_agent_last_success_timestamp_seconds": ("gauge", set()),
        "ip_masq_agent_resync_interval_seconds": ("gauge", set()),
        "ip_masq_agent_config_fragments": ("gauge", set()),
        "ip_masq_agent_config_conflicts": ("gauge", set()),
        "ip_masq_agent_cidrs": ("gauge", {"family", "kind"}),
        "ip_masq_agent_config_egress_entries": ("gauge", {"key"}),
        "ip_masq_agent_build_info": ("gauge", {"version"}),
        "ip_masq_agent_packets": ("counter", {"family", "cidr", "action"}),
        "ip_masq_agent_bytes": ("counter", {"family", "cidr", "action"}),
    }
    for name, want in expected.items():
        assert got.get(name) == want, name
    names = {n for n, _ in samples(m)}
    for counter in ("syncs", "rule_writes", "packets", "bytes"):
        assert f"ip_masq_agent_{counter}_total" in names
    assert not any(n.endswith("_created") for n in names)
    assert value(m, "ip_masq_agent_build_info", version=__version__) == 1
    assert value(m, "ip_masq_agent_resync_interval_seconds") == 60.0


def test_sync_results_and_duration_histogram() -> None:
    m = Metrics(clock=FakeClock(), wall=lambda: 1_700_000_000.0)
    assert value(m, "ip_masq_agent_syncs_total", result="success") == 0
    assert value(m, "ip_masq_agent_syncs_total", result="failure") == 0
    m.sync_finished(True, 0.004)
    m.sync_finished(False, 0.2, "boom")
    m.sync_finished(True, 0.02)
    assert value(m, "ip_masq_agent_syncs_total", result="success") == 2
    assert value(m, "ip_masq_agent_syncs_total", result="failure") == 1
    assert value(m, "ip_masq_agent_sync_duration_seconds_count") == 3
    assert value(m, "ip_masq_agent_sync_duration_seconds_sum") == pytest.approx(0.224)
    assert value(m, "ip_masq_agent_sync_duration_seconds_bucket", le="0.005") == 1
    assert value(m, "ip_masq_agent_sync_duration_seconds_bucket", le="+Inf") == 3
    assert value(m, "ip_masq_agent_last_success_timestamp_seconds") == 1_700_000_000.0


def test_rule_writes_by_family_and_op() -> None:
    m = Metrics()
    r = rule("RETURN", "10.0.0.0/8", 0, 0)
    v4: list[Op] = [CreateChain("C"), AppendRule("C", r), AppendRule("C", r), InsertRule("C", 1, r)]
    v6: list[Op] = [DeleteRuleAt("C", 2), DeleteRule(POSTROUTING, r)]
    m.rule_writes("ipv4", [label for op in v4 for label in op_labels(op)])
    m.rule_writes("ipv6", [label for op in v6 for label in op_labels(op)])
    assert value(m, "ip_masq_agent_rule_writes_total", family="ipv4", op="create_chain") == 1
    assert value(m, "ip_masq_agent_rule_writes_total", family="ipv4", op="append") == 2
    assert value(m, "ip_masq_agent_rule_writes_total", family="ipv4", op="insert") == 1
    assert value(m, "ip_masq_agent_rule_writes_total", family="ipv6", op="delete") == 2


def test_config_gauges_follow_the_last_merge() -> None:
    m = Metrics()
    a = Fragment(
        "ip-masq-a",
        non_masquerade_cidrs=pvector([ipaddress.ip_network("10.0.0.0/8")]),
        masquerade_cidrs=pvector(
            [ipaddress.ip_network("10.240.0.0/16"), ipaddress.ip_network("fd00::/8")]
        ),
        masq_link_local=True,
        resync_interval=5.0,
    )
    b = Fragment("ip-masq-b", masq_link_local=False)
    merged = merge([a, b], enable_ipv6=True).unwrap()
    m.config_loaded(2, merged)
    assert value(m, "ip_masq_agent_config_fragments") == 2
    assert value(m, "ip_masq_agent_config_conflicts") == len(merged.conflicts) == 1
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="non_masquerade") == 1
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="masquerade") == 1
    assert value(m, "ip_masq_agent_cidrs", family="ipv6", kind="masquerade") == 1
    assert value(m, "ip_masq_agent_cidrs", family="ipv6", kind="non_masquerade") == 0
    assert m.resync_interval == 5.0  # the config's shorter interval drives health from now on
    assert value(m, "ip_masq_agent_resync_interval_seconds") == 5.0
    longer = Fragment("ip-masq-c", resync_interval=600.0)
    m.config_loaded(1, merge([longer]).unwrap())
    assert m.resync_interval == 60.0  # but never longer than the flag's
    assert value(m, "ip_masq_agent_resync_interval_seconds") == 60.0
    m.config_loaded(0, merge([]).unwrap())
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="non_masquerade") == 3  # RFC 1918
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="masquerade") == 0


class _Touched(list[IPNetwork]):
    """A list that counts how many of its items were looked at (by index or iteration)."""

    touched = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        self.touched += 1
        return super().__getitem__(i)

    def __iter__(self) -> Iterator[IPNetwork]:
        for net in super().__iter__():
            self.touched += 1
            yield net


def test_cidr_gauges_cost_a_few_lookups_not_a_walk_of_every_cidr() -> None:
    """A config change at 100,000 CIDRs costs the gauges a bisect per family and list
    (the lists are in canonical order, IPv4 first), not a look at each CIDR."""
    v4 = [ipaddress.ip_network((i << 8, 24)) for i in range(1, 5001)]
    v6 = [ipaddress.ip_network((i << 64, 64)) for i in range(1, 1001)]
    non, masq = _Touched(v4 + v6), _Touched(v6[:7])
    config = MasqConfig(non_masquerade_cidrs=non, masquerade_cidrs=masq)  # type: ignore[arg-type]
    m = Metrics()
    m.config_loaded(1, Merged(config, pvector()))
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="non_masquerade") == 5000
    assert value(m, "ip_masq_agent_cidrs", family="ipv6", kind="non_masquerade") == 1000
    assert value(m, "ip_masq_agent_cidrs", family="ipv4", kind="masquerade") == 0
    assert value(m, "ip_masq_agent_cidrs", family="ipv6", kind="masquerade") == 7
    assert non.touched + masq.touched < 100


def test_egress_gauge_counts_each_new_key() -> None:
    """ip_masq_agent_config_egress_entries: every key's series exists at 0 from the start;
    after a merge, the entries of outputInterfaces and sourceCIDRs, and 1 for each address
    set; back to 0 when a later config drops them."""
    m = Metrics()
    keys = ("outputInterfaces", "sourceCIDRs", "outputAddress", "outputAddressIPv6")
    assert [value(m, "ip_masq_agent_config_egress_entries", key=k) for k in keys] == [0] * 4
    egress = Fragment(
        "ip-masq-egress",
        output_interfaces=pvector(["eth1", "wl*"]),
        source_cidrs=pvector(
            [ipaddress.ip_network("10.8.0.0/16"), ipaddress.ip_network("10.9.0.0/16")]
        ),
        output_address=ipaddress.IPv4Address("192.0.2.10"),
    )
    m.config_loaded(
        1,
        merge(
            [
                egress,
                Fragment("ip-masq-b", source_cidrs=pvector([ipaddress.ip_network("10.10.0.0/16")])),
            ]
        ).unwrap(),
    )
    got = [value(m, "ip_masq_agent_config_egress_entries", key=k) for k in keys]
    assert got == [2, 3, 1, 0]
    m.config_loaded(0, merge([]).unwrap())
    assert [value(m, "ip_masq_agent_config_egress_entries", key=k) for k in keys] == [0] * 4


def test_traffic_counters_are_the_kernels_not_accumulated() -> None:
    m = Metrics()
    m.traffic(
        traffic_of(
            observed(
                "ipv4",
                rule("MASQUERADE", "10.240.0.0/16", 5, 500),
                rule("RETURN", "10.0.0.0/8", 7, 700),
                rule("MASQUERADE", None, 11, 1100),
            )
        ),
    )
    m.traffic(
        traffic_of(
            observed("ipv6", rule("RETURN", "fe80::/10", 1, 80), rule("MASQUERADE", None, 2, 160))
        ),
    )
    pk = "ip_masq_agent_packets_total"
    assert value(m, pk, family="ipv4", cidr="10.240.0.0/16", action="MASQUERADE") == 5
    assert value(m, pk, family="ipv4", cidr="10.0.0.0/8", action="RETURN") == 7
    assert value(m, pk, family="ipv4", cidr="0.0.0.0/0", action="MASQUERADE") == 11
    assert (
        value(m, "ip_masq_agent_bytes_total", family="ipv4", cidr="0.0.0.0/0", action="MASQUERADE")
        == 1100
    )
    assert value(m, pk, family="ipv6", cidr="::/0", action="MASQUERADE") == 2
    # The next listing replaces the values (a local increment would read 7 + 9 = 16).
    m.traffic(traffic_of(observed("ipv4", rule("RETURN", "10.0.0.0/8", 9, 900))))
    assert value(m, pk, family="ipv4", cidr="10.0.0.0/8", action="RETURN") == 9
    gone = (
        "ip_masq_agent_packets_total",
        (("action", "MASQUERADE"), ("cidr", "0.0.0.0/0"), ("family", "ipv4")),
    )
    assert gone not in samples(m)  # a rule that left the chain leaves the metrics
    # The POSTROUTING jump is not a per-CIDR rule.
    assert all(v != 999 for (n, _), v in samples(m).items() if n == pk)


def test_rules_sharing_labels_are_summed_and_uncounted_rules_skipped() -> None:
    m = Metrics()
    to_ports = [
        rule("MASQUERADE", None, 3, 30, protocol="tcp", to_ports="1024-2047"),
        rule("MASQUERADE", None, 4, 40, protocol="udp", to_ports="1024-2047"),
        rule("MASQUERADE", None, 5, 50),
    ]
    bare = Rule(action="RETURN", comment="c", destination=ipaddress.ip_network("10.0.0.0/8"))
    m.traffic(traffic_of(observed("ipv4", bare, *to_ports)))
    pk = "ip_masq_agent_packets_total"
    assert value(m, pk, family="ipv4", cidr="0.0.0.0/0", action="MASQUERADE") == 12
    assert not any(dict(lbl).get("cidr") == "10.0.0.0/8" for n, lbl in samples(m) if n == pk)


def test_snat_copies_per_selection_count_as_their_cidr_masquerade() -> None:
    """With egress selection and outputAddress, a masquerading rule is an SNAT written once
    per (source, interface): their counters sum under the rule's CIDR and MASQUERADE."""
    m = Metrics()
    snat = ipaddress.IPv4Address("192.0.2.10")
    copies = [
        rule("SNAT", "10.240.0.0/16", 1, 10, to_source=snat, out_interface="eth1"),
        rule("SNAT", "10.240.0.0/16", 2, 20, to_source=snat, out_interface="wl*"),
        rule("SNAT", None, 4, 40, to_source=snat, source=ipaddress.ip_network("10.8.0.0/16")),
    ]
    m.traffic(traffic_of(observed("ipv4", *copies)))
    pk = "ip_masq_agent_packets_total"
    assert value(m, pk, family="ipv4", cidr="10.240.0.0/16", action="MASQUERADE") == 3
    assert value(m, pk, family="ipv4", cidr="0.0.0.0/0", action="MASQUERADE") == 4


def test_desired_ruleset_rules_map_to_labels() -> None:
    """Every rule the agent writes gets a distinct label set (catch-all spelled 0.0.0.0/0)."""
    config = merge([]).unwrap().config
    desired = desired_ruleset(config, "ipv4", DataplaneOptions())
    counted = Ruleset(
        "ipv4",
        pmap(
            {
                name: Chain(
                    name,
                    pvector(
                        replace(r, counters=Counters(i, i * 10))
                        for i, r in enumerate(chain.rules, 1)
                    ),
                )
                for name, chain in desired.chains.items()
            }
        ),
    )
    m = Metrics()
    m.traffic(traffic_of(counted))
    got = {
        (dict(lbl)["cidr"], dict(lbl)["action"])
        for n, lbl in samples(m)
        if n == "ip_masq_agent_packets_total"
    }
    assert got == {
        ("169.254.0.0/16", "RETURN"),
        ("10.0.0.0/8", "RETURN"),
        ("172.16.0.0/12", "RETURN"),
        ("192.168.0.0/16", "RETURN"),
        ("0.0.0.0/0", "MASQUERADE"),
    }


def test_hooks_never_raise() -> None:
    m = Metrics()
    m.config_loaded(1, None)  # type: ignore[arg-type]
    m.rule_writes("ipv4", None)  # type: ignore[arg-type]
    m.traffic(None)  # type: ignore[arg-type]
    m.sync_finished(True, "slow")  # type: ignore[arg-type]
    m.loop_alive()
    assert m.exposition().startswith(b"# HELP")


# --- health ---------------------------------------------------------------------


def test_health_transitions() -> None:
    clock = FakeClock()
    m = Metrics(resync_interval=10.0, clock=clock)
    limit = HEALTH_INTERVALS * 10.0
    # Starting: alive (grace), not ready.
    assert m.healthz().ok
    assert not m.readyz().ok
    assert "no successful sync yet" in m.readyz().reason
    # A first failure: still within the grace, and both probes say why.
    clock.now += 1
    m.sync_finished(
        False, 0.1, "iptables-restore failed: Another app is currently holding the xtables lock"
    )
    assert m.healthz().ok
    assert "xtables lock" in m.healthz().reason
    assert not m.readyz().ok
    assert "xtables lock" in m.readyz().reason
    # Success: healthy and ready.
    m.sync_finished(True, 0.1)
    assert m.healthz() == m.readyz()
    assert m.healthz().ok and m.healthz().reason == "ok"
    # Failures for longer than three intervals: 503 with the last error as the reason.
    for _ in range(4):
        clock.now += limit / 4 + 0.01
        m.sync_finished(False, 0.1, "restore exited 4\nsecond line")
    health = m.healthz()
    assert not health.ok
    assert "restore exited 4 / second line" in health.reason
    assert "no successful sync for" in health.reason
    assert m.readyz().ok  # ready stays ready: the rules were put in place once
    # Recovery.
    m.sync_finished(True, 0.1)
    assert m.healthz().ok and m.healthz().reason == "ok"


def test_health_boundary_is_three_intervals() -> None:
    clock = FakeClock()
    m = Metrics(resync_interval=2.0, clock=clock)
    m.sync_finished(True, 0.01)
    clock.now += 3 * 2.0
    m.loop_alive()
    assert m.healthz().ok
    clock.now += 0.001
    assert not m.healthz().ok


def test_a_stalled_loop_is_unhealthy_even_after_success() -> None:
    clock = FakeClock()
    m = Metrics(resync_interval=1.0, clock=clock)
    m.sync_finished(True, 0.01)
    clock.now += 3.5
    health = m.healthz()
    assert not health.ok
    assert "stalled" in health.reason


def test_no_success_since_start_turns_unhealthy_after_the_grace() -> None:
    clock = FakeClock()
    m = Metrics(resync_interval=1.0, clock=clock)
    clock.now += 2.5
    m.loop_alive()
    assert m.healthz().ok
    clock.now += 1.0
    m.loop_alive()
    assert not m.healthz().ok
    assert "since start" in m.healthz().reason


def test_rule_write_series_exist_at_zero_for_each_dataplanes_ops() -> None:
    """Series present before the first write, so increase() sees the first one."""
    from masq.core.iptables.model import OP_LABELS as IPTABLES_OPS
    from masq.core.nftables.model import OP_LABELS as NFT_OPS

    for labels in (IPTABLES_OPS, NFT_OPS):
        m = Metrics(write_ops=labels.values())
        for family in ("ipv4", "ipv6"):
            for op in labels.values():
                assert value(m, "ip_masq_agent_rule_writes_total", family=family, op=op) == 0
    key = ("ip_masq_agent_rule_writes_total", (("family", "ipv4"), ("op", "append")))
    assert key not in samples(Metrics())  # no ops named, no series: the zeros come from write_ops


def test_series_are_capped_once_per_listing_not_per_scrape(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capping sorts every CIDR; scrapes between two listings reuse it and still show the
    listing's values, and a new listing is capped anew."""
    from masq.shell import metrics as metrics_module

    calls: list[int] = []
    real = metrics_module.capped

    def counting(rows: object, max_series: int) -> object:
        calls.append(1)
        return real(rows, max_series)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics_module, "capped", counting)
    m = Metrics()
    m.traffic(traffic_of(observed("ipv4", rule("RETURN", "10.0.0.0/8", 1, 2))))
    first = [samples(m) for _ in range(3)]
    assert len(calls) == 1
    assert first[0] == first[2]
    m.traffic(traffic_of(observed("ipv4", rule("RETURN", "10.0.0.0/8", 5, 9))))
    after = samples(m)
    assert len(calls) == 2
    key = (
        "ip_masq_agent_packets_total",
        (("action", "RETURN"), ("cidr", "10.0.0.0/8"), ("family", "ipv4")),
    )
    assert first[0].get(key) == 1 and after.get(key) == 5


def test_the_registry_exposes_the_capped_traffic_as_counters() -> None:
    """The per-CIDR counters are two counter families on the agent's registry (rendered by
    prometheus_client): exactly the capped rows, label values that need escaping and
    counts past 2**53 included."""
    m = Metrics(max_cidr_series=1)
    kept, past_the_cap = rule("RETURN", "10.0.0.0/8", 1, 2), rule("RETURN", "192.168.0.0/16", 3, 4)
    m.traffic(traffic_of(observed("ipv4", kept, past_the_cap, rule("MASQUERADE", None, 5, 6))))
    rows = capped(m._traffic_snapshot(), 1)
    assert [t.cidr for t in rows] == ["0.0.0.0/0", OTHER_CIDRS]
    assert m.exposition() == generate_latest(m.registry)
    exposed = {
        (s.name, s.labels["cidr"], s.labels["action"]): s.value
        for family in text_string_to_metric_families(m.exposition().decode())
        if family.name in (f"ip_masq_agent_{what}" for what, _ in TRAFFIC_FAMILIES)
        for s in family.samples
    }
    assert exposed == {
        (f"ip_masq_agent_{what}_total", t.cidr, t.action): float(getattr(t, what))
        for t in rows
        for what, _ in TRAFFIC_FAMILIES
    }
