"""Addresses and CIDRs: parsing them strictly, ordering them one way, covering arithmetic.

The stdlib parser alone is not enough for config text: it accepts a bare address
(an implicit /32) and scoped IPv6 (``fe80::%eth0/64``).  The character check runs
first, so whitespace, quotes or iptables words can never slip through into a rule.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any, Literal, cast

from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError, invalid

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Span = tuple[int, int, int]
"""(IP version, first address, last address) as integers: CIDR arithmetic without objects."""

_SHAPE = re.compile(r"[0-9A-Fa-f:.]+/(?:0|[1-9][0-9]{0,2})", re.ASCII)


def enabled_families(enable_ipv6: bool) -> tuple[Family, ...]:
    """The families the agent writes for: IPv4 always, IPv6 with ``--enable-ipv6``."""
    return FAMILIES if enable_ipv6 else FAMILIES[:1]


def family_of(net: IPNetwork | IPAddress) -> Family:
    return "ipv4" if net.version == 4 else "ipv6"


def every_destination(family: Family) -> IPNetwork:
    """What a match without a destination covers (0.0.0.0/0 or ::/0)."""
    return ipaddress.IPv4Network("0.0.0.0/0") if family == "ipv4" else ipaddress.IPv6Network("::/0")


def cidr_key(net: IPNetwork) -> tuple[int, int, int]:
    """Canonical order of CIDRs everywhere: family, network address, prefix length."""
    return (net.version, int(net.network_address), net.prefixlen)


def sorted_cidrs(nets: Iterable[IPNetwork]) -> PVector[IPNetwork]:
    """Deduplicated, canonically ordered vector (the only order the core ever emits).

    Equal CIDRs have equal keys, so duplicates are dropped after sorting: hashing
    ``ipaddress`` networks (Python-level ``__hash__``) costs more than the sort.
    """
    out: list[IPNetwork] = []
    last: tuple[int, int, int] | None = None
    for key, net in sorted(((cidr_key(n), n) for n in nets), key=itemgetter(0)):
        if key != last:
            out.append(net)
            last = key
    return pvector(out)


def of_family(nets: Iterable[IPNetwork], family: Family) -> PVector[IPNetwork]:
    """The CIDRs of one family, in canonical order."""
    return sorted_cidrs(n for n in nets if family_of(n) == family)


def family_range(nets: Sequence[IPNetwork], family: Family) -> range:
    """The index range of ``family``'s CIDRs in the canonically ordered ``nets`` (IPv4
    first): two bisects, so counting or walking one family never visits the other's."""
    version = 4 if family == "ipv4" else 6
    lo = bisect.bisect_left(nets, (version, 0, 0), key=cidr_key)
    return range(lo, bisect.bisect_left(nets, (version + 1, 0, 0), key=cidr_key))


def holds(nets: Sequence[IPNetwork], net: IPNetwork) -> bool:
    """Whether the canonically ordered ``nets`` hold ``net`` (one bisect)."""
    key = cidr_key(net)
    i = bisect.bisect_left(nets, key, key=cidr_key)
    return i < len(nets) and cidr_key(nets[i]) == key


def inside(nets: Sequence[IPNetwork], net: IPNetwork) -> Sequence[IPNetwork]:
    """The CIDRs of the canonically ordered ``nets`` within ``net`` (``net`` included), and
    ``net``'s supernets that start where it starts: one bisect range."""
    version, first, last = span(net)
    lo = bisect.bisect_left(nets, (version, first, 0), key=cidr_key)
    hi = bisect.bisect_right(nets, (version, last, 255), key=cidr_key)
    return nets[lo:hi]


def supernets(nets: Sequence[IPNetwork], net: IPNetwork) -> list[IPNetwork]:
    """The CIDRs of the canonically ordered ``nets`` that cover ``net`` strictly (a bisect
    per shorter prefix)."""
    version, first, _ = span(net)
    found: list[IPNetwork] = []
    for prefix in range(net.prefixlen):
        size = 1 << (net.max_prefixlen - prefix)
        key = (version, first - first % size, prefix)
        i = bisect.bisect_left(nets, key, key=cidr_key)
        if i < len(nets) and cidr_key(nets[i]) == key:
            found.append(nets[i])
    return found


def edited_cidrs(
    before: Sequence[IPNetwork], added: Iterable[IPNetwork], removed: Iterable[IPNetwork]
) -> PVector[IPNetwork]:
    """The canonically ordered ``before`` without ``removed`` (each present) and with
    ``added`` (each absent): a bisect per CIDR, and one copy of the vector."""
    out = list(before)
    for net in removed:
        del out[bisect.bisect_left(out, cidr_key(net), key=cidr_key)]
    for net in added:
        out.insert(bisect.bisect_left(out, cidr_key(net), key=cidr_key), net)
    return pvector(out)


