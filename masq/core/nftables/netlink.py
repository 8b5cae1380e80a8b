"""nf_tables over netlink as bytes: the element messages and notifications the agent uses.

Sans-I/O, like the text codec beside it: this module turns set-element edits into the
bytes of one nfnetlink batch, a set's dump back into CIDRs with their counters, and a
notification into a small event.  Sockets, timeouts and errors of the kernel live in
``masq.shell.nft_elements``.

Intervals are sent as nft 1.0.6 sends them for a ``flags interval`` set: a start element
whose key is the first address, and an element flagged ``NFT_SET_ELEM_INTERVAL_END``
whose key is the first address *after* the range.  A range that ends at the top of the
address space has no end element (nothing follows it); its start carries nft's
``interval open`` user-data flag, which is what nft's own listing reads.  Adjacent ranges
share a key: the end of one and the start of the next differ only in the flag.  nft also
adds a lone end element at address 0 to an empty set (a "root" its old segment tree
wanted); the kernel does not need it, so this codec neither sends it nor reports it.

A set declared ``counter`` gives every new element a fresh counter in the kernel, so an
addition carries no expression unless it seeds one (``counter packets N bytes M``), which
is encoded as nft encodes it: ``NFTA_SET_ELEM_EXPR`` holding a ``counter``.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Final, Literal, NamedTuple

from masq.core.addresses import Family, IPNetwork, cidr_key
from masq.core.traffic import Counters

# --- constants of linux/netlink.h, linux/netfilter/nfnetlink.h and nf_tables.h ---

NETLINK_NETFILTER: Final = 12
NFNL_SUBSYS_NFTABLES: Final = 10
NFNLGRP_NFTABLES: Final = 7
NFNL_MSG_BATCH_BEGIN: Final = 0x10
NFNL_MSG_BATCH_END: Final = 0x11

NLM_F_REQUEST: Final = 0x1
NLM_F_MULTI: Final = 0x2
NLM_F_ACK: Final = 0x4
NLM_F_DUMP: Final = 0x300
NLM_F_CREATE: Final = 0x400
NLMSG_NOOP: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLMSG_OVERRUN: Final = 4
NLA_F_NESTED: Final = 0x8000
NLA_TYPE_MASK: Final = 0x3FFF

NFT_MSG: Final[dict[str, int]] = {
    "NEWTABLE": 0,
    "GETTABLE": 1,
    "DELTABLE": 2,
    "NEWCHAIN": 3,
    "GETCHAIN": 4,
    "DELCHAIN": 5,
    "NEWRULE": 6,
    "GETRULE": 7,
    "DELRULE": 8,
    "NEWSET": 9,
    "GETSET": 10,
    "DELSET": 11,
    "NEWSETELEM": 12,
    "GETSETELEM": 13,
    "DELSETELEM": 14,
    "NEWGEN": 15,
    "GETGEN": 16,
    "NEWOBJ": 18,
    "DELOBJ": 20,
    "NEWFLOWTABLE": 22,
    "DELFLOWTABLE": 24,
    "DESTROYTABLE": 26,
    "DESTROYCHAIN": 27,
    "DESTROYRULE": 28,
    "DESTROYSET": 29,
    "DESTROYSETELEM": 30,
    "DESTROYOBJ": 31,
    "DESTROYFLOWTABLE": 32,
}
NFPROTO: Final[dict[str, int]] = {"unspec": 0, "inet": 1, "ip": 2, "ip6": 10}
NFPROTO_NAMES: Final[dict[int, str]] = {v: k for k, v in NFPROTO.items()}

NFTA_SET_ELEM_LIST_TABLE: Final = 1
NFTA_SET_ELEM_LIST_SET: Final = 2
NFTA_SET_ELEM_LIST_ELEMENTS: Final = 3
NFTA_LIST_ELEM: Final = 1
NFTA_SET_ELEM_KEY: Final = 1
NFTA_SET_ELEM_FLAGS: Final = 3
NFTA_SET_ELEM_USERDATA: Final = 6
NFTA_SET_ELEM_EXPR: Final = 7
NFTA_SET_ELEM_EXPRESSIONS: Final = 11
NFTA_DATA_VALUE: Final = 1
NFTA_EXPR_NAME: Final = 1
NFTA_EXPR_DATA: Final = 2
NFTA_COUNTER_BYTES: Final = 1
NFTA_COUNTER_PACKETS: Final = 2
NFT_SET_ELEM_INTERVAL_END: Final = 1
NFTNL_UDATA_SET_ELEM_FLAGS: Final = 1
NFTNL_SET_ELEM_F_INTERVAL_OPEN: Final = 1
NFTA_GEN_ID: Final = 1
NFTA_GEN_PROC_PID: Final = 2
NFTA_GEN_PROC_NAME: Final = 3

HEADER: Final = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, portid
GENMSG: Final = struct.Struct(">BBH")  # nfgenmsg: family, version, res_id (big endian)
_ATTR = struct.Struct("=HH")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_ERRNO = struct.Struct("=i")

ELEMENTS_PER_NEST_BYTES: Final = 60_000
"""An attribute's length is 16 bits: a message's element list stays under it, and a larger
edit becomes several messages of the same batch."""

NftProto = Literal["ip", "ip6", "inet"]


def msg_type(name: str) -> int:
    """The nlmsg type of nf_tables message ``name`` (subsystem in the high byte)."""
    return (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG[name]


# --- attributes ---


def attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def strz(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attrs(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in ``data[start:end]``."""
    stop = len(data) if end is None else end
    at = start
    while at + 4 <= stop:
        length, kind = _ATTR.unpack_from(data, at)
        if length < 4 or at + length > stop:
            return
        yield kind & NLA_TYPE_MASK, at + 4, at + length
        at += (length + 3) & ~3


