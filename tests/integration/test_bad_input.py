"""Every bad-input class: exit 1, one error line naming the file, no traceback, and the
kernel's tables byte-identical to before (no partial write ever happens)."""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.agent import assert_config_error, assert_ok, run_agent, write_config
from integration.expected import expected_rules
from integration.packets import verdicts
from integration.planes import Plane, kernel_snapshot
from integration.topology import DEST_DOC_A, DEST_UPLINK, Topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

GOOD = "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n"
TOO_MANY = "nonMasqueradeCIDRs:\n" + "".join(f"  - 10.{i}.0.0/16\n" for i in range(65))
OVER_ONE_MIB = GOOD + "# " + "x" * (1 << 20) + "\n"

BAD: dict[str, str | bytes] = {
    "invalid-yaml": "nonMasqueradeCIDRs: [10.0.0.0/8\n",
    "invalid-json": '{"nonMasqueradeCIDRs": ["10.0.0.0/8"]',
    "not-a-mapping": "- 10.0.0.0/8\n",
    "unknown-key": "nonMasqueradeCIDR:\n  - 10.0.0.0/8\n",
    "wrong-type-list": "nonMasqueradeCIDRs: 42\n",
    "wrong-type-bool": "masqLinkLocal: [true]\n",
    "empty-entry": 'nonMasqueradeCIDRs:\n  - ""\n',
    "null-entry": "nonMasqueradeCIDRs:\n  -\n",
    "unparsable-cidr": "nonMasqueradeCIDRs: [10.0.0.0/33]\n",
    "misaligned-cidr": "nonMasqueradeCIDRs: [10.0.0.1/8]\n",
    "iptables-words": 'nonMasqueradeCIDRs: ["10.0.0.0/8 -j ACCEPT"]\n',
    "ipv6-without-flag": "nonMasqueradeCIDRs: [fd00:100::/64]\n",
    "over-file-cidr-limit": "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n",  # noqa: E501
    "over-default-cidr-limit": TOO_MANY,
    "bad-resync-interval": "resyncInterval: soon\n",
    "over-1-mib": OVER_ONE_MIB,
    "not-utf-8": b"nonMasqueradeCIDRs:\n  - 10.0.0.0/8  # caf\xe9\n",
    # egress selection: every key's invalid values
    "interfaces-not-a-list": "outputInterfaces: eth0\n",
    "interface-empty": 'outputInterfaces: [""]\n',
    "interface-too-long": "outputInterfaces: [abcdefghijklmnop]\n",
    "interface-slash": "outputInterfaces: [eth/0]\n",
    "interface-colon": "outputInterfaces: ['eth0:1']\n",
    "interface-space": "outputInterfaces: ['eth 0']\n",
    "interface-dot": "outputInterfaces: ['..']\n",
    "interface-wildcard-inside": "outputInterfaces: ['e*th']\n",
    "interface-iptables-plus": "outputInterfaces: [eth+]\n",
    "interface-lone-wildcard": "outputInterfaces: ['*']\n",
    "source-misaligned": "sourceCIDRs: [10.244.1.2/16]\n",
    "source-not-a-cidr": "sourceCIDRs: ['10.244.0.0/16 -j ACCEPT']\n",
    "source-ipv6-without-flag": "sourceCIDRs: ['fd00:244::/64']\n",
    "sources-over-cidr-limit": "cidrLimit: 2\nnonMasqueradeCIDRs: [10.0.0.0/8]\nsourceCIDRs: [10.244.0.0/16, 10.245.0.0/16]\n",  # noqa: E501
    "address-network": "outputAddress: 192.168.100.0/24\n",
    "address-wrong-family": "outputAddress: 'fd00:100::1'\n",
    "address-zero": "outputAddress: 0.0.0.0\n",
    "address-multicast": "outputAddress: 224.0.0.1\n",
    "address-broadcast": "outputAddress: 255.255.255.255\n",
    "address-not-a-string": "outputAddress: [192.168.100.1]\n",
    "address6-wrong-family": "outputAddressIPv6: 192.168.100.1\n",
    "address6-network": "outputAddressIPv6: 'fd00:100::/64'\n",
    "address6-multicast": "outputAddressIPv6: 'ff02::1'\n",
    "address6-without-flag": "outputAddressIPv6: 'fd00:100::1'\n",
}


