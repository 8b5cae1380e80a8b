"""Egress selection with real packets: which interface, which source, which address.

A node with two uplinks to two destinations, and two pods, one of them in ``sourceCIDRs``:

    pod-a eth0 10.244.1.2/24  fd00:244::2/64   (in sourceCIDRs)
    pod-b eth0 10.245.1.2/24  fd00:245::2/64   (outside)
    node  vpa 10.244.1.1/24 fd00:244::1/64, vpb 10.245.1.1/24 fd00:245::1/64
    node  eth1 192.168.101.1/24 + 192.168.101.100/24, fd00:101::1/64 + fd00:101::100/64
    node  wan0 192.168.102.1/24  fd00:102::1/64
    dest1 eth0 192.168.101.2/24 fd00:101::2/64; lo 203.0.113.10 2001:db8::10  (via eth1)
    dest2 eth0 192.168.102.2/24 fd00:102::2/64; lo 198.51.100.10 2001:db8::20 (via wan0)

Each destination reports the source address it saw: the pod's own (left alone, or kept),
the uplink's first address (MASQUERADE), or the configured ``outputAddress*`` (SNAT).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.agent import assert_ok, daemon, wait_for, write_config
from integration.packets import source_seen
from integration.planes import Plane, backend_of, make
from integration.topology import NS_PREFIX, Backend, Topology, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

POD_A, POD_B = "10.244.1.2", "10.245.1.2"
POD_A6, POD_B6 = "fd00:244::2", "fd00:245::2"
ETH1, ETH1_SECOND, WAN0 = "192.168.101.1", "192.168.101.100", "192.168.102.1"
ETH1_6, ETH1_SECOND6, WAN0_6 = "fd00:101::1", "fd00:101::100", "fd00:102::1"
DEST1, DEST2 = "203.0.113.10", "198.51.100.10"
DEST1_6, DEST2_6 = "2001:db8::10", "2001:db8::20"

SELECT = (
    "nonMasqueradeCIDRs: []\n"
    "outputInterfaces: [eth*]\n"
    "sourceCIDRs: [10.244.0.0/16, 'fd00:244::/64']\n"
)
"""Everything masqueraded, but only from pod-a and only out of eth1 (the eth* pattern)."""


def _ip(ns: str, lines: list[str]) -> None:
    v4 = [line for line in lines if not line.startswith("-6 ")]
    v6 = [line.removeprefix("-6 ") for line in lines if line.startswith("-6 ")]
    run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(v4) + "\n")
    if v6:
        run(["ip", "-6", "-n", ns, "-batch", "-"], stdin="\n".join(v6) + "\n")


@contextlib.contextmanager
def multi_homed(backend: Backend) -> Iterator[dict[str, Topology]]:
    """The namespaces above, deleted on the way out; a ``Topology`` view per (pod, dest) so
    the harness's probes and agent runs work on each path."""
    base = f"{NS_PREFIX}-{os.getpid()}-eg{backend[0]}"
    names = {n: f"{base}-{n}" for n in ("pa", "pb", "node", "d1", "d2")}
    try:
        for ns in names.values():
            run(["ip", "netns", "add", ns])
            for key in ("all", "default"):
                run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        "sysctl",
                        "-q",
                        "-w",
                        f"net.ipv6.conf.{key}.accept_dad=0",
                    ]
                )
        for near, near_name, far, far_name in (
            ("pa", "eth0", "node", "vpa"),
            ("pb", "eth0", "node", "vpb"),
            ("node", "eth1", "d1", "eth0"),
            ("node", "wan0", "d2", "eth0"),
        ):
            veth = ["type", "veth", "peer", "name", far_name, "netns", names[far]]
            run(["ip", "link", "add", near_name, "netns", names[near], *veth])
        for pod, net in (("pa", "244"), ("pb", "245")):
            _ip(names[pod], [
                "link set lo up", "link set eth0 up",
                f"addr add 10.{net}.1.2/24 dev eth0",
                f"-6 addr add fd00:{net}::2/64 dev eth0 nodad",
                f"route add default via 10.{net}.1.1", f"-6 route add default via fd00:{net}::1",
            ])  # fmt: skip
        _ip(names["node"], [
            "link set lo up", "link set vpa up", "link set vpb up", "link set eth1 up",
            "link set wan0 up",
            "addr add 10.244.1.1/24 dev vpa", "-6 addr add fd00:244::1/64 dev vpa nodad",
            "addr add 10.245.1.1/24 dev vpb", "-6 addr add fd00:245::1/64 dev vpb nodad",
            f"addr add {ETH1}/24 dev eth1", f"addr add {ETH1_SECOND}/24 dev eth1",
            f"-6 addr add {ETH1_6}/64 dev eth1 nodad",
            # deprecated: never the kernel's own source pick, so MASQUERADE shows the first
            f"-6 addr add {ETH1_SECOND6}/64 dev eth1 nodad preferred_lft 0",
            f"addr add {WAN0}/24 dev wan0", f"-6 addr add {WAN0_6}/64 dev wan0 nodad",
            f"route add {DEST1}/32 via 192.168.101.2",
            f"route add {DEST2}/32 via 192.168.102.2",
            f"-6 route add {DEST1_6}/128 via fd00:101::2",
            f"-6 route add {DEST2_6}/128 via fd00:102::2",
        ])  # fmt: skip
        for dest, net, lo, lo6 in (("d1", "101", DEST1, DEST1_6), ("d2", "102", DEST2, DEST2_6)):
            _ip(names[dest], [
                "link set lo up", "link set eth0 up",
                f"addr add 192.168.{net}.2/24 dev eth0",
                f"-6 addr add fd00:{net}::2/64 dev eth0 nodad",
                f"addr add {lo}/32 dev lo", f"-6 addr add {lo6}/128 dev lo nodad",
                f"route add 10.244.0.0/15 via 192.168.{net}.1",
                f"-6 route add fd00:244::/63 via fd00:{net}::1",
            ])  # fmt: skip
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            run(["ip", "netns", "exec", names["node"], "sysctl", "-q", "-w", key])
        yield {
            f"{pod}-{dest}": Topology(
                pod=names[pod], node=names["node"], dest=names[dest], backend=backend
            )
            for pod in ("pa", "pb")
            for dest in ("d1", "d2")
        }
    finally:
        for ns in names.values():
            run(["ip", "netns", "del", ns], check=False, timeout=10)


