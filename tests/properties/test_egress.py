"""Egress selection: interface patterns and the flow decision against independent oracles."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st
from nft_text import masquerades as masquerades_text
from nft_text import parse_text, snat_address
from pyrsistent import pvector
from returns.result import Failure, Success
from strategies import INTERFACES, egress_configs, probe_addresses, probe_sources, table_options

from masq.core.addresses import Family, IPAddress, IPNetwork, family_of, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.decision import Flow, should_masquerade, should_masquerade_flow
from masq.core.egress import Packet, interface_matches, parse_interface, uncovered_interfaces
from masq.core.iptables.codec import parse_save, render_restore
from masq.core.iptables.evaluate import first_match, masquerades
from masq.core.iptables.model import Ruleset
from masq.core.iptables.plan import plan
from masq.core.iptables.rules import desired_ruleset
from masq.core.nftables.codec import render_table
from masq.core.nftables.evaluate import masquerades as nft_masquerades
from masq.core.nftables.evaluate import nat_address
from masq.core.nftables.table import desired_table
from masq.core.options import DataplaneOptions

NAMES = ("eth0", "eth1", "eth10", "eth", "ens5", "wlan0", "bond0.100", "e")
PATTERNS = st.sampled_from(NAMES) | st.sampled_from(("eth", "e", "ens", "wl", "bond0")).map(
    lambda p: p + "*"
)


def plain_match(pattern: str, name: str) -> bool:
    """Oracle: a trailing * compares the characters before it, anything else the whole name."""
    if pattern[-1:] == "*":
        head = pattern[: len(pattern) - 1]
        return name[: len(head)] == head
    return pattern == name


@st.composite
def networks(draw: st.DrawFn, version: int | None = None) -> IPNetwork:
    version = version or draw(st.sampled_from((4, 6)))
    bits = 32 if version == 4 else 128
    # Few distinct prefixes, so sources and destinations land in each other's CIDRs.
    base = draw(st.sampled_from((0, 10 << (bits - 8), 169 << (bits - 8) | 254 << (bits - 16))))
    if version == 6:
        base = draw(st.sampled_from((0, 0xFD << 120, 0xFE80 << 112)))
    offset = draw(st.integers(0, 2 ** (bits - 8) - 1))
    net: IPNetwork = ipaddress.ip_network((base | offset, draw(st.integers(0, bits))), strict=False)
    return net


@st.composite
def configs(draw: st.DrawFn) -> MasqConfig:
    return MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(draw(st.lists(networks(), max_size=4))),
        masquerade_cidrs=sorted_cidrs(draw(st.lists(networks(), max_size=3))),
        masq_link_local=draw(st.booleans()),
        masq_link_local_ipv6=draw(st.booleans()),
        output_interfaces=pvector(sorted(set(draw(st.lists(PATTERNS, max_size=3))))),
        source_cidrs=sorted_cidrs(draw(st.lists(networks(), max_size=3))),
        output_address=draw(st.none() | st.just(ipaddress.IPv4Address("192.0.2.10"))),
    )


@st.composite
def flows(draw: st.DrawFn, config: MasqConfig) -> Flow:
    version = draw(st.sampled_from((4, 6)))
    nets = [
        n
        for n in (*config.source_cidrs, *config.masquerade_cidrs, *config.non_masquerade_cidrs)
        if n.version == version
    ]

    def address() -> st.SearchStrategy[IPAddress]:
        anywhere: st.SearchStrategy[IPAddress] = st.ip_addresses(v=4 if version == 4 else 6)
        if not nets:
            return anywhere
        cls: type[IPAddress] = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
        inside: st.SearchStrategy[IPAddress] = st.sampled_from(nets).flatmap(
            lambda n: st.integers(int(n.network_address), int(n.broadcast_address)).map(cls)
        )
        return anywhere | inside

    return Flow(draw(address()), draw(address()), draw(st.sampled_from(NAMES)))


def oracle(config: MasqConfig, flow: Flow) -> bool:
    """The issue's order, written with netaddr and plain string comparison."""
    if config.output_interfaces and not any(
        plain_match(p, flow.interface) for p in config.output_interfaces
    ):
        return False
    src = netaddr.IPAddress(str(flow.source))
    if config.source_cidrs and not any(
        n.version == src.version and src in netaddr.IPNetwork(str(n)) for n in config.source_cidrs
    ):
        return False
    dst = netaddr.IPAddress(str(flow.destination))

    def listed(nets: object) -> bool:
        return any(
            n.version == dst.version and dst in netaddr.IPNetwork(str(n))
            for n in nets  # type: ignore[attr-defined]
        )

    if listed(config.masquerade_cidrs):
        return True
    link_local = netaddr.IPNetwork("169.254.0.0/16" if dst.version == 4 else "fe80::/10")
    masq_ll = config.masq_link_local if dst.version == 4 else config.masq_link_local_ipv6
    if dst in link_local and not masq_ll:
        return False
    return not listed(config.non_masquerade_cidrs)


@given(st.data(), configs())
def test_flow_decision_matches_an_independent_oracle(
    data: st.DataObject, config: MasqConfig
) -> None:
    """For random configs and flows (sources and destinations drawn inside and around the
    configured CIDRs, interfaces against exact names and trailing-* patterns),
    should_masquerade_flow agrees with an oracle using netaddr for addresses and plain string
    comparison for interface patterns: outside the selected interfaces or sources a flow is
    left alone; the rest is decided by destination as before."""
    flow = data.draw(flows(config))
    assert should_masquerade_flow(config, flow) == oracle(config, flow)


