"""The masquerade decision for one destination, straight from the config.

This is the specification the rendered chain is tested against, so it is
written as the rule reads, not as the chain is built.
"""

from __future__ import annotations

import ipaddress

from masq.core.model import LINK_LOCAL_V4, LINK_LOCAL_V6, IPAddress, MasqConfig


def should_masquerade(config: MasqConfig, ip: str | IPAddress) -> bool:
    """True when traffic to non-LOCAL ``ip`` leaves with the node's address.

    ``ip`` is trusted, program-level input: a string that is not an IPv4/IPv6
    address raises ``ValueError`` (as ``ipaddress.ip_address`` does).
    """
    address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if any(address in net for net in config.masquerade_cidrs):
        return True
    if address.version == 4:
        if address in LINK_LOCAL_V4 and not config.masq_link_local:
            return False
    elif address in LINK_LOCAL_V6 and not config.masq_link_local_ipv6:
        return False
    return not any(address in net for net in config.non_masquerade_cidrs)
