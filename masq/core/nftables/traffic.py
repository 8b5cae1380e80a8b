"""Per-CIDR traffic from the agent's nft table: set elements' counters, counted rules.

The labels are the iptables dataplane's, so one dashboard serves both: each stored
CIDR under its verdict, the link-local rule's range as RETURN, the catch-all as
0.0.0.0/0 or ::/0 MASQUERADE.  A configured CIDR that another of its list covers is
not stored; it reads 0, as its never-reached rule does in the iptables chain.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from masq.core.addresses import (
    Family,
    IPNetwork,
    cidr_key,
    every_destination,
    family_range,
    holds,
)
from masq.core.config import MasqConfig
from masq.core.decision import FamilyDecision, Kind
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable, set_name
from masq.core.traffic import (
    OTHER_CIDRS,
    CidrTraffic,
    Counted,
    Counters,
    TrafficAction,
    summed,
)


def _counted(table: NftTable, decisions: Iterable[FamilyDecision]) -> Iterator[Counted]:
    for s in table.sets.values():
        if s.kind is None:
            continue  # not a set the agent writes: no CIDR of its config
        action = dict(_KIND_ACTIONS)[s.kind]
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


# --- a scrape that reads what it shows ---------------------------------------------

Series = tuple[IPNetwork, TrafficAction]
"""One per-CIDR series of a family: its CIDR and what its traffic got."""


@dataclass(frozen=True, slots=True)
class ScrapePlan:
    """What a refreshing scrape shows and reads, decided from the desired table alone.

    ``shown``: per family, the first ``max_series`` series in the order the metrics cap
    them (canonical CIDR order, then action), as ``traffic_of`` and the cap would pick
    them; ``reads``: per set, the shown CIDRs that are its elements (the only element
    counters read); ``hidden``: per family, the actions with series past the cap (each
    gets one ``cidr="other"`` series: its lookup rules' totals minus what is shown);
    ``labels``: per family, each shown series' ``cidr`` label.  A plan depends on the
    desired table and the config only, so the dataplane keeps it while they stay.
    """

    shown: Mapping[Family, tuple[Series, ...]]
    reads: Mapping[str, tuple[IPNetwork, ...]]
    hidden: Mapping[Family, tuple[TrafficAction, ...]]
    labels: Mapping[Family, tuple[str, ...]]


def _rule_series(table: NftTable) -> list[tuple[int, Family, Series]]:
    """The counted rules that are series of their own, by position in the base chain: the
    link-local return and each family's catch-all (as ``traffic_of`` reads them)."""
    chain = table.chains.get(POSTROUTING_CHAIN)
    out: list[tuple[int, Family, Series]] = []
    for i, rule in enumerate(chain.rules if chain else ()):
        if not rule.counter:
            continue
        if rule.verdict == "return" and rule.family is not None and rule.daddr is not None:
            out.append((i, rule.family, (rule.daddr, "RETURN")))
        elif rule.verdict == "jump" and rule.daddr is None and rule.daddr_set is None:
            family: Family = rule.nfproto or "ipv4"
            out.append((i, family, (every_destination(family), "MASQUERADE")))
    return out


_KIND_ACTIONS: tuple[tuple[Kind, TrafficAction], ...] = (
    ("masquerade", "MASQUERADE"),
    ("non-masquerade", "RETURN"),
)
"""What traffic counted in each set got."""


def _series_order(series: Series) -> tuple[tuple[int, int, int], str]:
    return cidr_key(series[0]), series[1]


def scrape_plan(
    table: NftTable, config: MasqConfig, families: Iterable[Family], max_series: int
) -> ScrapePlan:
    """The series a capped scrape shows, found by merging the config's ordered lists
    lazily (a bisect for each family's part, then ``max_series`` steps), and the elements
    it must read for them."""
    rules = _rule_series(table)
    shown: dict[Family, tuple[Series, ...]] = {}
    reads: dict[str, list[IPNetwork]] = {}
    hidden: dict[Family, tuple[TrafficAction, ...]] = {}
    lists = {"MASQUERADE": config.masquerade_cidrs, "RETURN": config.non_masquerade_cidrs}
    for f in families:
        masq, non = family_range(lists["MASQUERADE"], f), family_range(lists["RETURN"], f)
        extra = sorted((s for _, fam, s in rules if fam == f), key=_series_order)
        streams: list[Iterator[Series]] = [
            ((lists["MASQUERADE"][i], "MASQUERADE") for i in masq),
            ((lists["RETURN"][i], "RETURN") for i in non),
            iter(extra),
        ]
        picked: list[Series] = []
        for series in heapq.merge(*streams, key=_series_order):
            if len(picked) == max_series:
                break
            if not picked or _series_order(picked[-1]) != _series_order(series):
                picked.append(series)
        shown[f] = tuple(picked)
        totals: dict[TrafficAction, int] = {"MASQUERADE": len(masq), "RETURN": len(non)}
        for net, action in extra:
            totals[action] += not holds(lists[action], net)
        counts = Counter(action for _, action in picked)
        hidden[f] = tuple(a for a in ("MASQUERADE", "RETURN") if totals[a] > counts[a])
        for kind, action in _KIND_ACTIONS:
            s = table.sets.get(set_name(kind, f))
            if s is not None:
                reads[s.name] = [n for n, a in picked if a == action and n in s.elements]
    labels = {f: tuple(str(net) for net, _ in series) for f, series in shown.items()}
    return ScrapePlan(shown, {n: tuple(v) for n, v in reads.items()}, hidden, labels)


_ZERO = Counters(0, 0)


def _add(a: Counters | None, b: Counters | None) -> Counters | None:
    if a is None or b is None:
        return a or b
    return Counters(a.packets + b.packets, a.bytes + b.bytes)


def scraped(
    plan: ScrapePlan,
    table: NftTable,
    elements: Mapping[str, Mapping[IPNetwork, Counters | None]],
    rules: Sequence[Counters | None],
) -> dict[Family, tuple[CidrTraffic, ...]]:
    """The capped series from the counters a scrape read: ``elements`` per set (the
    plan's ``reads``), ``rules`` by position in the desired base chain.  ``other`` is,
    per action, the lookup rules' and the counted rules' total minus the shown series
    (never below 0: an element re-added restarts its counter, the rule's does not)."""
    chain = table.chains.get(POSTROUTING_CHAIN)
    own = {(f, s): rules[i] for i, f, s in _rule_series(table) if i < len(rules)}
    totals: dict[tuple[Family, TrafficAction], Counters | None] = {}
    for i, rule in enumerate(chain.rules if chain else ()):
        if rule.daddr_set is None or i >= len(rules) or rule.family is None:
            continue
        kind = table.sets[rule.daddr_set].kind if rule.daddr_set in table.sets else None
        if kind is not None:
            key = (rule.family, dict(_KIND_ACTIONS)[kind])
            totals[key] = _add(totals.get(key), rules[i])
    for (f, (_, action)), counters in own.items():
        totals[(f, action)] = _add(totals.get((f, action)), counters)
    out: dict[Family, tuple[CidrTraffic, ...]] = {}
    nothing: Mapping[IPNetwork, Counters | None] = {}
    for f, shown in plan.shown.items():
        rows: list[CidrTraffic] = []
        seen: dict[TrafficAction, Counters] = {}
        read = {a: elements.get(set_name(k, f), nothing) for k, a in _KIND_ACTIONS}
        of_family = {s: c for (fam, s), c in own.items() if fam == f}
        for (net, action), label in zip(shown, plan.labels[f], strict=True):
            counted = read[action].get(net)
            if of_family:
                counted = _add(counted, of_family.get((net, action)))
            counters = counted or _ZERO
            seen[action] = _add(seen.get(action), counters) or counters
            rows.append(CidrTraffic(f, label, action, counters.packets, counters.bytes))
        for action in plan.hidden.get(f, ()):
            total = totals.get((f, action)) or _ZERO
            part = seen.get(action) or _ZERO
            rows.append(
                CidrTraffic(
                    f,
                    OTHER_CIDRS,
                    action,
                    max(0, total.packets - part.packets),
                    max(0, total.bytes - part.bytes),
                )
            )
        out[f] = tuple(rows)
    return out
