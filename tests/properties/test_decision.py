"""should_masquerade against an independent netaddr oracle, at every CIDR boundary."""

from __future__ import annotations

import ipaddress

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from masq.core.addresses import IPNetwork, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.decision import should_masquerade


@st.composite
def networks(draw: st.DrawFn) -> IPNetwork:
    version = draw(st.sampled_from((4, 6)))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    # Bias towards link-local space so the link-local branch is exercised.
    base = draw(
        st.one_of(
            st.integers(0, 2**bits - 1),
            st.just(int(ipaddress.ip_address("169.254.0.0" if version == 4 else "fe80::"))),
        )
    )
    net: IPNetwork = ipaddress.ip_network((base, prefix), strict=False)
    return net


@st.composite
def configs(draw: st.DrawFn) -> MasqConfig:
    return MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(draw(st.lists(networks(), max_size=6))),
        masquerade_cidrs=sorted_cidrs(draw(st.lists(networks(), max_size=4))),
        masq_link_local=draw(st.booleans()),
        masq_link_local_ipv6=draw(st.booleans()),
    )


def boundary_addresses(config: MasqConfig) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """First and last address of every CIDR (and the link-local ones) and their neighbours."""
    nets = [
        *config.non_masquerade_cidrs,
        *config.masquerade_cidrs,
        ipaddress.ip_network("169.254.0.0/16"),
        ipaddress.ip_network("fe80::/10"),
    ]
    out = []
    for net in nets:
        top = 2**net.max_prefixlen - 1
        for value in (
            int(net.network_address) - 1,
            int(net.network_address),
            int(net.broadcast_address),
            int(net.broadcast_address) + 1,
        ):
            if 0 <= value <= top:
                out.append(
                    ipaddress.ip_address(value)
                    if net.version == 4
                    else ipaddress.IPv6Address(value)
                )
    return out


def oracle(config: MasqConfig, address: str) -> bool:
    """The decision rule written with netaddr sets, independently of the code under test."""
    ip = netaddr.IPAddress(address)
    masq = netaddr.IPSet(str(n) for n in config.masquerade_cidrs)
    non_masq = netaddr.IPSet(str(n) for n in config.non_masquerade_cidrs)
    if ip in masq:
        return True
    link_local = netaddr.IPSet(["169.254.0.0/16"] if ip.version == 4 else ["fe80::/10"])
    allowed = config.masq_link_local if ip.version == 4 else config.masq_link_local_ipv6
    if ip in link_local and not allowed:
        return False
    return ip not in non_masq


@st.composite
def config_and_addresses(draw: st.DrawFn) -> tuple[MasqConfig, list[str]]:
    config = draw(configs())
    randoms = draw(st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=8))
    return config, [str(a) for a in [*boundary_addresses(config), *randoms]]


# Fails if should_masquerade checks nonMasqueradeCIDRs before masqueradeCIDRs, drops the
# link-local step, swaps masqLinkLocal/masqLinkLocalIPv6, or uses a half-open range check.
@given(config_and_addresses())
def test_should_masquerade_matches_netaddr_oracle(case: tuple[MasqConfig, list[str]]) -> None:
    """For any config (CIDRs of both families, from /0 to host routes, often in link-local space,
    and either masqLinkLocal setting) and any address (the first and last address of every CIDR and
    their neighbours, and random ones), should_masquerade says masquerade exactly when the address
    is in masqueradeCIDRs, or else it is neither link-local (169.254.0.0/16, fe80::/10) with
    masqLinkLocal (masqLinkLocalIPv6 for IPv6) false nor in nonMasqueradeCIDRs; the oracle computes
    this with netaddr sets."""
    config, addresses = case
    for address in addresses:
        assert should_masquerade(config, ipaddress.ip_address(address)) == oracle(config, address)


def test_should_masquerade_refuses_text() -> None:
    """Text is parsed at the edge (masq.parse_ip); a str here is the caller's bug, said loudly."""
    config = MasqConfig()
    with pytest.raises(TypeError, match="parse_ip"):
        should_masquerade(config, "10.0.0.1")  # type: ignore[arg-type]
    assert should_masquerade(config, ipaddress.ip_address("8.8.8.8")) is True
