"""How a masqueraded connection gets its source port: v1's ``--to-ports`` and random-fully.

Both dataplanes spread connections over the port ranges the same way v1 does: per
protocol, range i takes ``size_i / remaining`` of what the ranges before it left,
so each range ends up with a share proportional to its size.  ``spread`` computes
those shares once; each codec spells them (an iptables ``statistic`` probability,
an nftables ``numgen random mod remaining < size``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError, collect

MIN_PORT = 1
MAX_PORT = 65535
TO_PORTS_PROTOCOLS = ("tcp", "udp", "sctp")  # v1's order
PROBABILITY_SCALE = 2**31  # xt_statistic stores a probability as a multiple of 2**-31
TO_PORTS_FLAG = "--to-ports"
_DIGITS = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True, order=True)
class PortRange:
    """An inclusive port interval; ``str`` spells it as iptables prints ``--to-ports``."""

    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


@dataclass(frozen=True, slots=True)
class Share:
    """One range's turn: taken for ``size`` out of ``remaining`` connections left to it.

    ``size == remaining`` means the range takes all that is left (no random match).
    """

    ports: PortRange
    size: int
    remaining: int

    @property
    def unconditional(self) -> bool:
        return self.size == self.remaining

    @property
    def probability(self) -> float:
        """The share at the kernel's xt_statistic resolution, so it reads back equal."""
        return kernel_probability(self.size / self.remaining)


@dataclass(frozen=True, slots=True)
class NatOptions:
    """What a MASQUERADE does beyond rewriting the source address."""

    random_fully: bool = True
    to_ports: tuple[PortRange, ...] = ()


def kernel_probability(p: float) -> float:
    """``p`` rounded as xt_statistic stores it (lround(p * 2**31) / 2**31).

    The one rounding of probabilities: rules are built with it and listings are
    read back through it, so a rule we wrote compares equal to what we read.
    """
    return math.floor(p * PROBABILITY_SCALE + 0.5) / PROBABILITY_SCALE


def spread(ranges: tuple[PortRange, ...]) -> tuple[Share, ...]:
    """v1's order and proportions: each range takes its size out of what is left."""
    remaining = sum(r.size for r in ranges)
    shares = []
    for r in ranges:
        shares.append(Share(r, r.size, remaining))
        remaining -= r.size
    return tuple(shares)


def _error(whole: str, message: str) -> ConfigError:
    return ConfigError(TO_PORTS_FLAG, message, value=whole)


def _parse_port(text: str, whole: str) -> Result[int, ConfigError]:
    if not _DIGITS.fullmatch(text):
        return Failure(_error(whole, f"{text!r} is not a port number"))
    port = int(text)
    if not MIN_PORT <= port <= MAX_PORT:
        return Failure(_error(whole, f"port {port} is outside 1..65535"))
    return Success(port)


def parse_port_range(part: str, whole: str | None = None) -> Result[PortRange, ConfigError]:
    """``a`` or ``a-b`` with 1 <= a <= b <= 65535."""
    context = part if whole is None else whole
    bounds = part.split("-")
    if len(bounds) > 2:
        return Failure(_error(context, f"invalid interval {part!r}"))
    return _parse_port(bounds[0], context).bind(
        lambda first: _parse_port(bounds[-1], context).bind(
            lambda last: (
                Success(PortRange(first, last))
                if first <= last
                else Failure(_error(context, f"first is greater than last in {part!r}"))
            )
        )
    )


def parse_to_ports(text: str) -> Result[tuple[PortRange, ...], ConfigError]:
    """v1's syntax, e.g. ``1024-29999,32768-65535``; order is kept (it shapes the rules)."""
    return collect(parse_port_range(part, text) for part in text.split(","))


def format_to_ports(ranges: tuple[PortRange, ...]) -> str:
    """The flag's own spelling of parsed ranges."""
    return ",".join(str(r) for r in ranges)