@pytest.fixture(params=["iptables-nft", "iptables-legacy", "nftables"])
def paths(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Topology]]]:
    with multi_homed(backend_of(request.param)) as topos:
        yield request.param, topos


def seen(topos: dict[str, Topology], ipv6: bool) -> dict[str, str]:
    """For each (pod, dest) path, the source address dest saw."""
    dests = {"d1": DEST1_6, "d2": DEST2_6} if ipv6 else {"d1": DEST1, "d2": DEST2}
    return {path: source_seen(topo, dests[path[-2:]]) for path, topo in topos.items()}


def assert_seen(topos: dict[str, Topology], ipv6: bool, *sources: str) -> None:
    """The sources dest1 and dest2 saw from pod-a, then from pod-b."""
    assert seen(topos, ipv6) == dict(
        zip(("pa-d1", "pa-d2", "pb-d1", "pb-d2"), sources, strict=True)
    )


def run_agent(plane_id: str, topos: dict[str, Topology], config_dir: Path, *flags: str) -> str:
    proc = make(plane_id, topos["pa-d1"]).run_agent(config_dir, *flags)
    assert_ok(proc)
    return proc.stderr


def test_each_destination_sees_the_source_the_config_says(
    paths: tuple[str, dict[str, Topology]], config_dir: Path
) -> None:
    """IPv4 and IPv6, every dataplane (iptables on both backends): with outputInterfaces
    [eth*] and sourceCIDRs [pod-a's], only pod-a's flows out of eth1 are masqueraded (to
    eth1's first address); pod-a's flows out of wan0 and all of pod-b's keep their source.
    With outputAddress* set to eth1's second address, the masqueraded flows arrive from it."""
    plane_id, topos = paths
    write_config(config_dir, "ip-masq-agent", SELECT)
    run_agent(plane_id, topos, config_dir, "--enable-ipv6")
    assert_seen(topos, False, ETH1, POD_A, POD_B, POD_B)
    assert_seen(topos, True, ETH1_6, POD_A6, POD_B6, POD_B6)
    write_config(
        config_dir,
        "ip-masq-snat",
        f"outputAddress: {ETH1_SECOND}\noutputAddressIPv6: '{ETH1_SECOND6}'\n",
    )
    stderr = run_agent(plane_id, topos, config_dir, "--enable-ipv6")
    assert "not an address of this node" not in stderr  # it is: eth1's second address
    assert_seen(topos, False, ETH1_SECOND, POD_A, POD_B, POD_B)
    assert_seen(topos, True, ETH1_SECOND6, POD_A6, POD_B6, POD_B6)


