"""The flag-level choices that shape what a dataplane writes, for either dataplane.

They are not config (no file sets them) and not the decision (they do not change which
destination is masqueraded): the names of what the agent owns, whether IPv6 is
written, and how a masqueraded connection gets its source port.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masq.core.addresses import Family, enabled_families
from masq.core.names import DEFAULT_CHAIN, DEFAULT_TABLE
from masq.core.nat import NatOptions


@dataclass(frozen=True, slots=True)
class DataplaneOptions:
    """The iptables chain, the nftables table, IPv6 and NAT (each dataplane reads its own)."""

    chain: str = DEFAULT_CHAIN
    table: str = DEFAULT_TABLE
    enable_ipv6: bool = False
    nat: NatOptions = field(default_factory=NatOptions)

    @property
    def families(self) -> tuple[Family, ...]:
        return enabled_families(self.enable_ipv6)
