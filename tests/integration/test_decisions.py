"""What the agent decides, checked twice: the rule text in the kernel and real packets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from integration.agent import assert_ok, run_agent, write_config
from integration.expected import RESERVED, RFC1918, expected_rules, jump_rule
from integration.packets import source_seen, source_seen_with_port, verdicts
from integration.topology import (
    BACKENDS,
    DEST_DOC6,
    DEST_DOC_A,
    DEST_DOC_B,
    DEST_LINK_LOCAL,
    DEST_PRIVATE,
    DEST_UPLINK,
    DEST_UPLINK6,
    NODE_UPLINK,
    POD_IP,
    Backend,
    Topology,
    run,
    save_binary,
    topology,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ALL_V4 = (DEST_UPLINK, DEST_PRIVATE, DEST_DOC_A, DEST_DOC_B, DEST_LINK_LOCAL)


def test_defaults_keep_rfc1918_and_link_local_and_masquerade_the_rest(
    topo: Topology, config_dir: Path
) -> None:
    assert_ok(run_agent(topo, config_dir))
    assert topo.jumps_to() == [jump_rule()]
    assert topo.rules() == expected_rules(RFC1918)
    assert verdicts(topo, *ALL_V4) == {
        DEST_UPLINK: "kept",
        DEST_PRIVATE: "kept",
        DEST_DOC_A: "masq",
        DEST_DOC_B: "masq",
        DEST_LINK_LOCAL: "kept",
    }
    # without --enable-ipv6 the agent leaves ip6tables alone
    assert "IP-MASQ-AGENT" not in topo.save(family=6)


def test_missing_config_dir_means_defaults_with_a_warning(
    nft_topo: Topology, tmp_path: Path
) -> None:
    proc = run_agent(nft_topo, tmp_path / "does-not-exist")
    assert_ok(proc)
    assert "does-not-exist" in proc.stderr or "missing" in proc.stderr.lower(), proc.stderr
    assert "level=warn" in proc.stderr, proc.stderr
    assert nft_topo.rules() == expected_rules(RFC1918)


def test_nomasq_all_reserved_ranges(nft_topo: Topology, config_dir: Path) -> None:
    assert_ok(run_agent(nft_topo, config_dir, "--nomasq-all-reserved-ranges"))
    assert nft_topo.rules() == expected_rules(RESERVED)
    assert verdicts(nft_topo, *ALL_V4) == dict.fromkeys(ALL_V4, "kept")


def test_explicit_list_replaces_defaults_and_link_local_can_be_masqueraded(
    nft_topo: Topology, config_dir: Path
) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs:\n  - 192.168.100.0/24\nmasqLinkLocal: true\n",
    )
    assert_ok(run_agent(nft_topo, config_dir))
    assert nft_topo.rules() == expected_rules(["192.168.100.0/24"], keep_link_local=False)
    assert verdicts(nft_topo, *ALL_V4) == {
        DEST_UPLINK: "kept",
        DEST_PRIVATE: "masq",
        DEST_DOC_A: "masq",
        DEST_DOC_B: "masq",
        DEST_LINK_LOCAL: "masq",
    }


def test_masquerade_exception_inside_a_non_masquerade_range(
    topo: Topology, config_dir: Path
) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n"
        "masqueradeCIDRs: [172.20.0.0/16]\n",
    )
    assert_ok(run_agent(topo, config_dir))
    assert topo.rules() == expected_rules(RFC1918, ["172.20.0.0/16"])
    assert verdicts(topo, DEST_PRIVATE, DEST_UPLINK) == {
        DEST_PRIVATE: "masq",  # inside 172.16.0.0/12, yet masqueraded: the exception wins
        DEST_UPLINK: "kept",
    }


def test_custom_masq_chain(nft_topo: Topology, config_dir: Path) -> None:
    assert_ok(run_agent(nft_topo, config_dir, "--masq-chain", "MY-MASQ"))
    assert nft_topo.jumps_to("MY-MASQ") == [jump_rule("MY-MASQ")]
    assert nft_topo.rules("MY-MASQ") == expected_rules(RFC1918, chain="MY-MASQ")
    assert "IP-MASQ-AGENT" not in nft_topo.chains()
    assert verdicts(nft_topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}


def test_go_style_flags_and_random_fully_false(nft_topo: Topology, config_dir: Path) -> None:
    proc = run_agent(nft_topo, config_dir, "-masq-chain=GO-STYLE", "--random-fully=false")
    assert_ok(proc)
    assert nft_topo.rules("GO-STYLE") == expected_rules(
        RFC1918, chain="GO-STYLE", random_fully=False
    )
    assert verdicts(nft_topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}


@pytest.mark.parametrize(
    "flags",
    [
        ("--no-such-flag",),
        ("--masq-chain", "has space"),
        ("--masq-chain", "X" * 40),  # iptables chain names are at most 28 characters
        ("--resync-interval", "soon"),
    ],
    ids=["unknown-flag", "chain-with-space", "chain-too-long", "bad-interval"],
)
def test_usage_errors_exit_2_and_change_nothing(
    nft_topo: Topology, config_dir: Path, flags: tuple[str, ...]
) -> None:
    before = nft_topo.snapshot()
    proc = run_agent(nft_topo, config_dir, *flags)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert nft_topo.snapshot() == before


def test_ipv6_rules_and_packets(topo: Topology, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fd00:100::/64]\n",
    )
    assert_ok(run_agent(topo, config_dir, "--enable-ipv6"))
    assert topo.jumps_to(family=6) == [jump_rule()]
    assert topo.rules(family=6) == expected_rules(["fd00:100::/64"], family=6)
    assert topo.rules() == expected_rules(RFC1918)
    assert verdicts(topo, DEST_UPLINK6, DEST_DOC6, DEST_DOC_A, DEST_UPLINK) == {
        DEST_UPLINK6: "kept",
        DEST_DOC6: "masq",
        DEST_DOC_A: "masq",
        DEST_UPLINK: "kept",
    }


def test_ipv6_link_local_masqueraded_on_request(nft_topo: Topology, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        '{"nonMasqueradeCIDRs": ["fd00:100::/64"], "masqLinkLocalIPv6": true}\n',
    )
    assert_ok(run_agent(nft_topo, config_dir, "--enable-ipv6"))
    assert nft_topo.rules(family=6) == expected_rules(
        ["fd00:100::/64"], family=6, keep_link_local=False
    )
    # IPv4 kept its own link-local rule: masqLinkLocalIPv6 is per family
    assert nft_topo.rules() == expected_rules([])
    assert verdicts(nft_topo, DEST_UPLINK6, DEST_DOC6) == {DEST_UPLINK6: "kept", DEST_DOC6: "masq"}


@pytest.mark.parametrize("holder", BACKENDS)
def test_auto_backend_follows_the_backend_that_holds_rules(
    holder: Backend, config_dir: Path
) -> None:
    """kube-proxy's backend already holds nat rules: auto must write there and only there."""
    other: Backend = "legacy" if holder == "nft" else "nft"
    with topology(holder) as topo:
        topo.ipt("-t", "nat", "-N", "KUBE-POSTROUTING")
        topo.ipt("-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING")
        assert_ok(run_agent(topo, config_dir, "--iptables-backend=auto"))
        assert topo.rules() == expected_rules(RFC1918)
        other_save = run(topo.in_ns(topo.node, [save_binary(other, 4), "-t", "nat"])).stdout
        assert "IP-MASQ-AGENT" not in other_save
        assert verdicts(topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_to_ports_limits_the_masqueraded_source_port(
    nft_topo: Topology, config_dir: Path, proto: Literal["udp", "tcp"]
) -> None:
    assert_ok(run_agent(nft_topo, config_dir, "--to-ports", "40000-40009"))
    chain = "\n".join(nft_topo.rules())
    for p in ("tcp", "udp", "sctp"):  # v1: one --to-ports rule per port-carrying protocol
        assert f"-p {p}" in chain and "--to-ports 40000-40009" in chain, chain
    for _ in range(3):
        address, port = source_seen_with_port(nft_topo, DEST_DOC_A, proto=proto)
        assert address == NODE_UPLINK
        assert 40000 <= port <= 40009, port
    # a kept destination keeps the pod's own address (its port is not rewritten to the range)
    assert source_seen(nft_topo, DEST_UPLINK, proto=proto) == POD_IP


def test_ipv6_masquerade_exception(topo: Topology, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: ['fd00:100::/64', '2001:db8::/32']\n"
        "masqueradeCIDRs: ['fd00:100::2/128']\n",
    )
    assert_ok(run_agent(topo, config_dir, "--enable-ipv6"))
    assert topo.rules(family=6) == expected_rules(
        ["fd00:100::/64", "2001:db8::/32"], ["fd00:100::2/128"], family=6
    )
    assert verdicts(topo, DEST_UPLINK6, DEST_DOC6) == {DEST_UPLINK6: "masq", DEST_DOC6: "kept"}