def attr_map(data: bytes, start: int = 0, end: int | None = None) -> dict[int, bytes]:
    return {kind: data[a:b] for kind, a, b in attrs(data, start, end)}


def text(value: bytes | None) -> str | None:
    return None if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def be32(value: bytes | None) -> int | None:
    return None if value is None or len(value) != 4 else int(_BE32.unpack(value)[0])


# --- messages ---


def message(kind: int, flags: int, seq: int, family: str, body: bytes, *, res_id: int = 0) -> bytes:
    """One nfnetlink message: header, nfgenmsg (version 0), attributes."""
    payload = GENMSG.pack(NFPROTO[family], 0, res_id) + body
    return HEADER.pack(HEADER.size + len(payload), kind, flags, seq, 0) + payload


@dataclass(frozen=True, slots=True)
class Reply:
    """One message the kernel sent: type, flags, sequence, sender portid, body after nlmsghdr."""

    kind: int
    flags: int
    seq: int
    portid: int
    body: bytes

    @property
    def error(self) -> int:
        """For NLMSG_ERROR: the positive errno (0 is an acknowledgement)."""
        return -int(_ERRNO.unpack_from(self.body, 0)[0])

    @property
    def family(self) -> str:
        return NFPROTO_NAMES.get(self.body[0], str(self.body[0])) if self.body else "unspec"

    @property
    def attributes(self) -> dict[int, bytes]:
        return attr_map(self.body, GENMSG.size)


def replies(data: bytes) -> Iterator[Reply]:
    """The messages in one datagram read from a netlink socket."""
    at = 0
    while at + HEADER.size <= len(data):
        length, kind, flags, seq, portid = HEADER.unpack_from(data, at)
        if length < HEADER.size or at + length > len(data):
            return
        yield Reply(kind, flags, seq, portid, data[at + HEADER.size : at + length])
        at += (length + 3) & ~3


# --- intervals ---


def _bits(family: Family) -> int:
    return 32 if family == "ipv4" else 128


_KEY_HEAD: Final[dict[int, bytes]] = {
    width: _ATTR.pack(8 + width, NFTA_SET_ELEM_KEY | NLA_F_NESTED)
    + _ATTR.pack(4 + width, NFTA_DATA_VALUE)
    for width in (4, 16)
}
"""The headers of a key nest and its value, for 4- and 16-byte addresses (no padding)."""


