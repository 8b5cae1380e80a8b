"""Per-CIDR traffic from the counters of our iptables chain."""

from __future__ import annotations

from masq.core.addresses import every_destination
from masq.core.iptables.model import Ruleset
from masq.core.names import POSTROUTING
from masq.core.traffic import CidrTraffic, Verdict


def traffic_of(ruleset: Ruleset) -> tuple[CidrTraffic, ...]:
    """Per (cidr, action) counters of our chain(s), in chain order.

    Every chain but POSTROUTING is ours (the sync lists only what it owns).  Rules
    sharing labels (v1's --to-ports rules are all catch-all MASQUERADEs) are summed,
    since a label set may appear only once.  Rules without counters are skipped.
    """
    sums: dict[tuple[str, Verdict], list[int]] = {}
    for name in sorted(ruleset.chains):
        if name == POSTROUTING:
            continue
        for rule in ruleset.chains[name].rules:
            if rule.counters is None or rule.action not in ("RETURN", "MASQUERADE"):
                continue
            net = rule.destination
            cidr = str(every_destination(ruleset.family) if net is None else net)
            verdict: Verdict = "RETURN" if rule.action == "RETURN" else "MASQUERADE"
            acc = sums.setdefault((cidr, verdict), [0, 0])
            acc[0] += rule.counters.packets
            acc[1] += rule.counters.bytes
    return tuple(
        CidrTraffic(ruleset.family, cidr, action, packets, nbytes)
        for (cidr, action), (packets, nbytes) in sums.items()
    )
