"""The rule text the agent must write, spelled out independently of the code under test.

This is the specification the agent's output is checked against: upstream's comments and
README's rule block, exactly as ``iptables-save`` prints them, and the default
``nonMasqueradeCIDRs`` (RFC 1918, or every reserved IPv4 range).  Nothing here imports
``masq``: a bug in the library cannot leak into what the tests expect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal

Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)

DEFAULT_CHAIN = "IP-MASQ-AGENT"

# Comments exactly as upstream (v1 and v2) and README's rule block spell them.
JUMP_COMMENT = (
    "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
    "to our custom {chain} chain"
)
RETURN_COMMENT = "ip-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_EXCEPTION_COMMENT = "ip-masq-agent: destination is in masqueradeCIDRs"
FINAL_COMMENT = "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"

RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
"""The default nonMasqueradeCIDRs (v1 and v2)."""
RESERVED = (
    *RFC1918,
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
)
"""The default nonMasqueradeCIDRs with ``--nomasq-all-reserved-ranges``, in upstream's order
(v1/v2 ``NewMasqConfigWithReservedRanges``)."""


def canonical(cidrs: Iterable[str]) -> list[str]:
    """Deduplicated, in the agent's canonical order (family, network address, prefix)."""
    nets = {ipaddress.ip_network(c) for c in cidrs}
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return [str(n) for n in ordered]


def jump_rule(chain: str = DEFAULT_CHAIN) -> str:
    comment = JUMP_COMMENT.format(chain=chain)
    return (
        f'-A POSTROUTING -m comment --comment "{comment}" -m addrtype ! --dst-type LOCAL -j {chain}'
    )


def expected_rules(
    non_masquerade: Iterable[str],
    masquerade: Iterable[str] = (),
    *,
    chain: str = DEFAULT_CHAIN,
    family: Family = 4,
    keep_link_local: bool = True,
    random_fully: bool = True,
) -> list[str]:
    """Our chain for a config, in order: exceptions, link-local, RETURNs, final MASQUERADE."""
    rf = " --random-fully" if random_fully else ""
    keep = [c for c in canonical(non_masquerade) if (":" in c) == (family == 6)]
    masq = [c for c in canonical(masquerade) if (":" in c) == (family == 6)]
    lines = [
        f'-A {chain} -d {c} -m comment --comment "{MASQ_EXCEPTION_COMMENT}" -j MASQUERADE{rf}'
        for c in masq
    ]
    if keep_link_local:
        link_local = "fe80::/10" if family == 6 else "169.254.0.0/16"
        keep = [link_local, *keep]
    lines += [f'-A {chain} -d {c} -m comment --comment "{RETURN_COMMENT}" -j RETURN' for c in keep]
    lines.append(f'-A {chain} -m comment --comment "{FINAL_COMMENT}" -j MASQUERADE{rf}')
    return lines


def counted(save_text: str, chain: str) -> dict[str, str]:
    """``iptables-save -c`` lines of one chain: rule text -> its ``[packets:bytes]``."""
    out = {}
    for line in save_text.splitlines():
        if line.startswith("[") and f"] -A {chain} " in line:
            counters, rule = line.split(" ", 1)
            out[rule] = counters
    return out
