"""Per-CIDR traffic from the counters of our iptables chain."""

from __future__ import annotations

from collections.abc import Iterator

from masq.core.addresses import Family, every_destination
from masq.core.iptables.model import Ruleset
from masq.core.names import POSTROUTING
from masq.core.traffic import CidrTraffic, Counted, TrafficAction, summed


def _counted(ruleset: Ruleset) -> Iterator[Counted]:
    for name in sorted(ruleset.chains):
        if name == POSTROUTING:
            continue
        for rule in ruleset.chains[name].rules:
            if rule.counters is None or rule.action not in ("RETURN", "MASQUERADE", "SNAT"):
                continue
            net = rule.destination
            cidr = str(every_destination(ruleset.family) if net is None else net)
            action: TrafficAction = "RETURN" if rule.action == "RETURN" else "MASQUERADE"
            yield ruleset.family, cidr, action, rule.counters


def traffic_of(ruleset: Ruleset) -> dict[Family, tuple[CidrTraffic, ...]]:
    """Per (cidr, action) counters of our chain(s), in chain order, for the ruleset's family.

    Every chain but POSTROUTING is ours (the sync lists only what it owns).  Rules
    sharing labels (v1's --to-ports rules are all catch-all MASQUERADEs; egress selection
    writes a masquerading rule once per source and interface) are summed; an SNAT to
    ``outputAddress*`` counts as MASQUERADE, the action the labels know.
    Rules without counters are skipped.
    """
    return summed(_counted(ruleset))
