"""Reading the agent's nft table the way the kernel does: first match, sets looked up.

For ``--explain`` on live state and to prove a listed table decides like
``should_masquerade``.  The destination is assumed non-LOCAL (the first rule
returns for local ones) and a ``numgen`` rule is taken to match: the only ones the
agent writes are --to-ports masquerades, whose verdict is the same whichever fires.
"""

from __future__ import annotations

from dataclasses import dataclass

from masq.core.addresses import IPAddress, IPNetwork, family_of
from masq.core.nftables.model import POSTROUTING_CHAIN, NftRule, NftTable


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


def _matches(table: NftTable, rule: NftRule, ip: IPAddress) -> tuple[bool, IPNetwork | None]:
    family = family_of(ip)
    if rule.local or (rule.nfproto is not None and rule.nfproto != family):
        return False, None
    if rule.family is not None and rule.family != family:
        return False, None
    if rule.daddr is not None:
        return ip in rule.daddr, None
    if rule.daddr_set is not None:
        element = _element(table, rule, ip)
        return element is not None, element
    return True, None


def first_match(table: NftTable, ip: IPAddress) -> Match | None:
    """The base chain's rule that decides for non-LOCAL ``ip`` (None: it falls through).

    An opaque rule is returned when reached, since its matches are unknown.
    """
    chain = table.chains.get(POSTROUTING_CHAIN)
    for position, rule in enumerate(chain.rules if chain else (), start=1):
        if rule.verdict is None:
            return Match(rule, position, None)
        hit, element = _matches(table, rule, ip)
        if hit:
            return Match(rule, position, element)
    return None


def masquerades(table: NftTable, ip: IPAddress) -> bool:
    """Whether traffic to non-LOCAL ``ip`` leaves masqueraded (a jump to a chain that only
    masquerades decides True; return or falling through decide False)."""
    match = first_match(table, ip)
    if match is None or match.rule.verdict == "return":
        return False
    target = table.chains.get(match.rule.target or "")
    only_masquerades = target is not None and all(r.verdict == "masquerade" for r in target.rules)
    if match.rule.verdict == "jump" and target is not None and target.rules and only_masquerades:
        return True
    raise ValueError(f"cannot tell what this rule decides: {match.rule!r}")