def _key(value: int, width: int) -> bytes:
    return _KEY_HEAD[width] + value.to_bytes(width, "big")


def _list_elem(payload: bytes) -> bytes:
    return _ATTR.pack(4 + len(payload), NFTA_LIST_ELEM | NLA_F_NESTED) + payload


def counter_expr(counters: Counters) -> bytes:
    """``counter packets N bytes M`` as an element expression (nft's order: bytes first)."""
    data = nest(
        NFTA_EXPR_DATA,
        attr(NFTA_COUNTER_BYTES, _BE64.pack(counters.bytes)),
        attr(NFTA_COUNTER_PACKETS, _BE64.pack(counters.packets)),
    )
    return nest(NFTA_SET_ELEM_EXPR, strz(NFTA_EXPR_NAME, "counter"), data)


_OPEN_UDATA = attr(
    NFTA_SET_ELEM_USERDATA,
    bytes([NFTNL_UDATA_SET_ELEM_FLAGS, 4]) + NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_bytes(4, "little"),
)
_END_FLAG = attr(NFTA_SET_ELEM_FLAGS, _BE32.pack(NFT_SET_ELEM_INTERVAL_END))
_START: Final[dict[int, bytes]] = {width: _list_elem(_key(0, width))[:-width] for width in (4, 16)}
_END: Final[dict[int, bytes]] = {
    width: _list_elem(_END_FLAG + _key(0, width))[:-width] for width in (4, 16)
}
"""What precedes the address in a start element and in an interval-end element without
counters, for 4- and 16-byte addresses: ``interval_elements`` appends the address alone."""


def interval_elements(net: IPNetwork, counters: Counters | None = None) -> list[bytes]:
    """The element nests of one CIDR: its start and, unless it reaches the top, its end."""
    return _interval_elements(cidr_key(net), counters)


def _interval_elements(key: tuple[int, int, int], counters: Counters | None) -> list[bytes]:
    """``interval_elements`` of the CIDR whose ``cidr_key`` is ``key``: the size comes from
    the prefix length, not ``num_addresses``, whose cached properties would leave two
    address objects on every network passed in."""
    version, first, prefix = key
    width = 4 if version == 4 else 16
    bits = width * 8
    after = first + (1 << (bits - prefix))
    if counters is None and not after >> bits:  # nearly every element: constant heads
        return [
            _START[width] + first.to_bytes(width, "big"),
            _END[width] + after.to_bytes(width, "big"),
        ]
    start = _key(first, width)
    if counters is not None:
        start += counter_expr(counters)
    if after >> bits:
        return [_list_elem(start + _OPEN_UDATA)]
    return [_list_elem(start), _list_elem(_END_FLAG + _key(after, width))]


# --- edits as one batch ---


@dataclass(frozen=True, slots=True)
class SetEdit:
    """Elements to delete from and add to one set; ``seed`` gives an added element its
    counter values (absent: the kernel starts it at zero).  ``flush`` empties the set
    first (the model's ``ReplaceSet``: a set reloaded whole), in the same transaction."""

    family: NftProto
    table: str
    set: str
    delete: tuple[IPNetwork, ...] = ()
    add: tuple[IPNetwork, ...] = ()
    seed: Mapping[IPNetwork, Counters] | None = None
    flush: bool = False

    @property
    def empty(self) -> bool:
        return not (self.flush or self.delete or self.add)

    def describe(self) -> str:
        return f"{self.family} {self.table} {self.set}"


@dataclass(frozen=True, slots=True)
class Part:
    """One message of a batch: what it does, for the one-line error naming it."""

    seq: int
    what: str


@dataclass(frozen=True, slots=True)
class Batch:
    data: bytes
    parts: tuple[Part, ...]
    """The messages that expect an answer (every one but BEGIN and END), in order."""
    first_seq: int
    last_seq: int


def _chunks(elements: Iterable[bytes]) -> Iterator[bytes]:
    """The elements joined into lists that each fit one attribute, built in place: a
    first load of 100,000 elements never holds them as 200,000 separate objects."""
    chunk = bytearray()
    for element in elements:
        if chunk and len(chunk) + len(element) > ELEMENTS_PER_NEST_BYTES:
            yield bytes(chunk)
            chunk = bytearray()
        chunk += element
    if chunk:
        yield bytes(chunk)


