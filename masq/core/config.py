"""The effective config (what every file said, merged, defaults applied) and its defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pyrsistent import pmap, pvector
from pyrsistent.typing import PMap, PVector

from masq.core.addresses import IPNetwork

DEFAULT_CIDR_LIMIT = 64
DEFAULT_RESYNC_SECONDS = 60.0
MIN_RESYNC_SECONDS = 1.0
"""A floor under the effective resync interval: ``resyncInterval: 1ns`` would otherwise make
the daemon resync back to back (config changes still apply at once, through inotify)."""
RFC1918: tuple[IPNetwork, ...] = tuple(
    ipaddress.IPv4Network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
"""Default ``nonMasqueradeCIDRs``."""
RESERVED_RANGES: tuple[IPNetwork, ...] = RFC1918 + tuple(
    ipaddress.IPv4Network(c)
    for c in (
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
    )
)
"""Default ``nonMasqueradeCIDRs`` with ``--nomasq-all-reserved-ranges``."""


@dataclass(frozen=True, slots=True)
class ListChange:
    """How one CIDR list of a config follows from the list ``before`` of an earlier one:
    ``after`` is ``before`` without ``removed``, with ``added`` (both in canonical order).

    ``before`` and ``after`` are compared by identity: a list rebuilt or replaced since
    is not the one this change speaks of, and a consumer then starts from scratch.
    """

    before: PVector[IPNetwork]
    after: PVector[IPNetwork]
    added: tuple[IPNetwork, ...]
    removed: tuple[IPNetwork, ...]

    def follows(self, before: PVector[IPNetwork], after: PVector[IPNetwork]) -> bool:
        return self.before is before and self.after is after


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """The CIDR lists' changes from the config an incremental merge started from, by key
    (``nonMasqueradeCIDRs``, ``masqueradeCIDRs``): what lets the desired dataplane state
    be derived from the earlier one at the cost of the change."""

    lists: PMap[str, ListChange] = field(default_factory=pmap)


@dataclass(frozen=True, slots=True)
class MasqConfig:
    """The effective configuration after merge and defaults.

    CIDR vectors are deduplicated and in canonical order (``addresses.cidr_key``),
    so two configs that mean the same are equal and render the same.  ``change``
    (never compared) is what an incremental merge knows of the config before.
    """

    non_masquerade_cidrs: PVector[IPNetwork] = field(default_factory=pvector)
    masquerade_cidrs: PVector[IPNetwork] = field(default_factory=pvector)
    masq_link_local: bool = False
    masq_link_local_ipv6: bool = False
    resync_interval: float = DEFAULT_RESYNC_SECONDS
    cidr_limit: int = DEFAULT_CIDR_LIMIT
    output_interfaces: PVector[str] = field(default_factory=pvector)
    """Egress selection: only packets leaving through one of these are decided (empty: any).
    Sorted; an entry ending in ``*`` is a prefix pattern (``egress.interface_matches``)."""
    source_cidrs: PVector[IPNetwork] = field(default_factory=pvector)
    """Egress selection: only packets from these sources are decided (empty: any source)."""
    output_address: ipaddress.IPv4Address | None = None
    """SNAT to this address instead of MASQUERADE (IPv4); None: MASQUERADE."""
    output_address_ipv6: ipaddress.IPv6Address | None = None
    change: ConfigChange | None = field(default=None, compare=False, repr=False)


def effective_resync(flag_seconds: float, config: MasqConfig) -> float:
    """Seconds between resyncs: the shorter of the flag and the config, never under the floor."""
    return max(MIN_RESYNC_SECONDS, min(flag_seconds, config.resync_interval))
