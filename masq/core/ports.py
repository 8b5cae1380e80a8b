"""v1's ``--to-ports`` intervals and iptables name rules, validated once at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass

from returns.result import Failure, Result, Success

MIN_PORT = 1
MAX_PORT = 65535
MAX_CHAIN_NAME = 28  # XT_EXTENSION_MAXNAMELEN - 1
_DIGITS = re.compile(r"[0-9]{1,5}")
_CHAIN_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space
# Names iptables refuses for a user chain: verdicts and the common target extensions.
RESERVED_TARGETS = frozenset(
    {
        "ACCEPT",
        "DROP",
        "QUEUE",
        "RETURN",
        "MASQUERADE",
        "SNAT",
        "DNAT",
        "REDIRECT",
        "REJECT",
        "LOG",
        "NFLOG",
        "MARK",
        "CONNMARK",
        "NETMAP",
        "CT",
        "TRACE",
        "NOTRACK",
        "TPROXY",
        "CLASSIFY",
        "DSCP",
        "TOS",
        "TCPMSS",
        "AUDIT",
        "CHECKSUM",
        "NFQUEUE",
        "SECMARK",
        "CONNSECMARK",
        "TTL",
        "HL",
        "ULOG",
        "IDLETIMER",
        "LED",
        "SYNPROXY",
        "TEE",
        "HMARK",
    }
)


@dataclass(frozen=True, slots=True)
class PortRange:
    """An inclusive port interval; ``str`` spells it as iptables prints ``--to-ports``."""

    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def _parse_port(text: str, whole: str) -> Result[int, str]:
    if not _DIGITS.fullmatch(text):
        return Failure(f"invalid --to-ports {whole!r}: {text!r} is not a port number")
    port = int(text)
    if not MIN_PORT <= port <= MAX_PORT:
        return Failure(f"invalid --to-ports {whole!r}: port {port} is outside 1..65535")
    return Success(port)


def _parse_range(part: str, whole: str) -> Result[PortRange, str]:
    bounds = part.split("-")
    if len(bounds) > 2:
        return Failure(f"invalid --to-ports {whole!r}: invalid interval {part!r}")
    first = _parse_port(bounds[0], whole)
    last = _parse_port(bounds[-1], whole)
    return first.bind(
        lambda a: last.bind(
            lambda b: (
                Success(PortRange(a, b))
                if a <= b
                else Failure(
                    f"invalid --to-ports {whole!r}: first is greater than last in {part!r}"
                )
            )
        )
    )


def parse_to_ports(text: str) -> Result[tuple[PortRange, ...], str]:
    """v1's syntax, e.g. ``1024-29999,32768-65535``; order is kept (it shapes the rules)."""
    ranges: list[PortRange] = []
    for part in text.split(","):
        parsed = _parse_range(part, text)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        ranges.append(parsed.unwrap())
    return Success(tuple(ranges))


def valid_chain_name(name: str) -> bool:
    """Whether iptables accepts ``name`` for a user chain that our parser can read back."""
    return (
        0 < len(name) <= MAX_CHAIN_NAME
        and _CHAIN_CHARS.fullmatch(name) is not None
        and name[0] not in "-!"
        and not any(c in name for c in "\"'\\")
        and name not in RESERVED_TARGETS
        and name not in {"PREROUTING", "POSTROUTING", "INPUT", "OUTPUT", "FORWARD"}
    )
