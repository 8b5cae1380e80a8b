"""Kernel traffic counters, per rule or set element, and per CIDR as metrics report them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from masq.core.addresses import Family

Verdict = Literal["RETURN", "MASQUERADE"]
"""What traffic counted under a CIDR got: kept its source (RETURN) or masqueraded."""


@dataclass(frozen=True, slots=True)
class Counters:
    """Kernel packet/byte counters of one rule or set element, as last observed."""

    packets: int
    bytes: int


@dataclass(frozen=True, slots=True)
class CidrTraffic:
    """Counters of everything that decided one (family, CIDR, verdict), summed."""

    family: Family
    cidr: str
    action: Verdict
    packets: int
    bytes: int