# Every class on the iptables dataplane; on nftables, one of each way a file can be wrong
# (syntax, schema, a value, the families, the limits, the bytes): the path is the same.
NFTABLES_KINDS = (
    "invalid-yaml",
    "unknown-key",
    "misaligned-cidr",
    "ipv6-without-flag",
    "over-default-cidr-limit",
    "not-utf-8",
    "interface-wildcard-inside",
    "source-misaligned",
    "sources-over-cidr-limit",
    "address-network",
    "address6-without-flag",
)


@pytest.mark.parametrize(
    ("plane", "kind"),
    [("iptables-nft", kind) for kind in sorted(BAD)]
    + [("nftables", kind) for kind in NFTABLES_KINDS],
    indirect=["plane"],
)
def test_bad_file_exits_1_and_leaves_the_kernel_alone(
    plane: Plane, config_dir: Path, kind: str
) -> None:
    write_config(config_dir, "ip-masq-agent", GOOD)
    assert_ok(plane.run_agent(config_dir))
    before = kernel_snapshot(plane.topo)  # nftables: `nft list ruleset` byte for byte
    write_config(config_dir, "ip-masq-broken", BAD[kind])
    assert_config_error(plane.run_agent(config_dir), "ip-masq-broken")
    assert kernel_snapshot(plane.topo) == before


@pytest.mark.parametrize("kind", ["misaligned-cidr", "not-utf-8", "iptables-words"])
def test_bad_file_on_legacy_and_after_traffic(config_dir: Path, kind: str, topo: Topology) -> None:
    write_config(config_dir, "ip-masq-agent", GOOD)
    assert_ok(run_agent(topo, config_dir))
    assert verdicts(topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}
    before = topo.snapshot()  # counters are non-zero now: any rewrite would show
    write_config(config_dir, "ip-masq-broken", BAD[kind])
    assert_config_error(run_agent(topo, config_dir), "ip-masq-broken")
    assert topo.snapshot() == before


def test_bad_file_on_a_clean_node_writes_nothing(plane: Plane, config_dir: Path) -> None:
    empty = kernel_snapshot(plane.topo)
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    assert_config_error(plane.run_agent(config_dir), "ip-masq-agent")
    assert kernel_snapshot(plane.topo) == empty


def test_merged_cidr_limit(nft_topo: Topology, config_dir: Path) -> None:
    """Each file within the limit, the union over it: the error names the limit's source."""
    write_config(config_dir, "ip-masq-a", "cidrLimit: 3\nnonMasqueradeCIDRs: [10.1.0.0/16, 10.2.0.0/16]\n")  # fmt: skip # noqa: E501
    write_config(config_dir, "ip-masq-b", "nonMasqueradeCIDRs: [10.3.0.0/16, 10.4.0.0/16]\n")
    proc = run_agent(nft_topo, config_dir)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "IP-MASQ-AGENT" not in nft_topo.save()
    write_config(config_dir, "ip-masq-b", "nonMasqueradeCIDRs: [10.3.0.0/16]\n")
    assert_ok(run_agent(nft_topo, config_dir))
    assert nft_topo.rules() == expected_rules(["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"])


@pytest.mark.parametrize(
    "content",
    [
        "nonMasqueradeCIDRs: ['fd00:100::1/64']\n",  # misaligned
        "nonMasqueradeCIDRs: ['fd00:100::/129']\n",
        "masqueradeCIDRs: ['fd00::/8 -j ACCEPT']\n",
    ],
    ids=["misaligned-v6", "prefix-too-long-v6", "iptables-words-v6"],
)
def test_bad_ipv6_with_enable_ipv6(nft_topo: Topology, config_dir: Path, content: str) -> None:
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 'fd00:100::/64']\n")
    assert_ok(run_agent(nft_topo, config_dir, "--enable-ipv6"))
    before = nft_topo.snapshot()
    write_config(config_dir, "ip-masq-broken", content)
    assert_config_error(run_agent(nft_topo, config_dir, "--enable-ipv6"), "ip-masq-broken")
    assert nft_topo.snapshot() == before
