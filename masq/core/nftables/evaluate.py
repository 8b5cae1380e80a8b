"""Reading the agent's nft table the way the kernel does: first match, sets looked up.

For ``--explain`` on live state and to prove a listed table decides like
``should_masquerade``.  The destination is assumed non-LOCAL (the first rule
returns for local ones) and a ``numgen`` rule is taken to match: the only ones the
agent writes are --to-ports masquerades, whose verdict is the same whichever fires.
"""

from __future__ import annotations

from dataclasses import dataclass

from masq.core.addresses import Family, IPAddress, IPNetwork, family_of
from masq.core.egress import ANY_PACKET, Packet, interface_matches
from masq.core.nftables.model import POSTROUTING_CHAIN, SNAT_CHAIN, NftRule, NftTable


@dataclass(frozen=True, slots=True)
class Match:
    """The rule that decides (1-based ``position`` in the base chain) and, for a set
    lookup, the element that matched."""

    rule: NftRule
    position: int
    element: IPNetwork | None


def _element(table: NftTable, rule: NftRule, ip: IPAddress) -> IPNetwork | None:
    found = table.sets.get(rule.daddr_set or "")
    if found is None:
        return None
    return next((e for e in found.elements if ip in e), None)


def _selection_fails(rule: NftRule, family: Family, packet: Packet) -> bool:
    """Whether an egress-selection match (``oifname != {...}``, ``ip saddr != {...}``) fails
    for the packet; an unknown interface or source passes it (is taken as selected)."""
    if rule.not_oifname and (
        packet.interface is None
        or any(interface_matches(i, packet.interface) for i in rule.not_oifname)
    ):
        return True
    if rule.not_saddr:
        if family_of(rule.not_saddr[0]) != family:
            return True  # ``ip saddr`` implies the family: a packet of the other one fails
        source = packet.source
        return source is None or any(source in n for n in rule.not_saddr)
    return False


def _matches(
    table: NftTable, rule: NftRule, ip: IPAddress, packet: Packet
) -> tuple[bool, IPNetwork | None]:
    family = family_of(ip)
    if rule.local or (rule.nfproto is not None and rule.nfproto != family):
        return False, None
    if _selection_fails(rule, family, packet):
        return False, None
    if rule.family is not None and rule.family != family:
        return False, None
    if rule.daddr is not None:
        return ip in rule.daddr, None
    if rule.daddr_set is not None:
        element = _element(table, rule, ip)
        return element is not None, element
    return True, None


def first_match(table: NftTable, ip: IPAddress, packet: Packet = ANY_PACKET) -> Match | None:
    """The base chain's rule that decides for non-LOCAL ``ip`` (None: it falls through).

    ``packet`` gives the source and output interface egress selection matches on (left
    out: taken as selected).  An opaque rule is returned when reached, since its matches
    are unknown.
    """
    chain = table.chains.get(POSTROUTING_CHAIN)
    for position, rule in enumerate(chain.rules if chain else (), start=1):
        if rule.verdict is None:
            return Match(rule, position, None)
        hit, element = _matches(table, rule, ip, packet)
        if hit:
            return Match(rule, position, element)
    return None


def masquerades(table: NftTable, ip: IPAddress, packet: Packet = ANY_PACKET) -> bool:
    """Whether traffic to non-LOCAL ``ip`` leaves masqueraded (a jump to a chain that only
    masquerades or SNATs decides True; return or falling through decide False)."""
    match = first_match(table, ip, packet)
    if match is None or match.rule.verdict == "return":
        return False
    target = table.chains.get(match.rule.target or "")
    only_masquerades = target is not None and all(
        r.verdict in ("masquerade", "snat") for r in target.rules
    )
    if match.rule.verdict == "jump" and target is not None and target.rules and only_masquerades:
        return True
    raise ValueError(f"cannot tell what this rule decides: {match.rule!r}")


def nat_address(table: NftTable, ip: IPAddress) -> IPAddress | None:
    """The address the NAT chain gives a masqueraded packet to ``ip``'s family: the SNAT
    address of the first rule for that family, None for MASQUERADE (the kernel's pick)."""
    chain = table.chains.get(SNAT_CHAIN)
    family = family_of(ip)
    for rule in chain.rules if chain else ():
        if rule.nfproto in (None, family) and rule.protocol is None:
            return rule.to_address
    return None