def span(net: IPNetwork) -> Span:
    first = int(net.network_address)
    return (net.version, first, first + (1 << (net.max_prefixlen - net.prefixlen)) - 1)


def uncovered(nets: Iterable[IPNetwork]) -> PVector[IPNetwork]:
    """The CIDRs no other CIDR of ``nets`` covers, in canonical order.

    CIDRs nest or are disjoint, so in canonical order a covered CIDR comes after
    the one covering it: one pass keeping the last kept span decides.  Adjacent
    CIDRs are not merged (each stays its own element with its own counter).
    """
    return uncovered_of_ordered(sorted_cidrs(nets))


def uncovered_of_ordered(nets: Iterable[IPNetwork]) -> PVector[IPNetwork]:
    """``uncovered`` of CIDRs already deduplicated and in canonical order (no sort)."""
    kept: list[IPNetwork] = []
    end: tuple[int, int] = (0, -1)  # (version, last address) of the last kept CIDR
    for net in nets:
        version, _, last = span(net)
        if version == end[0] and last <= end[1]:
            continue
        kept.append(net)
        end = (version, last)
    return pvector(kept)


_BYTE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_CANONICAL = re.compile(rf"{_BYTE}\.{_BYTE}\.{_BYTE}\.{_BYTE}/(?:3[0-2]|[12]?[0-9])", re.ASCII)
"""An IPv4 CIDR exactly as ``ip_network`` prints one: octets 0-255 and a prefix of 0-32,
all without leading zeros (alignment is checked on the numbers)."""

_NETMASKS = tuple(ipaddress.IPv4Network((0, prefix)).netmask for prefix in range(33))
_NUMBERS = {str(number): number for number in range(256)}
_HOST_BITS = tuple((1 << (32 - prefix)) - 1 for prefix in range(33))


def parse_cidr(text: str) -> Result[IPNetwork, ConfigError]:
    """The canonical network for ``text``, or why it is not a plain, aligned CIDR.

    A valid IPv4 CIDR (nearly every entry of a long list) takes the batch's fast path: the
    shape ``_IPV4_CANONICAL`` and a lookup per number; everything else, and every error
    message, takes the general one.
    """
    if _IPV4_CANONICAL.fullmatch(text):
        a, b, c, d, prefix = map(_NUMBERS.__getitem__, text.replace("/", ".").split("."))
        value = a << 24 | b << 16 | c << 8 | d
        if not value & _HOST_BITS[prefix]:
            return Success(ipaddress.IPv4Network((value, prefix)))
    return _parse_cidr_checked(text)


def _parse_cidr_checked(text: str) -> Result[IPNetwork, ConfigError]:
    if not text:
        return Failure(invalid("empty CIDR"))
    if "/" not in text and _SHAPE.fullmatch(text + "/0"):
        return Failure(invalid("missing prefix length (write e.g. 10.0.0.0/8 or fd00::/8)", text))
    if _SHAPE.fullmatch(text) is None:
        return Failure(
            invalid(
                "not a plain CIDR (only an address and a prefix length, like 10.0.0.0/8 or"
                " fd00::/8; no spaces, quotes or other words)",
                text,
            )
        )
    address_text, prefix_text = text.split("/", 1)
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return Failure(
            invalid(
                "invalid address (IPv4 octets are 0-255 without leading zeros; IPv6 as in"
                " RFC 4291)",
                text,
            )
        )
    if int(prefix_text) > address.max_prefixlen:
        return Failure(
            invalid(f"prefix length over {address.max_prefixlen} for IPv{address.version}", text)
        )
    try:
        return Success(ipaddress.ip_network(text, strict=True))
    except ValueError:
        aligned = ipaddress.ip_network(text, strict=False)
        return Failure(invalid(f"host bits set (misaligned); did you mean {aligned}?", text))


def _assemble_ipv4_network(value: int, prefix: int) -> ipaddress.IPv4Network:
    """The network ``IPv4Network((value, prefix))`` gives, for an aligned ``value`` and a
    ``prefix`` of 0-30, built without its constructor's parsing and checks.

    The constructor leaves exactly three attributes (and a ``hosts`` override for /31 and
    /32, which therefore always take the constructor); assembling them directly costs a
    fifth as much.  ``_LAYOUT_HOLDS`` checks the layout once at import, so another Python
    whose ``ipaddress`` stores networks otherwise only loses the speed.
    """
    address: Any = object.__new__(ipaddress.IPv4Address)
    address._ip = value
    net: Any = object.__new__(ipaddress.IPv4Network)
    net.network_address = address
    net.netmask = _NETMASKS[prefix]
    net._prefixlen = prefix
    built: ipaddress.IPv4Network = net
    return built