@given(st.data(), configs())
def test_without_selection_the_flow_decision_is_should_masquerade(
    data: st.DataObject, config: MasqConfig
) -> None:
    """With neither outputInterfaces nor sourceCIDRs (outputAddress or not), the flow decision
    is should_masquerade of its destination, whatever the source and the interface."""
    plain = MasqConfig(
        non_masquerade_cidrs=config.non_masquerade_cidrs,
        masquerade_cidrs=config.masquerade_cidrs,
        masq_link_local=config.masq_link_local,
        masq_link_local_ipv6=config.masq_link_local_ipv6,
        output_address=config.output_address,
    )
    flow = data.draw(flows(plain))
    assert should_masquerade_flow(plain, flow) == should_masquerade(plain, flow.destination)


@given(PATTERNS, st.sampled_from(NAMES) | st.text(max_size=16))
def test_interface_matching_is_plain_prefix_or_equality(pattern: str, name: str) -> None:
    """interface_matches is equality for a name and a prefix comparison for a trailing *."""
    assert interface_matches(pattern, name) == plain_match(pattern, name)


@given(st.lists(PATTERNS, max_size=5), st.sampled_from(NAMES))
def test_uncovered_interfaces_select_the_same_names(patterns: list[str], name: str) -> None:
    """Dropping the entries another pattern covers selects exactly the same interfaces."""
    kept = uncovered_interfaces(patterns)
    assert set(kept) <= set(patterns)
    assert any(plain_match(p, name) for p in kept) == any(plain_match(p, name) for p in patterns)


@given(st.text(max_size=20))
def test_parse_interface_accepts_exactly_the_kernels_names_and_one_trailing_star(
    text: str,
) -> None:
    """An entry is accepted iff it is 1..15 bytes, not . or .., printable ASCII without
    whitespace, / : quotes backslash or +, with * only as its last character (not alone)."""
    body = text[:-1] if text.endswith("*") else text
    ok = (
        0 < len(text.encode()) <= 15
        and text not in (".", "..")
        and body != ""
        and all("!" <= c <= "~" and c not in "/:\"'\\+*" for c in body)
    )
    result = parse_interface(text)
    assert isinstance(result, Success) == ok
    if isinstance(result, Failure):
        assert "\n" not in str(result.failure())


def _rendered_ruleset(config: MasqConfig, family: Family, options: DataplaneOptions) -> Ruleset:
    """The chain and jump as the restore script writes them, read back by parse_save."""
    desired = desired_ruleset(config, family, options)
    empty = parse_save("", options.chain, family).unwrap()
    script = render_restore(plan(desired, empty))
    return parse_save(script, options.chain, family).unwrap()


@settings(max_examples=60)
@given(config=egress_configs(), options=table_options(), data=st.data())
def test_rendered_dataplanes_decide_like_the_flow_decision(
    config: MasqConfig, options: DataplaneOptions, data: st.DataObject
) -> None:
    """For random configs with egress selection (outputInterfaces with trailing-* patterns,
    sourceCIDRs of either family, outputAddress*) and flows through every probe interface
    from sources at the edges of the source CIDRs: the iptables chain and jump, rendered as a
    restore script and parsed back, evaluated by the core's iptables evaluator; the nft
    table model evaluated by the core's nft evaluator; and the rendered nft text read by the
    independent nft-text reader all decide like should_masquerade_flow, and a masqueraded
    flow is SNATed to the family's outputAddress (MASQUERADE where none is set)."""
    table = desired_table(config, options)
    text = parse_text(render_table(table))
    for family in options.families:
        ruleset = _rendered_ruleset(config, family, options)
        destinations = [ip for ip in probe_addresses(config, data) if family_of(ip) == family]
        snat = config.output_address if family == "ipv4" else config.output_address_ipv6
        for source in probe_sources(config, data, family):
            for destination in destinations[:6]:
                for interface in INTERFACES:
                    flow = Flow(source, destination, interface)
                    want = should_masquerade_flow(config, flow)
                    packet = Packet(source, interface)
                    assert masquerades(ruleset, destination, packet=packet) is want, flow
                    assert nft_masquerades(table, destination, packet) is want, flow
                    got = masquerades_text(text, str(destination), str(source), interface)
                    assert got is want, (flow, render_table(table))
                    if want:
                        rule = first_match(ruleset, options.chain, destination, packet=packet)
                        assert rule is not None and rule.to_source == snat
                        assert nat_address(table, destination) == snat
                        shown = snat_address(text, str(destination))
                        assert shown == (None if snat is None else str(snat))


@given(config=egress_configs(), options=table_options())
def test_without_egress_keys_both_dataplanes_write_what_they_wrote_before(
    config: MasqConfig, options: DataplaneOptions
) -> None:
    """With none of the new keys set, the iptables chain and jump and the nft table are
    exactly those of the same config before egress selection existed: no -s, -o or SNAT
    in any rule, no selection rule or snat statement in the table."""
    plain = replace(
        config,
        output_interfaces=pvector(),
        source_cidrs=pvector(),
        output_address=None,
        output_address_ipv6=None,
    )
    for family in options.families:
        rules = desired_ruleset(plain, family, options).chains[options.chain].rules
        assert all(
            r.source is None and r.out_interface is None and r.action != "SNAT" for r in rules
        )
    text = render_table(desired_table(plain, options))
    assert "oifname" not in text and "saddr" not in text and "snat " not in text
