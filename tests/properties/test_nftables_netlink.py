"""Properties of the nf_tables netlink codec (masq/core/nftables/netlink.py), pure.

The kernel round trip (what the kernel and nft make of these bytes) is in
tests/integration/test_nft_netlink.py; here the codec must invert itself: whatever
disjoint CIDRs and counters are encoded as interval elements, in whatever order a dump
returns the elements, decoding gives back exactly those CIDRs with those counters.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from netlink_strategies import counters, disjoint_cidrs

from masq.core.addresses import Family, IPNetwork
from masq.core.nftables.netlink import (
    ELEMENTS_PER_NEST_BYTES,
    NFTA_LIST_ELEM,
    NFTA_SET_ELEM_LIST_ELEMENTS,
    SetEdit,
    _fast_elements,
    attr,
    attrs,
    edit_batch,
    interval_elements,
    intervals,
    msg_type,
    nest,
    raw_elements,
    replies,
)
from masq.core.traffic import Counters

FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")


def _body(elements: list[bytes]) -> bytes:
    return b"\x01\x00\x00\x00" + nest(NFTA_SET_ELEM_LIST_ELEMENTS, *elements)


KERNEL_ORDER = {1: 0, 7: 1, 3: 2, 6: 3}  # key, expression, flags, user data


def _unflag(data: bytes) -> bytes:
    """``data``'s attributes with NLA_F_NESTED cleared, recursively, as a dump writes them."""
    out = b""
    for kind, a, b in attrs(data):
        inner = data[a:b]
        nested = data[a - 1] & 0x80  # the high byte of the attribute's type
        out += attr(kind, _unflag(inner) if nested else inner)
    return out


def _as_dumped(element: bytes) -> bytes:
    """One element nest as the kernel dumps it: attributes in its order, no nested flags."""
    parts = sorted(attrs(element, 4), key=lambda p: KERNEL_ORDER[p[0]])
    inner = b"".join(_unflag(element[a - 4 : b]) for _, a, b in parts)
    return attr(NFTA_LIST_ELEM, inner)


@given(data=st.data(), family=st.sampled_from(FAMILIES))
def test_interval_elements_decode_back_to_the_cidrs_and_counters(
    data: st.DataObject, family: Family
) -> None:
    """Encoding disjoint CIDRs (adjacent, /0, host, top of range) with counters and decoding
    the elements in any order gives exactly the same CIDRs and counters, nothing opaque."""
    nets: list[IPNetwork] = data.draw(disjoint_cidrs(family))
    seeded = {n: data.draw(counters()) for n in nets}
    elements = [e for n in nets for e in interval_elements(n, seeded[n])]
    shuffled = data.draw(st.permutations(elements))
    decoded = intervals(raw_elements(_body(list(shuffled))), family)
    assert decoded.opaque == ()
    assert dict(decoded.counters) == seeded


@given(data=st.data(), family=st.sampled_from(FAMILIES))
def test_elements_as_the_kernel_dumps_them_decode_in_one_pass(
    data: st.DataObject, family: Family
) -> None:
    """The same elements in the kernel's layout (key, counter, flags, user data; nested
    attributes unflagged) decode to the same CIDRs and counters, and through the one-pass
    matcher (no element falls back to the attribute walk)."""
    nets: list[IPNetwork] = data.draw(disjoint_cidrs(family))
    seeded = {n: data.draw(counters()) for n in nets}
    elements = [_as_dumped(e) for n in nets for e in interval_elements(n, seeded[n])]
    body = _body(elements)
    assert _fast_elements(body, 4 + 4, len(body)) is not None
    decoded = intervals(raw_elements(body), family)
    assert dict(decoded.counters) == seeded


@given(data=st.data())
def test_a_batch_carries_every_element_deletes_first_in_bounded_messages(
    data: st.DataObject,
) -> None:
    """A batch over several sets of both families holds every deletion before any addition,
    each message's element list fits a netlink attribute, and the elements of the add
    messages decode to exactly the added CIDRs of their set."""
    edits = []
    sets: tuple[tuple[Family, str], ...] = (("ipv4", "masquerade-v4"), ("ipv6", "masquerade-v6"))
    for family, name in sets:
        add = data.draw(disjoint_cidrs(family))
        delete = data.draw(disjoint_cidrs(family))
        edits.append(SetEdit("inet", "t", name, delete=tuple(delete), add=tuple(add)))
    batch = edit_batch(edits, 100)
    messages = list(replies(batch.data))
    assert messages[0].kind == 0x10 and messages[-1].kind == 0x11
    middle = messages[1:-1]
    assert [m.seq for m in middle] == [p.seq for p in batch.parts]
    kinds = [m.kind for m in middle]
    assert kinds == sorted(kinds, key=lambda k: k != msg_type("DELSETELEM"))
    assert all(len(m.body) < ELEMENTS_PER_NEST_BYTES + 200 for m in middle)
    for edit, (family, _) in zip(edits, sets, strict=True):
        added = [
            e
            for m in middle
            if m.kind == msg_type("NEWSETELEM")
            and m.attributes[2].rstrip(b"\0") == edit.set.encode()
            for e in raw_elements(m.body)
        ]
        assert intervals(added, family).elements == frozenset(edit.add)
        assert all(c == Counters(0, 0) for c in intervals(added, family).counters.values())