_FIRST: Final = itemgetter(0)


def _element_messages(
    edit: SetEdit, verb: Literal["delete", "add"], seq: int
) -> Iterator[tuple[bytes, Part]]:
    given = edit.delete if verb == "delete" else edit.add
    # Each CIDR's key once: it orders the elements and is all that encodes them.
    keyed = sorted(zip(map(cidr_key, given), given, strict=True), key=_FIRST)
    seed = edit.seed if verb == "add" else None
    elements = (e for k, n in keyed for e in _interval_elements(k, seed.get(n) if seed else None))
    kind, flags = (
        (msg_type("DELSETELEM"), NLM_F_REQUEST | NLM_F_ACK)
        if verb == "delete"
        else (msg_type("NEWSETELEM"), NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE)
    )
    head = strz(NFTA_SET_ELEM_LIST_TABLE, edit.table) + strz(NFTA_SET_ELEM_LIST_SET, edit.set)
    if verb == "delete" and edit.flush:  # DELSETELEM without elements: the kernel flushes
        yield message(kind, flags, seq, edit.family, head), Part(seq, f"flush {edit.describe()}")
        return
    for chunk in _chunks(elements):
        body = head + nest(NFTA_SET_ELEM_LIST_ELEMENTS, chunk)
        what = f"{verb} elements of {edit.describe()} ({', '.join(str(n) for _, n in keyed[:3])}"
        what += ", ...)" if len(keyed) > 3 else ")"
        yield message(kind, flags, seq, edit.family, body), Part(seq, what)
        seq += 1


def edit_batch(edits: Sequence[SetEdit], first_seq: int) -> Batch:
    """One nfnetlink batch: every deletion (or flush) of every set, then every addition.

    Deleting first lets an element move between sets, or be replaced by one that
    overlaps it, within one transaction; the kernel applies the whole batch or none of it.
    A flushed set's ``delete`` is not sent: the flush removes everything.
    """
    seq = first_seq + 1
    out = bytearray(
        message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            "unspec",
            b"",
            res_id=NFNL_SUBSYS_NFTABLES,
        )
    )
    parts: list[Part] = []
    verbs: tuple[Literal["delete", "add"], ...] = ("delete", "add")
    for verb in verbs:
        for edit in edits:
            for data, part in _element_messages(edit, verb, seq):
                out += data
                parts.append(part)
                seq += 1
    out += message(
        NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, "unspec", b"", res_id=NFNL_SUBSYS_NFTABLES
    )
    return Batch(bytes(out), tuple(parts), first_seq, seq)


# --- reading a set back ---


def dump_request(family: NftProto, table: str, set_name: str, seq: int) -> bytes:
    body = strz(NFTA_SET_ELEM_LIST_TABLE, table) + strz(NFTA_SET_ELEM_LIST_SET, set_name)
    return message(msg_type("GETSETELEM"), NLM_F_REQUEST | NLM_F_DUMP, seq, family, body)