def _layout_holds() -> bool:
    try:
        probes = [(0, 0), (0x0A000000, 8), (0xC0A80100, 24), (0xFFFFFFFC, 30)]
        return all(
            vars(_assemble_ipv4_network(v, p)) == vars(ipaddress.IPv4Network((v, p)))
            for v, p in probes
        )
    except (AttributeError, TypeError):
        return False


_LAYOUT_HOLDS = _layout_holds()


def parse_cidrs_sorted(texts: Sequence[object]) -> PVector[IPNetwork] | None:
    """``sorted_cidrs`` of every text's ``parse_cidr`` network when every item is a ``str``
    that ``parse_cidr`` accepts; ``None`` when one is not, and the caller takes the general
    path, which names the first error.

    A long list from a file is read as one batch: the IPv4 entries (every IPv4 text
    ``parse_cidr`` accepts is spelt as ``_IPV4_CANONICAL`` matches) by ``_ipv4_batch``, the
    few others (IPv6) one by one; IPv4 sorts before IPv6, so the two orders concatenate.
    No ``Result`` per IPv4 entry: those and the constructor were most of the cost of a
    10,000-entry file (90 ms; this batch: about 13 ms).
    """
    shape = _IPV4_CANONICAL.fullmatch
    others = [text for text in texts if type(text) is not str or shape(text) is None]
    if not others:
        return _ipv4_batch(texts)
    parsed: list[IPNetwork] = []
    for text in others:
        if not isinstance(text, str):
            return None
        match parse_cidr(text):
            case Success(net) if net.version == 6:
                parsed.append(net)
            case _:
                return None
    ipv4 = _ipv4_batch([text for text in texts if type(text) is str and shape(text)])
    return None if ipv4 is None else ipv4 + sorted_cidrs(parsed)


def _ipv4_batch(texts: Sequence[object]) -> PVector[IPNetwork] | None:
    """``parse_cidrs_sorted`` of texts that each match ``_IPV4_CANONICAL`` (``None`` if one
    has host bits set): every number converted in one pass, the networks assembled without
    their constructor, and an integer sort key (within IPv4: address, then prefix), so a
    list already in canonical order is not sorted again."""
    if not texts:
        return pvector()
    # Every number is an octet or a prefix (0-255, spelt canonically): a lookup, not int().
    joined = ".".join(cast("Sequence[str]", texts)).replace("/", ".")
    numbers = iter(map(_NUMBERS.__getitem__, joined.split(".")))
    nets: list[IPNetwork] = []
    keys: list[int] = []
    append, append_key = nets.append, keys.append
    in_order = True
    last_key = -1
    host_bits, netmasks = _HOST_BITS, _NETMASKS
    new, address_class, network_class = object.__new__, ipaddress.IPv4Address, ipaddress.IPv4Network
    address: Any
    net: Any
    for a, b, c, d, prefix in zip(numbers, numbers, numbers, numbers, numbers, strict=True):
        value = a << 24 | b << 16 | c << 8 | d
        if value & host_bits[prefix]:
            return None
        key = value << 6 | prefix  # canonical order within IPv4: address, then prefix
        in_order = in_order and last_key < key
        last_key = key
        append_key(key)
        if prefix > 30 or not _LAYOUT_HOLDS:
            append(network_class((value, prefix)))
            continue
        # _assemble_ipv4_network, inlined: a call per entry is a fifth of this loop.
        address = new(address_class)
        address._ip = value
        net = new(network_class)
        net.network_address = address
        net.netmask = netmasks[prefix]
        net._prefixlen = prefix
        append(net)
    if in_order:  # strictly increasing: sorted, and no duplicates
        return pvector(nets)
    out: list[IPNetwork] = []
    last_key = -1
    for key, net in sorted(zip(keys, nets, strict=True), key=itemgetter(0)):
        if key != last_key:
            out.append(net)
            last_key = key
    return pvector(out)


def parse_ip(text: str) -> Result[IPAddress, ConfigError]:
    """A bare IPv4/IPv6 address (no prefix, no zone), or why the text is not one."""
    stripped = text.strip()
    if "/" in stripped:
        return Failure(invalid("is a CIDR; give one address, such as 10.0.0.1", text))
    if "%" in stripped:
        return Failure(invalid("has an IPv6 zone; give the address without %zone", text))
    try:
        return Success(ipaddress.ip_address(stripped))
    except ValueError:
        return Failure(invalid("is not an IPv4 or IPv6 address", text))
