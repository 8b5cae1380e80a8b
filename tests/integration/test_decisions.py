"""What the agent decides, checked twice: what each dataplane holds in the kernel (rule text
or nft table) and real packets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import pytest

from integration import flows
from integration.agent import assert_ok, run_agent, write_config
from integration.expected import RESERVED, RFC1918, expected_rules, jump_rule
from integration.packets import source_seen, source_seen_with_port, verdicts
from integration.planes import EACH_BACKEND, Plane
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


@EACH_BACKEND
def test_defaults_keep_rfc1918_and_link_local_and_masquerade_the_rest(
    plane: Plane, config_dir: Path
) -> None:
    assert_ok(plane.run_agent(config_dir))
    # IPv4 only: without --enable-ipv6 ip6tables is left alone (nftables: table ip, not inet)
    assert plane.installed() == plane.expected(RFC1918)
    assert verdicts(plane.topo, *ALL_V4) == {
        DEST_UPLINK: "kept",
        DEST_PRIVATE: "kept",
        DEST_DOC_A: "masq",
        DEST_DOC_B: "masq",
        DEST_LINK_LOCAL: "kept",
    }


def test_missing_config_dir_means_defaults_with_a_warning(plane: Plane, tmp_path: Path) -> None:
    proc = plane.run_agent(tmp_path / "does-not-exist")
    assert_ok(proc)
    assert "does-not-exist" in proc.stderr or "missing" in proc.stderr.lower(), proc.stderr
    assert "level=warn" in proc.stderr, proc.stderr
    assert plane.installed() == plane.expected(RFC1918)


def test_nomasq_all_reserved_ranges(plane: Plane, config_dir: Path) -> None:
    assert_ok(plane.run_agent(config_dir, "--nomasq-all-reserved-ranges"))
    assert plane.installed() == plane.expected(RESERVED)
    assert verdicts(plane.topo, *ALL_V4) == dict.fromkeys(ALL_V4, "kept")


def test_explicit_list_replaces_defaults_and_link_local_can_be_masqueraded(
    plane: Plane, config_dir: Path
) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs:\n  - 192.168.100.0/24\nmasqLinkLocal: true\n",
    )
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(["192.168.100.0/24"], keep_link_local=False)
    assert verdicts(plane.topo, *ALL_V4) == {
        DEST_UPLINK: "kept",
        DEST_PRIVATE: "masq",
        DEST_DOC_A: "masq",
        DEST_DOC_B: "masq",
        DEST_LINK_LOCAL: "masq",
    }


@EACH_BACKEND
def test_masquerade_exception_inside_a_non_masquerade_range(plane: Plane, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n"
        "masqueradeCIDRs: [172.20.0.0/16]\n",
    )
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(RFC1918, ["172.20.0.0/16"])
    assert verdicts(plane.topo, DEST_PRIVATE, DEST_UPLINK) == {
        DEST_PRIVATE: "masq",  # inside 172.16.0.0/12, yet masqueraded: the exception wins
        DEST_UPLINK: "kept",
    }


def test_custom_masq_chain(nft_topo: Topology, config_dir: Path) -> None:
    assert_ok(run_agent(nft_topo, config_dir, "--masq-chain", "MY-MASQ"))
    assert nft_topo.jumps_to("MY-MASQ") == [jump_rule("MY-MASQ")]
    assert nft_topo.rules("MY-MASQ") == expected_rules(RFC1918, chain="MY-MASQ")
    assert "IP-MASQ-AGENT" not in nft_topo.chains()
    assert verdicts(nft_topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}


def test_go_style_flags_and_random_fully_false(plane: Plane, config_dir: Path) -> None:
    """Plain MASQUERADE (nftables: ``masquerade``, not ``masquerade fully-random``)."""
    proc = plane.run_agent(config_dir, "-masq-chain=GO-STYLE", "--random-fully=false")
    assert_ok(proc)
    assert plane.installed("GO-STYLE") == plane.expected(
        RFC1918, chain="GO-STYLE", random_fully=False
    )
    assert verdicts(plane.topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}


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


@EACH_BACKEND
def test_ipv6_rules_and_packets(plane: Plane, config_dir: Path) -> None:
    """Both families (nftables: one ``inet`` table, no ``ip`` table)."""
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fd00:100::/64]\n",
    )
    assert_ok(plane.run_agent(config_dir, "--enable-ipv6"))
    assert plane.installed() == plane.expected([*RFC1918, "fd00:100::/64"], ipv6=True)
    assert verdicts(plane.topo, DEST_UPLINK6, DEST_DOC6, DEST_DOC_A, DEST_UPLINK) == {
        DEST_UPLINK6: "kept",
        DEST_DOC6: "masq",
        DEST_DOC_A: "masq",
        DEST_UPLINK: "kept",
    }


def test_ipv6_link_local_masqueraded_on_request(plane: Plane, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        '{"nonMasqueradeCIDRs": ["fd00:100::/64"], "masqLinkLocalIPv6": true}\n',
    )
    assert_ok(plane.run_agent(config_dir, "--enable-ipv6"))
    # IPv4 keeps its own link-local rule: masqLinkLocalIPv6 is per family
    assert plane.installed() == plane.expected(["fd00:100::/64"], ipv6=True, keep_link_local6=False)
    assert verdicts(plane.topo, DEST_UPLINK6, DEST_DOC6) == {
        DEST_UPLINK6: "kept",
        DEST_DOC6: "masq",
    }


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
    plane: Plane, config_dir: Path, proto: Literal["udp", "tcp"]
) -> None:
    assert_ok(plane.run_agent(config_dir, "--to-ports", "40000-40009"))
    for p in ("tcp", "udp", "sctp"):  # v1: one --to-ports rule per port-carrying protocol
        assert plane.masquerades_to(p, "40000-40009"), plane.installed()
    topo = plane.topo
    for _ in range(3):
        address, port = source_seen_with_port(topo, DEST_DOC_A, proto=proto)
        assert address == NODE_UPLINK
        assert 40000 <= port <= 40009, port
    # a kept destination keeps the pod's own address (its port is not rewritten to the range)
    assert source_seen(topo, DEST_UPLINK, proto=proto) == POD_IP


def test_to_ports_spreads_new_flows_over_every_range(plane: Plane, config_dir: Path) -> None:
    """With several --to-ports ranges each new flow is masqueraded into one of them, picked at
    random in proportion to its size: 976 and 1000 ports here, so about half of 200 flows each
    (the bound is 4.5 standard deviations of that binomial: a false alarm once in 10^5 runs)."""
    assert_ok(plane.run_agent(config_dir, "--to-ports=1024-1999,30000-30999"))
    count, share = 200, 976 / 1976
    seen = flows.burst(plane.topo, [DEST_DOC_A], count)[DEST_DOC_A]
    assert len(seen) == count
    assert {address for address, _ in seen} == {NODE_UPLINK}
    low = sum(1 for _, port in seen if 1024 <= port <= 1999)
    high = sum(1 for _, port in seen if 30000 <= port <= 30999)
    assert low + high == count, sorted(port for _, port in seen)
    assert abs(low - count * share) <= 4.5 * math.sqrt(count * share * (1 - share)), (low, high)


@EACH_BACKEND
def test_ipv6_masquerade_exception(plane: Plane, config_dir: Path) -> None:
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: ['fd00:100::/64', '2001:db8::/32']\n"
        "masqueradeCIDRs: ['fd00:100::2/128']\n",
    )
    assert_ok(plane.run_agent(config_dir, "--enable-ipv6"))
    assert plane.installed() == plane.expected(
        ["fd00:100::/64", "2001:db8::/32"], ["fd00:100::2/128"], ipv6=True
    )
    assert verdicts(plane.topo, DEST_UPLINK6, DEST_DOC6) == {
        DEST_UPLINK6: "masq",
        DEST_DOC6: "kept",
    }
