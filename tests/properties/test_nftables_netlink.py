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
    NFTA_SET_ELEM_LIST_ELEMENTS,
    SetEdit,
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
