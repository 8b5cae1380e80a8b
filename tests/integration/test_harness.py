"""The harness itself, checked with hand-written rules (no agent): if these fail, every
verdict of the agent tests is suspect."""

from __future__ import annotations

import pytest

from integration import netns
from integration.netns import Topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_without_rules_dest_sees_the_pod(topo: Topology) -> None:
    for dest in (netns.DEST_UPLINK, netns.DEST_DOC_A, netns.DEST_LINK_LOCAL):
        assert topo.source_seen(dest) == netns.POD_IP
    assert topo.source_seen(netns.DEST_DOC6) == netns.POD_IP6
    assert topo.source_seen(netns.DEST_PRIVATE, proto="tcp") == netns.POD_IP


def test_hand_written_masquerade_is_seen_per_destination(topo: Topology) -> None:
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-d", netns.DEST_DOC_A, "-j", "MASQUERADE")
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-d", netns.DEST_DOC6, "-j", "MASQUERADE", family=6)
    assert topo.source_seen(netns.DEST_DOC_A) == netns.NODE_UPLINK
    assert topo.source_seen(netns.DEST_DOC_B) == netns.POD_IP
    assert topo.source_seen(netns.DEST_DOC6) == netns.NODE_UPLINK6
    assert topo.source_seen(netns.DEST_UPLINK6) == netns.POD_IP6
    # conntrack flush between probes: deleting the rule must change the next verdict
    topo.ipt("-t", "nat", "-D", "POSTROUTING", "-d", netns.DEST_DOC_A, "-j", "MASQUERADE")
    assert topo.source_seen(netns.DEST_DOC_A) == netns.POD_IP


def test_snapshot_sees_counters_and_rule_changes(topo: Topology) -> None:
    topo.ipt("-t", "nat", "-N", "PROBE")
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-j", "PROBE")
    topo.ipt("-t", "nat", "-A", "PROBE", "-d", netns.DEST_DOC_A, "-j", "RETURN")
    # nat chains see packets only where conntrack is on, which a MASQUERADE rule turns on
    # (as the agent's final rule does): with RETURN rules alone every counter stays zero.
    topo.ipt("-t", "nat", "-A", "PROBE", "-d", "198.18.0.0/15", "-j", "MASQUERADE")
    before = topo.snapshot()
    assert topo.snapshot() == before  # no clock lines: equal when nothing happened
    topo.source_seen(netns.DEST_DOC_A)
    after_packet = topo.snapshot()
    assert after_packet != before
    assert netns.counted(after_packet[0], "PROBE") == {
        f"-A PROBE -d {netns.DEST_DOC_A}/32 -j RETURN": "[1:33]",
        "-A PROBE -d 198.18.0.0/15 -j MASQUERADE": "[0:0]",
    }
    assert topo.rules("PROBE")[0] == f"-A PROBE -d {netns.DEST_DOC_A}/32 -j RETURN"
    assert topo.jumps_to("PROBE") == ["-A POSTROUTING -j PROBE"]
    assert "PROBE" in topo.chains()


def test_namespaces_are_deleted_even_when_the_body_fails() -> None:
    names: tuple[str, ...] = ()
    with pytest.raises(RuntimeError, match="boom"), netns.topology("nft") as topo:
        names = (topo.pod, topo.node, topo.dest)
        raise RuntimeError("boom")
    listing = netns.run(["ip", "netns", "list"]).stdout
    assert names and all(name not in listing for name in names)


def test_expected_rules_follow_the_design_block() -> None:
    lines = netns.expected_rules(["10.0.0.0/8"], ["10.240.0.0/16"])
    assert lines == [
        '-A IP-MASQ-AGENT -d 10.240.0.0/16 -m comment --comment "ip-masq-agent: destination is'
        ' in masqueradeCIDRs" -j MASQUERADE --random-fully',
        '-A IP-MASQ-AGENT -d 169.254.0.0/16 -m comment --comment "ip-masq-agent: local traffic'
        ' is not subject to MASQUERADE" -j RETURN',
        '-A IP-MASQ-AGENT -d 10.0.0.0/8 -m comment --comment "ip-masq-agent: local traffic is'
        ' not subject to MASQUERADE" -j RETURN',
        '-A IP-MASQ-AGENT -m comment --comment "ip-masq-agent: outbound traffic is subject to'
        ' MASQUERADE (must be last in chain)" -j MASQUERADE --random-fully',
    ]
    assert netns.canonical(["192.168.0.0/16", "10.0.0.0/8", "10.0.0.0/8", "fd00::/8"]) == [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "fd00::/8",
    ]
