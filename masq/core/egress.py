"""Egress selection: which output interfaces and which SNAT addresses the config may name.

Interface names follow the kernel's own rules (``dev_valid_name``: non-empty, at most
15 bytes, not ``.`` or ``..``, no ``/``, ``:`` or whitespace), narrowed to what both
dataplanes can carry verbatim in rule text: printable ASCII without quotes or
backslashes.  One trailing ``*`` makes a name a prefix pattern (``eth*``: every name
starting ``eth``, ``eth`` itself included); iptables spells it ``eth+`` and nft
``"eth*"``, so neither ``+`` nor a ``*`` anywhere else is allowed in a name, where the
two dataplanes would read it differently.

An SNAT address must be a unicast host address of its key's family: the kernel would
send packets from a network, multicast, broadcast, unspecified or loopback source
that no reply can reach.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.addresses import Family, IPAddress, parse_ip
from masq.core.errors import ConfigError, invalid

WILDCARD: Final = "*"
"""The config's one spelling of "any name starting with what comes before"."""
MAX_INTERFACE_BYTES: Final = 15  # IFNAMSIZ - 1
_REFUSED: Final = frozenset("/:\"'\\+*")


def parse_interface(text: str) -> Result[str, ConfigError]:
    """``text`` as an interface name or a trailing-wildcard pattern, or why it is neither."""
    if not text:
        return Failure(invalid("empty interface name"))
    if text in (".", ".."):
        return Failure(invalid("not an interface name (the kernel refuses . and ..)", text))
    if len(text.encode("utf-8")) > MAX_INTERFACE_BYTES:
        return Failure(
            invalid(f"interface name over {MAX_INTERFACE_BYTES} bytes (the kernel's limit)", text)
        )
    name = text.removesuffix(WILDCARD)
    if not name:
        return Failure(
            invalid(f"a lone {WILDCARD} selects every interface: leave outputInterfaces out", text)
        )
    bad = sorted({c for c in name if c in _REFUSED or not "!" <= c <= "~"})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return Failure(
            invalid(
                f"interface name has {shown}: allowed are printable ASCII without whitespace,"
                f" / : quotes \\ or +, and {WILDCARD} only once, at the end",
                text,
            )
        )
    return Success(text)


def is_pattern(interface: str) -> bool:
    return interface.endswith(WILDCARD)


def interface_matches(interface: str, name: str) -> bool:
    """Whether the kernel's output interface ``name`` is selected by ``interface``."""
    if is_pattern(interface):
        return name.startswith(interface[: -len(WILDCARD)])
    return name == interface


@dataclass(frozen=True, slots=True)
class Packet:
    """What an evaluator may match besides the destination: the packet's source address and
    output interface.  None: not known (as for ``--explain`` without them), and then a rule
    that matches on it is taken to match."""

    source: IPAddress | None = None
    interface: str | None = None


ANY_PACKET: Final = Packet()


def sorted_interfaces(interfaces: Iterable[str]) -> PVector[str]:
    """Deduplicated, sorted (the one order rules and sets are written in)."""
    return pvector(sorted(set(interfaces)))


def uncovered_interfaces(interfaces: Iterable[str]) -> PVector[str]:
    """The entries no other entry selects a superset of (``eth0`` goes beside ``eth*``)."""
    given = sorted_interfaces(interfaces)
    return pvector(
        i
        for i in given
        if not any(
            p != i and is_pattern(p) and interface_matches(p, i.removesuffix(WILDCARD))
            for p in given
        )
    )


_FAMILY_WORD: Final[dict[Family, str]] = {"ipv4": "IPv4", "ipv6": "IPv6"}


def parse_output_address(text: str, family: Family) -> Result[IPAddress, ConfigError]:
    """A unicast host address of ``family`` to SNAT to, or why ``text`` is not one."""
    return parse_ip(text).bind(lambda ip: _host_address(ip, family, text))


def _host_address(ip: IPAddress, family: Family, text: str) -> Result[IPAddress, ConfigError]:
    want = _FAMILY_WORD[family]
    if (ip.version == 4) != (family == "ipv4"):
        return Failure(invalid(f"not an {want} address", text))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return Failure(invalid("an IPv4-mapped address; give it in outputAddress", text))
    refused = (
        (ip.is_unspecified, "an unspecified"),
        (ip.is_multicast, "a multicast"),
        (ip == ipaddress.IPv4Address("255.255.255.255"), "a broadcast"),
        (ip.is_loopback, "a loopback"),
    )
    what = next((what for hit, what in refused if hit), None)
    if what is not None:
        return Failure(invalid(f"{what} address: expected a unicast {want} host address", text))
    return Success(ip)