def test_snat_without_selection_and_the_rule_text(
    paths: tuple[str, dict[str, Topology]], config_dir: Path
) -> None:
    """outputAddress alone (no selection) SNATs every masqueraded flow, out of either uplink,
    to that address; the iptables chain holds upstream's rules with -j SNAT --to-source in
    place of MASQUERADE; and dropping the key restores upstream's chain byte for byte."""
    plane_id, topos = paths
    write_config(
        config_dir, "ip-masq-agent", f"nonMasqueradeCIDRs: []\noutputAddress: {ETH1_SECOND}\n"
    )
    run_agent(plane_id, topos, config_dir)
    assert_seen(topos, False, ETH1_SECOND, ETH1_SECOND, ETH1_SECOND, ETH1_SECOND)
    plane = make(plane_id, topos["pa-d1"])
    comment = '"ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"'
    if plane_id != "nftables":
        assert plane.installed()["ipv4"][1:] == [
            '-A IP-MASQ-AGENT -d 169.254.0.0/16 -m comment --comment "ip-masq-agent: local traffic'
            ' is not subject to MASQUERADE" -j RETURN',
            f"-A IP-MASQ-AGENT -m comment --comment {comment} -j SNAT --to-source {ETH1_SECOND}"
            " --random-fully",
        ]
    else:
        snat = plane.installed()["ip chain snat-to-node"]
        assert snat == [f"snat to {ETH1_SECOND} fully-random"]
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    run_agent(plane_id, topos, config_dir)
    assert plane.installed() == plane.expected(["10.0.0.0/8"])
    assert_seen(topos, False, ETH1, WAN0, ETH1, WAN0)


def test_output_address_not_on_the_node_is_warned(
    paths: tuple[str, dict[str, Topology]], config_dir: Path
) -> None:
    """An outputAddress the node does not hold is applied but warned about, in one line."""
    plane_id, topos = paths
    if plane_id == "iptables-legacy":
        pytest.skip("the warning is the shell's, the same for every dataplane and backend")
    write_config(config_dir, "ip-masq-agent", "outputAddress: 192.0.2.77\n")
    stderr = run_agent(plane_id, topos, config_dir)
    warnings = [line for line in stderr.splitlines() if "not an address of this node" in line]
    assert len(warnings) == 1 and "192.0.2.77" in warnings[0], stderr


def test_a_daemon_with_egress_selection_writes_only_on_change(
    plane: Plane, config_dir: Path, tmp_path: Path
) -> None:
    """A daemon (resync every second) with every egress key writes once at start and once
    for a change, never in between: what it reads back of its own selection rules, SNAT
    rules and anonymous sets plans as nothing to do."""
    write_config(
        config_dir,
        "ip-masq-agent",
        "outputInterfaces: [vup, 'e*']\nsourceCIDRs: [10.244.0.0/16]\n"
        "outputAddress: 192.168.100.1\n",
    )
    log = tmp_path / "agent.log"

    def writes() -> int:
        lines = log.read_text().splitlines()
        return sum(any(m in line for m in plane.write_messages) for line in lines)

    with daemon(plane.topo, config_dir, *plane.flags, "--resync-interval=1", log=log):
        assert wait_for(lambda: writes() == 1, 10) is not None, log.read_text()
        time.sleep(3)  # three resyncs
        assert writes() == 1, log.read_text()
        write_config(config_dir, "ip-masq-agent", "outputInterfaces: [vup]\n")
        assert wait_for(lambda: writes() == 2, 10) is not None, log.read_text()
        time.sleep(2)
        assert writes() == 2, log.read_text()
    assert "level=warn" not in log.read_text()
