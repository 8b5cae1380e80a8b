"""The harness itself, checked with hand-written rules (no agent): if these fail, every
verdict of the agent tests is suspect."""

from __future__ import annotations

import pytest

from integration.expected import canonical, counted, expected_rules, jump_rule
from integration.packets import source_seen
from integration.topology import (
    DEST_DOC6,
    DEST_DOC_A,
    DEST_DOC_B,
    DEST_LINK_LOCAL,
    DEST_PRIVATE,
    DEST_UPLINK,
    DEST_UPLINK6,
    NODE_UPLINK,
    NODE_UPLINK6,
    POD_IP,
    POD_IP6,
    REPO_ROOT,
    Topology,
    run,
    topology,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_without_rules_dest_sees_the_pod(topo: Topology) -> None:
    for dest in (DEST_UPLINK, DEST_DOC_A, DEST_LINK_LOCAL):
        assert source_seen(topo, dest) == POD_IP
    assert source_seen(topo, DEST_DOC6) == POD_IP6
    assert source_seen(topo, DEST_PRIVATE, proto="tcp") == POD_IP


def test_hand_written_masquerade_is_seen_per_destination(topo: Topology) -> None:
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-d", DEST_DOC_A, "-j", "MASQUERADE")
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-d", DEST_DOC6, "-j", "MASQUERADE", family=6)
    assert source_seen(topo, DEST_DOC_A) == NODE_UPLINK
    assert source_seen(topo, DEST_DOC_B) == POD_IP
    assert source_seen(topo, DEST_DOC6) == NODE_UPLINK6
    assert source_seen(topo, DEST_UPLINK6) == POD_IP6
    # conntrack flush between probes: deleting the rule must change the next verdict
    topo.ipt("-t", "nat", "-D", "POSTROUTING", "-d", DEST_DOC_A, "-j", "MASQUERADE")
    assert source_seen(topo, DEST_DOC_A) == POD_IP


def test_snapshot_sees_counters_and_rule_changes(topo: Topology) -> None:
    topo.ipt("-t", "nat", "-N", "PROBE")
    topo.ipt("-t", "nat", "-A", "POSTROUTING", "-j", "PROBE")
    topo.ipt("-t", "nat", "-A", "PROBE", "-d", DEST_DOC_A, "-j", "RETURN")
    # nat chains see packets only where conntrack is on, which a MASQUERADE rule turns on
    # (as the agent's final rule does): with RETURN rules alone every counter stays zero.
    topo.ipt("-t", "nat", "-A", "PROBE", "-d", "198.18.0.0/15", "-j", "MASQUERADE")
    before = topo.snapshot()
    assert topo.snapshot() == before  # no clock lines: equal when nothing happened
    source_seen(topo, DEST_DOC_A)
    after_packet = topo.snapshot()
    assert after_packet != before
    assert counted(after_packet[0], "PROBE") == {
        f"-A PROBE -d {DEST_DOC_A}/32 -j RETURN": "[1:33]",
        "-A PROBE -d 198.18.0.0/15 -j MASQUERADE": "[0:0]",
    }
    assert topo.rules("PROBE")[0] == f"-A PROBE -d {DEST_DOC_A}/32 -j RETURN"
    assert topo.jumps_to("PROBE") == ["-A POSTROUTING -j PROBE"]
    assert "PROBE" in topo.chains()


def test_namespaces_are_deleted_even_when_the_body_fails() -> None:
    names: tuple[str, ...] = ()
    with pytest.raises(RuntimeError, match="boom"), topology("nft") as topo:
        names = (topo.pod, topo.node, topo.dest)
        raise RuntimeError("boom")
    listing = run(["ip", "netns", "list"]).stdout
    assert names and all(name not in listing for name in names)


def test_expected_rules_are_readmes_rule_block() -> None:
    """The expected text for README's example config (nonMasqueradeCIDRs 10.0.0.0/8,
    masqueradeCIDRs 10.240.0.0/16) is, line for line, the rule block README shows."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in readme.split("```") if b.lstrip("\n").startswith("-A POSTROUTING")]
    assert blocks, "README shows no rule block"
    shown = blocks[0].strip().splitlines()
    assert shown == [jump_rule(), *expected_rules(["10.0.0.0/8"], ["10.240.0.0/16"])]
    assert canonical(["192.168.0.0/16", "10.0.0.0/8", "10.0.0.0/8", "fd00::/8"]) == [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "fd00::/8",
    ]
