"""Kernel traffic counters, per rule or set element, and per CIDR as metrics report them.

Each dataplane says which counter belongs to which (family, CIDR, action); summing them
into one series per label set happens here, once, for both dataplanes and for the
metrics' overflow series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from masq.core.addresses import Family

OTHER_CIDRS = "other"
"""The ``cidr`` label of the series that sums a family's CIDRs past the series cap."""
TrafficAction = Literal["RETURN", "MASQUERADE"]
"""What traffic counted under a CIDR got: kept its source (RETURN) or masqueraded."""


@dataclass(frozen=True, slots=True)
class Counters:
    """Kernel packet/byte counters of one rule or set element, as last observed."""

    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CidrTraffic:
    """Counters of everything that decided one (family, CIDR, action), summed."""

    family: Family
    cidr: str
    action: TrafficAction
    packets: int
    bytes: int


Traffic = Mapping[Family, tuple[CidrTraffic, ...]]
"""Per-CIDR counters per family, as one listing showed them."""

Counted = tuple[Family, str, TrafficAction, Counters | None]
"""One counter and the series it belongs to (None: the series exists, nothing counted)."""


def summed(counted: Iterable[Counted]) -> dict[Family, tuple[CidrTraffic, ...]]:
    """One row per (family, CIDR, action), its counters summed, in the order first seen.

    A label set may appear only once in an exposition, and several counters can fall
    under one (v1's --to-ports rules are all catch-all MASQUERADEs).
    """
    sums: dict[tuple[Family, str, TrafficAction], tuple[int, int]] = {}
    for family, cidr, action, counters in counted:
        packets, nbytes = sums.get((family, cidr, action), (0, 0))
        if counters is not None:
            packets, nbytes = packets + counters.packets, nbytes + counters.bytes
        sums[(family, cidr, action)] = (packets, nbytes)
    out: dict[Family, list[CidrTraffic]] = {}
    for (family, cidr, action), (packets, nbytes) in sums.items():
        out.setdefault(family, []).append(CidrTraffic(family, cidr, action, packets, nbytes))
    return {family: tuple(rows) for family, rows in out.items()}
