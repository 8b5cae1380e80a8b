"""Per-CIDR traffic from the agent's nft table: set elements' counters, counted rules.

The labels are the iptables dataplane's, so one dashboard serves both: each stored
CIDR under its verdict, the link-local rule's range as RETURN, the catch-all as
0.0.0.0/0 or ::/0 MASQUERADE.  A configured CIDR that another of its list covers is
not stored; it reads 0, as its never-reached rule does in the iptables chain.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from masq.core.addresses import Family, every_destination
from masq.core.decision import FamilyDecision
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable
from masq.core.traffic import CidrTraffic, Counted, TrafficAction, summed


def _counted(table: NftTable, decisions: Iterable[FamilyDecision]) -> Iterator[Counted]:
    for s in table.sets.values():
        if s.kind is None:
            continue  # not a set the agent writes: no CIDR of its config
        action: TrafficAction = "MASQUERADE" if s.kind == "masquerade" else "RETURN"
        for net in s.elements:
            yield s.family, str(net), action, s.counters.get(net)
    chain = table.chains.get(POSTROUTING_CHAIN)
    for rule in chain.rules if chain else ():
        if not rule.counter:
            continue
        if rule.verdict == "return" and rule.family is not None and rule.daddr is not None:
            yield rule.family, str(rule.daddr), "RETURN", rule.counters
        elif rule.verdict == "jump" and rule.daddr is None and rule.daddr_set is None:
            family: Family = rule.nfproto or "ipv4"
            yield family, str(every_destination(family)), "MASQUERADE", rule.counters
    for d in decisions:
        yield from ((d.family, str(net), "MASQUERADE", None) for net in d.masquerade)
        yield from ((d.family, str(net), "RETURN", None) for net in d.non_masquerade)


def traffic_of(
    table: NftTable, decisions: Iterable[FamilyDecision] = ()
) -> dict[Family, tuple[CidrTraffic, ...]]:
    """Per family: (cidr, action) counters, stored ones first, then zeros for covered CIDRs."""
    return summed(_counted(table, decisions))
