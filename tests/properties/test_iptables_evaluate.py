"""The rendered chain, read first-match as the kernel does, decides like ``should_masquerade``."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from strategies import BITS, configs

from masq.core.addresses import Family, IPAddress
from masq.core.config import MasqConfig
from masq.core.decision import LINK_LOCAL, should_masquerade
from masq.core.iptables.codec import parse_save, render_rule
from masq.core.iptables.evaluate import first_match, masquerades
from masq.core.iptables.model import Ruleset
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.core.names import POSTROUTING
from masq.core.nat import NatOptions, parse_to_ports


def boundaries(config: MasqConfig, family: Family) -> list[IPAddress]:
    """First and last address of every CIDR in play, and their neighbours."""
    top = (1 << BITS[family]) - 1
    cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    nets = [*config.non_masquerade_cidrs, *config.masquerade_cidrs, *LINK_LOCAL.values()]
    out: list[IPAddress] = []
    for net in nets:
        if (net.version == 4) != (family == "ipv4"):
            continue
        first, last = int(net.network_address), int(net.broadcast_address)
        out += [cls(v) for v in (first - 1, first, last, last + 1) if 0 <= v <= top]
    return out


def save_text(ruleset: Ruleset, chain: str) -> str:
    """What iptables-save would print for the desired ruleset."""
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", f":{chain} - [0:0]"]
    for name in (POSTROUTING, chain):
        found = ruleset.chain(name)
        lines += [render_rule(name, r) for r in (found.rules if found else ())]
    return "\n".join([*lines, "COMMIT", ""])


@given(
    config=configs(),
    family=st.sampled_from(["ipv4", "ipv6"]),
    to_ports=st.sampled_from([None, "1024-29999,32768-65535", "5000"]),
    data=st.data(),
)
def test_rendered_chain_decides_like_should_masquerade(
    config: MasqConfig, family: Family, to_ports: str | None, data: st.DataObject
) -> None:
    """For any config and any destination of the family (every CIDR's edges and their neighbours,
    and random addresses), the desired ruleset, printed as iptables-save prints it and parsed back,
    masquerades a packet of any protocol (none, tcp, udp, sctp; with or without --to-ports) exactly
    when should_masquerade says so."""
    # Fails if desired_ruleset puts the link-local RETURN before the masquerade
    # exceptions, drops a RETURN, or if render/parse lose a prefix length.
    ports = parse_to_ports(to_ports).unwrap() if to_ports else ()
    options = RulesetOptions(
        chain="IP-MASQ-AGENT", enable_ipv6=True, nat=NatOptions(to_ports=ports)
    )
    parsed = parse_save(
        save_text(desired_ruleset(config, family, options), options.chain), options.chain, family
    ).unwrap()
    bits = BITS[family]
    cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    points = boundaries(config, family)
    picked = data.draw(st.lists(st.sampled_from(points), max_size=12)) if points else []
    randoms = [cls(v) for v in data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=4))]
    for ip in [*picked, *randoms]:
        expected = should_masquerade(config, ip)
        for protocol in (None, "tcp", "udp", "sctp"):
            assert masquerades(parsed, ip, protocol) is expected, (ip, protocol)


@given(config=configs(), data=st.data())
def test_to_ports_rules_only_catch_their_protocol(config: MasqConfig, data: st.DataObject) -> None:
    """With --to-ports, the per-protocol MASQUERADE rules match only their own protocol: an icmp
    packet is decided by a rule without a protocol (or by none), a tcp packet always by a tcp rule
    or one without a protocol."""
    # Fails if first_match ignores a rule's protocol (icmp would hit a tcp --to-ports rule).
    options = RulesetOptions(
        nat=NatOptions(to_ports=parse_to_ports("1024-29999,32768-65535").unwrap())
    )
    ruleset = desired_ruleset(config, "ipv4", options)
    ip = ipaddress.IPv4Address(data.draw(st.integers(0, 2**32 - 1)))
    rule = first_match(ruleset, options.chain, ip, "icmp")
    assert rule is None or rule.protocol is None
    tcp = first_match(ruleset, options.chain, ip, "tcp")
    assert tcp is not None
    assert tcp.protocol in (None, "tcp")
