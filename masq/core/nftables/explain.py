"""``--explain`` on the nftables dataplane: the base chain's deciding rule and, for a set
lookup, the element that matched with its counter.

The rule found is traced back to the config by the shared ``core.explain``; what is
nftables' own is reading the table (sets looked up), spelling its rules, and that a
configured CIDR covered by another of its list is not stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from masq.core.addresses import Family, IPAddress, IPNetwork, family_of
from masq.core.egress import ANY_PACKET, Packet
from masq.core.explain import Decided, Explanation, no_rule, origins, outcome, undecided
from masq.core.fragment import Fragment
from masq.core.merge import Merged
from masq.core.nftables.codec import render_rule
from masq.core.nftables.evaluate import Match, first_match
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable


def _step(table: NftTable, match: Match | None) -> Decided:
    """The decision step the matching rule carries out."""
    if match is None:
        return None
    rule = match.rule
    if rule.verdict is None:
        return "foreign"
    if rule.verdict == "return" and rule.not_oifname:
        return "other-interface"
    if rule.verdict == "return" and (rule.not_saddr or (rule.daddr is None and not rule.daddr_set)):
        return "other-source"  # ip saddr != {...}, or a family none of whose sources is listed
    if rule.verdict == "return":
        return "link-local" if rule.daddr is not None else "non-masquerade"
    if rule.daddr_set is not None:
        return "masquerade"
    return "default" if rule.verdict == "jump" and rule.target in table.chains else "foreign"


def explain(
    ip: IPAddress,
    *,
    table: NftTable | None,
    fragments: Sequence[Fragment] = (),
    merged: Merged | None = None,
    local: bool = False,
    packet: Packet = ANY_PACKET,
) -> Explanation:
    """Explain the fate of a packet to ``ip`` under the agent's ``table`` (None: no table)."""
    family = family_of(ip)
    base = undecided(ip, merged, POSTROUTING_CHAIN, local, packet)
    if local:
        return no_rule(base, "a LOCAL address of this node: the first rule returns for it")
    if table is None or POSTROUTING_CHAIN not in table.chains:
        return no_rule(base, "the agent's nft table is absent: nothing is masqueraded by it")
    match = first_match(table, ip, packet)
    step = _step(table, match)
    net = None
    text = None
    if match is not None:
        net = match.element if match.element is not None else match.rule.daddr
        text = render_rule(match.rule) if match.rule.verdict is not None else match.rule.text
        if match.element is not None:
            text = f"{text} (element {match.element}{_element_counters(table, match)})"
    covered = tuple(
        f"{n} (covered by {net}: not stored)"
        for n in _configured(merged, family, step)
        if ip in n and n != net
    )
    return replace(
        base,
        verdict=outcome(step),
        position=match.position if match else None,
        rule_text=text,
        origins=origins(step, net, family, fragments, merged),
        shadowed=covered,
    )


def _element_counters(table: NftTable, match: Match) -> str:
    found = table.sets.get(match.rule.daddr_set or "")
    counters = found.counters.get(match.element) if found and match.element else None
    if counters is None:
        return ""
    return f", counter {counters.packets} packets {counters.bytes} bytes"


def _configured(merged: Merged | None, family: Family, step: Decided) -> list[IPNetwork]:
    """The configured CIDRs of the list that decided (their covered ones are not stored)."""
    if merged is None or step not in ("masquerade", "link-local", "non-masquerade"):
        return []
    nets = (
        merged.config.masquerade_cidrs
        if step == "masquerade"
        else merged.config.non_masquerade_cidrs
    )
    return [n for n in nets if family_of(n) == family]
