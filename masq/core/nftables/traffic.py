"""Per-CIDR traffic from the agent's nft table: set elements' counters, counted rules.

The labels are the iptables dataplane's, so one dashboard serves both: each stored
CIDR under its verdict, the link-local rule's range as RETURN, the catch-all as
0.0.0.0/0 or ::/0 MASQUERADE.  A configured CIDR that another of its list covers is
not stored; it reads 0, as its never-reached rule does in the iptables chain.
"""

from __future__ import annotations

from collections.abc import Iterable

from masq.core.addresses import Family, IPNetwork, every_destination
from masq.core.decision import FamilyDecision
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable
from masq.core.traffic import CidrTraffic, Counters, Verdict


def traffic_of(
    table: NftTable, decisions: Iterable[FamilyDecision] = ()
) -> dict[Family, tuple[CidrTraffic, ...]]:
    """Per family: (cidr, verdict) counters, stored ones first, then zeros for covered CIDRs."""
    sums: dict[tuple[Family, str, Verdict], list[int]] = {}

    def add(family: Family, net: IPNetwork, verdict: Verdict, c: Counters | None) -> None:
        acc = sums.setdefault((family, str(net), verdict), [0, 0])
        if c is not None:
            acc[0] += c.packets
            acc[1] += c.bytes

    for s in table.sets.values():
        if s.kind is None:
            continue  # not a set the agent writes: no CIDR of its config
        verdict: Verdict = "MASQUERADE" if s.kind == "masquerade" else "RETURN"
        for net in s.elements:
            add(s.family, net, verdict, s.counters.get(net))
    chain = table.chains.get(POSTROUTING_CHAIN)
    for rule in chain.rules if chain else ():
        if not rule.counter:
            continue
        if rule.verdict == "return" and rule.family is not None and rule.daddr is not None:
            add(rule.family, rule.daddr, "RETURN", rule.counters)
        elif rule.verdict == "jump" and rule.daddr is None and rule.daddr_set is None:
            family: Family = rule.nfproto or "ipv4"
            add(family, every_destination(family), "MASQUERADE", rule.counters)
    for d in decisions:
        lists: tuple[tuple[Verdict, Iterable[IPNetwork]], ...] = (
            ("MASQUERADE", d.masquerade),
            ("RETURN", d.non_masquerade),
        )
        for verdict, nets in lists:
            for net in nets:
                add(d.family, net, verdict, None)
    out: dict[Family, list[CidrTraffic]] = {}
    for (family, cidr, verdict), (packets, nbytes) in sums.items():
        out.setdefault(family, []).append(CidrTraffic(family, cidr, verdict, packets, nbytes))
    return {family: tuple(rows) for family, rows in out.items()}