def get_element_request(
    family: NftProto, table: str, set_name: str, net: IPNetwork, seq: int
) -> bytes:
    """A request for the one element that starts ``net`` (no dump): the kernel answers
    with that element and its counter, or ENOENT.  Several may share one ``send``."""
    key = _key(int(net.network_address), net.max_prefixlen // 8)
    body = (
        strz(NFTA_SET_ELEM_LIST_TABLE, table)
        + strz(NFTA_SET_ELEM_LIST_SET, set_name)
        + nest(NFTA_SET_ELEM_LIST_ELEMENTS, nest(NFTA_LIST_ELEM, key))
    )
    return message(msg_type("GETSETELEM"), NLM_F_REQUEST, seq, family, body)


class RawElement(NamedTuple):
    """One element as the kernel holds it: a boundary of an interval.

    A tuple, not a dataclass: a dump of 100,000 intervals makes 200,000 of them.
    """

    key: int
    end: bool
    counters: Counters | None = None


_COUNTER_NAME = strz(NFTA_EXPR_NAME, "counter")
_BYTES_HEAD = _ATTR.pack(12, NFTA_COUNTER_BYTES)
_PACKETS_HEAD = _ATTR.pack(12, NFTA_COUNTER_PACKETS)


def _counter(data: bytes, start: int, end: int) -> Counters | None:
    """The counter of one expression nest (NAME, DATA), or None for another expression.

    The kernel lays a counter out one way (name, then bytes, then packets, no padding on
    the architectures the agent runs on): that layout is read at fixed offsets, anything
    else attribute by attribute.
    """
    if (
        end - start == 40
        and data.startswith(_COUNTER_NAME, start)
        and data.startswith(_BYTES_HEAD, start + 16)
        and data.startswith(_PACKETS_HEAD, start + 28)
    ):
        octets, packets = (
            _BE64.unpack_from(data, start + 20)[0],
            _BE64.unpack_from(data, start + 32)[0],
        )
        return Counters(packets=packets, bytes=octets)
    found = attr_map(data, start, end)
    if text(found.get(NFTA_EXPR_NAME)) != "counter" or NFTA_EXPR_DATA not in found:
        return None
    values = attr_map(found[NFTA_EXPR_DATA])
    packets_, octets_ = values.get(NFTA_COUNTER_PACKETS), values.get(NFTA_COUNTER_BYTES)
    if packets_ is None or octets_ is None:
        return None
    return Counters(packets=_BE64.unpack(packets_)[0], bytes=_BE64.unpack(octets_)[0])


def _raw_element(data: bytes, start: int, stop: int) -> RawElement | None:
    """One element nest, its attributes walked inline (this runs once per element)."""
    key: int | None = None
    end = False
    counters: Counters | None = None
    at = start
    while at + 4 <= stop:
        length, kind = _ATTR.unpack_from(data, at)
        if length < 4 or at + length > stop:
            break
        kind &= NLA_TYPE_MASK
        if kind == NFTA_SET_ELEM_KEY:
            value_length, value_kind = _ATTR.unpack_from(data, at + 4)
            if value_kind & NLA_TYPE_MASK == NFTA_DATA_VALUE:
                key = int.from_bytes(data[at + 8 : at + 4 + value_length], "big")
        elif kind == NFTA_SET_ELEM_FLAGS:
            end = bool(_BE32.unpack_from(data, at + 4)[0] & NFT_SET_ELEM_INTERVAL_END)
        elif kind == NFTA_SET_ELEM_EXPR:
            counters = _counter(data, at + 4, at + length) or counters
        elif kind == NFTA_SET_ELEM_EXPRESSIONS:
            for k, ea, eb in attrs(data, at + 4, at + length):
                if k == NFTA_LIST_ELEM:
                    counters = _counter(data, ea, eb) or counters
        at += (length + 3) & ~3
    return None if key is None else RawElement(key, end, counters)


_N = rb"[\x00\x80]"  # the high byte of a nested attribute's type: the kernel omits NLA_F_NESTED
_ELEMENT = re.compile(
    b"".join(
        [
            rb"(?s)(..)\x01" + _N,  # NFTA_LIST_ELEM: its length, then its type
            rb"(?:\x0c\x00\x01" + _N + rb"\x08\x00\x01\x00(.{4})",  # key: IPv4
            rb"|\x18\x00\x01" + _N + rb"\x14\x00\x01\x00(.{16}))",  # or IPv6
            rb"(?:\x2c\x00\x07" + _N + re.escape(_COUNTER_NAME),  # a counter expression
            rb"\x1c\x00\x02" + _N + re.escape(_BYTES_HEAD) + rb"(.{8})",  # bytes
            re.escape(_PACKETS_HEAD) + rb"(.{8}))?",  # packets
            rb"(" + re.escape(_END_FLAG) + rb")?",  # interval end
            rb"(?:" + re.escape(_OPEN_UDATA) + rb")?",  # nft's "interval open" (top of range)
        ]
    )
)
"""The element layouts a dump of the agent's sets holds, in the kernel's attribute order
(key, expressions, flags, user data): matched in C, element after element."""


def _fast_elements(body: bytes, start: int, stop: int) -> list[RawElement] | None:
    """The elements of one list if every one has a layout ``_ELEMENT`` knows, else None."""
    found: list[RawElement] = []
    at = start
    for match in _ELEMENT.finditer(body, start, stop):
        length = int.from_bytes(match[1], "little")
        if match.start() != at or match.end() - at != length:
            return None
        octets = match[4]
        counters = (
            None
            if octets is None
            else Counters(int.from_bytes(match[5], "big"), int.from_bytes(octets, "big"))
        )
        key = int.from_bytes(match[2] or match[3], "big")
        found.append(RawElement(key, match[6] is not None, counters))
        at = match.end()
    return found if at == stop else None


def raw_elements(body: bytes) -> Iterator[RawElement]:
    """The elements in the body of one NEWSETELEM message (dump reply or notification)."""
    for kind, a, b in attrs(body, GENMSG.size):
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS:
            continue
        fast = _fast_elements(body, a, b)
        if fast is not None:
            yield from fast
            continue
        for k, ea, eb in attrs(body, a, b):
            if k == NFTA_LIST_ELEM:
                element = _raw_element(body, ea, eb)
                if element is not None:
                    yield element


@dataclass(frozen=True, slots=True)
class SetContents:
    """A set's elements as CIDRs with their counters; ``opaque`` holds ranges that are no
    CIDR, as nft prints them (``10.0.0.1-10.0.0.5``), so a caller can see they differ."""

    family: Family
    counters: Mapping[IPNetwork, Counters]
    opaque: tuple[str, ...] = ()

    @property
    def elements(self) -> frozenset[IPNetwork]:
        return frozenset(self.counters)


_ZERO = Counters(0, 0)


def _range(first: int, last: int, family: Family) -> IPNetwork | str:
    size = last - first + 1
    if size & (size - 1) == 0 and first % size == 0:
        prefix = _bits(family) - (size.bit_length() - 1)
        if family == "ipv4":
            return ipaddress.IPv4Network((first, prefix))
        return ipaddress.IPv6Network((first, prefix))
    address = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    return f"{address(first)}-{address(last)}"


def _order(element: RawElement) -> tuple[int, bool]:
    return element.key, not element.end


def intervals(elements: Iterable[RawElement], family: Family) -> SetContents:
    """Pair starts with ends as the kernel's interval lookup does.

    In key order (an end before a start of the same key, as adjacent ranges have), a start
    covers up to the next end or the next start; a start with nothing after it covers up to
    the top of the address space; an end with no open start (nft's root at 0) covers nothing;
    a repeated element counts once.
    """
    ordered = sorted(elements, key=_order)
    top = (1 << _bits(family)) - 1
    counters: dict[IPNetwork, Counters] = {}
    opaque: list[str] = []
    open_start: RawElement | None = None

    def close(start: RawElement, last: int) -> None:
        found = _range(start.key, last, family)
        if isinstance(found, str):
            opaque.append(found)
        else:
            counters[found] = start.counters or _ZERO

    for element in ordered:
        if element.end:
            if open_start is not None and element.key > open_start.key:
                close(open_start, element.key - 1)
            open_start = None
        elif open_start is None or element.key > open_start.key:
            if open_start is not None:
                close(open_start, element.key - 1)
            open_start = element
    if open_start is not None:
        close(open_start, top)
    return SetContents(family, counters, tuple(opaque))


# --- notifications ---

ObjectKind = Literal["table", "chain", "rule", "set", "element", "object", "flowtable"]

_OBJECT_MESSAGES: Final[dict[int, tuple[ObjectKind, bool]]] = {
    NFT_MSG["NEWTABLE"]: ("table", True),
    NFT_MSG["DELTABLE"]: ("table", False),
    NFT_MSG["DESTROYTABLE"]: ("table", False),
    NFT_MSG["NEWCHAIN"]: ("chain", True),
    NFT_MSG["DELCHAIN"]: ("chain", False),
    NFT_MSG["DESTROYCHAIN"]: ("chain", False),
    NFT_MSG["NEWRULE"]: ("rule", True),
    NFT_MSG["DELRULE"]: ("rule", False),
    NFT_MSG["DESTROYRULE"]: ("rule", False),
    NFT_MSG["NEWSET"]: ("set", True),
    NFT_MSG["DELSET"]: ("set", False),
    NFT_MSG["DESTROYSET"]: ("set", False),
    NFT_MSG["NEWSETELEM"]: ("element", True),
    NFT_MSG["DELSETELEM"]: ("element", False),
    NFT_MSG["DESTROYSETELEM"]: ("element", False),
    NFT_MSG["NEWOBJ"]: ("object", True),
    NFT_MSG["DELOBJ"]: ("object", False),
    NFT_MSG["DESTROYOBJ"]: ("object", False),
    NFT_MSG["NEWFLOWTABLE"]: ("flowtable", True),
    NFT_MSG["DELFLOWTABLE"]: ("flowtable", False),
    NFT_MSG["DESTROYFLOWTABLE"]: ("flowtable", False),
}
# The attribute holding the object's name after the table's (always attribute 1):
# chain 3, rule's chain 2, set 2, element list's set 2, object 2, flowtable 2.
_NAME_ATTR: Final[dict[ObjectKind, int]] = {
    "chain": 3,
    "rule": 2,
    "set": 2,
    "element": 2,
    "object": 2,
    "flowtable": 2,
}


@dataclass(frozen=True, slots=True)
class ObjectChanged:
    """An object of some table was added (``added``) or deleted by a commit in progress.

    ``name`` is the chain, set, object or flowtable; for a rule its chain, for elements
    their set; None for a table.  ``portid`` is the sending socket's netlink port id.
    ``body`` is an element message's body (``raw_elements`` reads it; empty otherwise),
    so a watcher can follow a foreign element change without listing the set.
    """

    kind: ObjectKind
    added: bool
    family: str
    table: str
    name: str | None
    portid: int
    body: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Committed:
    """A commit ended (NEWGEN): the new generation id and who committed, when the kernel
    says (``pid`` and ``process`` are absent before Linux 5.4)."""

    generation: int
    pid: int | None
    process: str | None
    portid: int


@dataclass(frozen=True, slots=True)
class Lost:
    """Notifications were dropped (the socket's buffer overflowed): anything may have changed."""


Event = ObjectChanged | Committed | Lost


def notification(reply: Reply) -> Event | None:
    """The event one nf_tables notification carries; None for a message of no interest."""
    if reply.kind == NLMSG_OVERRUN:
        return Lost()
    if reply.kind >> 8 != NFNL_SUBSYS_NFTABLES or len(reply.body) < GENMSG.size:
        return None
    kind = reply.kind & 0xFF
    found = reply.attributes
    if kind == NFT_MSG["NEWGEN"]:
        generation = be32(found.get(NFTA_GEN_ID))
        if generation is None:
            return None
        return Committed(
            generation,
            be32(found.get(NFTA_GEN_PROC_PID)),
            text(found.get(NFTA_GEN_PROC_NAME)),
            reply.portid,
        )
    if kind not in _OBJECT_MESSAGES:
        return None
    what, added = _OBJECT_MESSAGES[kind]
    name_attr = _NAME_ATTR.get(what)
    return ObjectChanged(
        kind=what,
        added=added,
        family=reply.family,
        table=text(found.get(1)) or "",
        name=None if name_attr is None else text(found.get(name_attr)),
        portid=reply.portid,
        body=reply.body if what == "element" else b"",
    )


# --- who touched which table: notifications folded per commit ---


@dataclass(frozen=True, slots=True)
class ForeignCommit:
    """A commit by a process not in ``own_pids`` that changed a watched table: its
    generation, who (when the kernel says) and the changes that name the table."""

    generation: int
    pid: int | None
    process: str | None
    changes: tuple[ObjectChanged, ...]


@dataclass(frozen=True, slots=True)
class Seen:
    """What one batch of events showed: foreign commits to a watched table, whether
    notifications were lost (then anything may have changed), the last generation."""

    foreign: tuple[ForeignCommit, ...] = ()
    lost: bool = False
    generation: int | None = None

    @property
    def dirty(self) -> bool:
        return self.lost or bool(self.foreign)


@dataclass(frozen=True, slots=True)
class Watch:
    """Folds notifications into foreign changes of the watched tables, across reads.

    The kernel sends a commit's object notifications, then its NEWGEN, under the commit
    lock, so commits never interleave: the changes pending when a NEWGEN arrives are that
    commit's, and the commit is ours when its netlink port is one of ``own_portids`` (the
    port ``write_elements`` sent from; an ``nft`` child's port is its pid as the agent
    sees it) or its pid one of ``own_pids``.  Prefer ports: NEWGEN's pid is counted in the
    host's pid namespace, which an agent in a pod without hostPID does not see.  A commit
    whose pid the kernel does not say, and whose port is not ours, is foreign.
    """

    tables: frozenset[tuple[str, str]]
    own_pids: frozenset[int] = frozenset()
    own_portids: frozenset[int] = frozenset()
    pending: tuple[ObjectChanged, ...] = ()

    def owning(self, *, pid: int | None = None, portid: int | None = None) -> Watch:
        return Watch(
            self.tables,
            self.own_pids | ({pid} if pid is not None else set()),
            self.own_portids | ({portid} if portid is not None else set()),
            self.pending,
        )

    def _ours(self, commit: Committed) -> bool:
        return commit.portid in self.own_portids or (
            commit.pid is not None and commit.pid in self.own_pids
        )

    def feed(self, events: Iterable[Event]) -> tuple[Watch, Seen]:
        pending = list(self.pending)
        foreign: list[ForeignCommit] = []
        lost = False
        generation: int | None = None
        for event in events:
            if isinstance(event, Lost):
                lost, pending = True, []
            elif isinstance(event, ObjectChanged):
                # A change from one of our ports is our commit's (its NEWGEN comes from the
                # same port): not kept, so a first load's 200,000 element notifications
                # never pile up (~70 MB at 100,000 elements).
                if (event.family, event.table) in self.tables and (
                    event.portid not in self.own_portids
                ):
                    pending.append(event)
            else:
                generation = event.generation
                if pending and not self._ours(event):
                    foreign.append(
                        ForeignCommit(event.generation, event.pid, event.process, tuple(pending))
                    )
                pending = []
        watch = Watch(self.tables, self.own_pids, self.own_portids, tuple(pending))
        return watch, Seen(tuple(foreign), lost, generation)


# --- reading a chain's rule counters ---

NFTA_RULE_TABLE: Final = 1
NFTA_RULE_CHAIN: Final = 2
NFTA_RULE_EXPRESSIONS: Final = 4
NFTA_LOOKUP_SET: Final = 1


def rule_dump_request(family: NftProto, table: str, chain: str, seq: int) -> bytes:
    """A dump of one chain's rules (the kernel filters by table and chain)."""
    body = strz(NFTA_RULE_TABLE, table) + strz(NFTA_RULE_CHAIN, chain)
    return message(msg_type("GETRULE"), NLM_F_REQUEST | NLM_F_DUMP, seq, family, body)


class RuleCounter(NamedTuple):
    """What a scrape needs of one rule: the set its lookup names (None: no lookup) and its
    counter statement's values (None: no counter)."""

    lookup: str | None
    counters: Counters | None


def rule_counter(body: bytes) -> RuleCounter:
    """The lookup set and counter of the rule in one NEWRULE message body."""
    lookup: str | None = None
    counters: Counters | None = None
    for kind, a, b in attrs(body, GENMSG.size):
        if kind != NFTA_RULE_EXPRESSIONS:
            continue
        for k, ea, eb in attrs(body, a, b):
            if k != NFTA_LIST_ELEM:
                continue
            counters = _counter(body, ea, eb) or counters
            expr = attr_map(body, ea, eb)
            if text(expr.get(NFTA_EXPR_NAME)) == "lookup" and NFTA_EXPR_DATA in expr:
                lookup = text(attr_map(expr[NFTA_EXPR_DATA]).get(NFTA_LOOKUP_SET))
    return RuleCounter(lookup, counters)
