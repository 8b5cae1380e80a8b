"""The nf_tables netlink codec byte for byte: elements as nft 1.0.6 sends them (captured
with ``nft --debug=mnl add element`` in a namespace), dump decoding, and notifications."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from masq.core.nftables.netlink import (
    NLMSG_OVERRUN,
    Committed,
    ForeignCommit,
    Lost,
    ObjectChanged,
    RawElement,
    Reply,
    Seen,
    SetEdit,
    Watch,
    attr,
    edit_batch,
    get_element_request,
    interval_elements,
    intervals,
    msg_type,
    notification,
    replies,
    strz,
)
from masq.core.traffic import Counters

net = ipaddress.ip_network

# NFTA_LIST_ELEM { NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE 10.0.0.0 } }
START_10 = bytes.fromhex("100001800c000180080001000a000000")
# NFTA_LIST_ELEM { FLAGS INTERVAL_END, KEY { VALUE 11.0.0.0 } }: the first address after
END_10 = bytes.fromhex("1800018008000300000000010c000180080001000b000000")
# 255.255.255.255: no end element; nft's user data "interval open" on the start
TOP_V4 = bytes.fromhex("1c0001800c00018008000100ffffffff0a0006000104010000000000")
# 1.2.3.0/24 counter packets 5 bytes 6: NFTA_SET_ELEM_EXPR { "counter", DATA { BYTES, PACKETS } }
SEEDED = bytes.fromhex(
    "3c000180"
    "0c000180"
    "08000100"
    "01020300"
    "2c000780"
    "0c000100"
    "636f756e"
    "74657200"
    "1c000280"
    "0c000100"
    "00000000"
    "00000006"
    "0c000200"
    "00000000"
    "00000005"
)


IP_T_S = bytes.fromhex("0200000006000100740000000600020073000000")
"""nfgenmsg (family ip), NFTA_SET_ELEM_LIST_TABLE "t", NFTA_SET_ELEM_LIST_SET "s"."""


def test_a_cidr_is_a_start_and_the_first_address_after_it_flagged_end() -> None:
    assert interval_elements(net("10.0.0.0/8")) == [START_10, END_10]


def test_a_range_reaching_the_top_has_no_end_element() -> None:
    assert interval_elements(net("255.255.255.255/32")) == [TOP_V4]
    (only,) = interval_elements(net("::/0"))
    assert len(only) == 4 + 4 + 4 + 16 + 12


def test_a_seeded_counter_is_encoded_as_nft_encodes_it() -> None:
    start, _end = interval_elements(net("1.2.3.0/24"), Counters(packets=5, bytes=6))
    assert start == SEEDED


def test_decoding_pairs_adjacent_ranges_and_ignores_nfts_root_element() -> None:
    """Adjacent ranges share a key (an end and a start); nft's lone end at 0 covers nothing."""
    elements = [
        RawElement(0, end=True),
        RawElement(0x0A000000, end=False, counters=Counters(1, 2)),
        RawElement(0x0B000000, end=True),
        RawElement(0x0B000000, end=False),
        RawElement(0x0C000000, end=True),
        RawElement(0xFFFFFFFF, end=False, counters=Counters(3, 4)),
    ]
    got = intervals(reversed(elements), "ipv4")
    assert dict(got.counters) == {
        net("10.0.0.0/8"): Counters(1, 2),
        net("11.0.0.0/8"): Counters(0, 0),
        net("255.255.255.255/32"): Counters(3, 4),
    }
    assert got.opaque == ()


def test_a_range_that_is_no_cidr_is_reported_as_nft_prints_it() -> None:
    got = intervals([RawElement(0x0A000001, False), RawElement(0x0A000006, True)], "ipv4")
    assert got.counters == {}
    assert got.opaque == ("10.0.0.1-10.0.0.5",)


def test_a_batch_is_begin_deletes_adds_end_with_acks_requested() -> None:
    edits = [
        SetEdit("inet", "t", "a-v4", add=(net("10.0.0.0/8"),)),
        SetEdit("inet", "t", "b-v6", delete=(net("fd00::/8"),)),
    ]
    batch = edit_batch(edits, 7)
    kinds = [(m.kind, m.seq, m.flags & 0x4) for m in replies(batch.data)]
    assert kinds == [
        (0x10, 7, 0),
        (msg_type("DELSETELEM"), 8, 4),
        (msg_type("NEWSETELEM"), 9, 4),
        (0x11, 10, 0),
    ]
    begin = next(iter(replies(batch.data)))
    assert begin.body == bytes.fromhex("0000000a")  # res_id: the nf_tables subsystem, big endian
    assert [p.what for p in batch.parts] == [
        "delete elements of inet t b-v6 (fd00::/8)",
        "add elements of inet t a-v4 (10.0.0.0/8)",
    ]


def test_a_large_edit_is_split_into_messages_under_the_attribute_limit() -> None:
    many = tuple(net(f"10.{i // 256}.{i % 256}.0/24") for i in range(0, 20000, 2))
    batch = edit_batch([SetEdit("ip", "t", "s", add=many)], 1)
    sizes = [len(m.body) for m in replies(batch.data)][1:-1]
    assert len(sizes) > 3
    assert max(sizes) < 65535


def _message(kind: int, payload: bytes, portid: int = 99) -> Reply:
    body = bytes([1, 0, 0, 0]) + payload
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, portid) + body
    (reply,) = replies(data)
    return reply


def test_newgen_names_the_committing_process() -> None:
    payload = attr(1, struct.pack(">I", 42)) + attr(2, struct.pack(">I", 4321)) + strz(3, "nft")
    assert notification(_message(msg_type("NEWGEN"), payload)) == Committed(42, 4321, "nft", 99)


@pytest.mark.parametrize(
    ("kind", "payload", "expected"),
    [
        ("DELTABLE", strz(1, "ip-masq-agent"), ("table", False, None)),
        (
            "NEWCHAIN",
            strz(1, "ip-masq-agent") + strz(3, "postrouting"),
            ("chain", True, "postrouting"),
        ),
        (
            "DELRULE",
            strz(1, "ip-masq-agent") + strz(2, "postrouting"),
            ("rule", False, "postrouting"),
        ),
        (
            "DELSET",
            strz(1, "ip-masq-agent") + strz(2, "masquerade-v4"),
            ("set", False, "masquerade-v4"),
        ),
        (
            "DELSETELEM",
            strz(1, "ip-masq-agent") + strz(2, "masquerade-v4"),
            ("element", False, "masquerade-v4"),
        ),
    ],
)
def test_object_notifications_name_table_and_object(
    kind: str, payload: bytes, expected: tuple[str, bool, str | None]
) -> None:
    event = notification(_message(msg_type(kind), payload))
    assert isinstance(event, ObjectChanged)
    assert (event.kind, event.added, event.name) == expected
    assert (event.family, event.table, event.portid) == ("inet", "ip-masq-agent", 99)


def test_an_overrun_is_lost_and_other_messages_are_no_event() -> None:
    assert notification(_message(NLMSG_OVERRUN, b"")) == Lost()
    assert notification(_message(msg_type("GETGEN"), b"")) is None
    assert notification(_message(0x0101, b"")) is None  # another nfnetlink subsystem


TABLE = ("inet", "ip-masq-agent")


def _changed(table: str = "ip-masq-agent", kind: str = "element", port: int = 7) -> ObjectChanged:
    return ObjectChanged(kind, False, "inet", table, "masquerade-v4", port)  # type: ignore[arg-type]


def test_a_watch_reports_foreign_commits_to_its_table_only() -> None:
    """A commit by another pid naming our table is foreign; our own pid's, or one that
    names only other tables, is not; a change waiting for its NEWGEN across reads counts
    in the read that brings the NEWGEN."""
    watch = Watch(frozenset({TABLE}), own_pids=frozenset({100}))
    watch, seen = watch.feed([_changed(), Committed(5, 100, "python", 7)])
    assert seen == Seen((), False, 5) and not seen.dirty
    watch, seen = watch.feed([_changed("kube-proxy"), Committed(6, 200, "nft", 7)])
    assert not seen.dirty
    watch, seen = watch.feed([_changed(kind="rule")])
    assert not seen.dirty and watch.pending
    watch, seen = watch.feed([Committed(7, 300, "nft", 7)])
    assert seen.foreign == (ForeignCommit(7, 300, "nft", (_changed(kind="rule"),)),)
    assert seen.dirty and watch.pending == ()


def test_a_watch_counts_an_unnamed_committer_as_foreign_and_lost_as_dirty() -> None:
    watch = Watch(frozenset({TABLE})).owning(pid=100)
    _, seen = watch.feed([_changed(), Committed(5, None, None, 7)])
    assert seen.foreign and seen.foreign[0].pid is None
    _, seen = watch.feed([_changed(), Lost(), Committed(6, 100, "python", 7)])
    assert seen.lost and seen.dirty and seen.foreign == ()


def test_a_watch_knows_its_commits_by_port_whatever_pid_the_kernel_names() -> None:
    """In a pid namespace NEWGEN names the host's pid: a commit from one of our ports is
    ours whatever pid it carries, and a pid of ours does not make another port's ours."""
    watch = Watch(frozenset({TABLE})).owning(portid=7)
    assert not watch.feed([_changed(), Committed(5, 4242, "nft", 7)])[1].dirty
    assert watch.feed([_changed(port=8), Committed(6, 4242, "nft", 8)])[1].dirty


def test_a_watch_keeps_none_of_its_own_ports_changes_while_their_commit_is_pending() -> None:
    """The changes of a commit from our port (a first load notifies every element) are not
    held until its NEWGEN: the kernel sends a commit's changes and its NEWGEN from one port,
    so they are ours; another port's changes are held, and make their commit foreign."""
    watch = Watch(frozenset({TABLE})).owning(portid=7)
    watch, seen = watch.feed([_changed() for _ in range(1000)] + [_changed(port=8)])
    assert not seen.dirty and watch.pending == (_changed(port=8),)
    assert watch.feed([Committed(6, None, None, 8)])[1].dirty


def test_a_get_asks_for_the_element_that_starts_the_cidr() -> None:
    """One non-dump GETSETELEM naming table and set, holding the CIDR's start element."""
    (reply,) = replies(get_element_request("ip", "t", "s", net("10.0.0.0/8"), 5))
    assert (reply.kind, reply.seq, reply.flags) == (msg_type("GETSETELEM"), 5, 1)
    assert reply.body == IP_T_S + (bytes.fromhex("14000380") + START_10)


def test_a_flush_is_a_delete_without_elements_before_the_adds() -> None:
    edit = SetEdit("ip", "t", "s", delete=(net("9.0.0.0/8"),), add=(net("10.0.0.0/8"),), flush=True)
    batch = edit_batch([edit], 1)
    middle = list(replies(batch.data))[1:-1]
    assert [(m.kind, m.body) for m in middle] == [
        (msg_type("DELSETELEM"), IP_T_S),
        (msg_type("NEWSETELEM"), middle[1].body),
    ]
    assert [p.what for p in batch.parts] == ["flush ip t s", "add elements of ip t s (10.0.0.0/8)"]


def test_repeated_elements_count_once() -> None:
    """A listing that repeats an element (a dump torn by a commit could) decodes without
    failing, each interval once."""
    start, end = RawElement(0x0A000000, False, Counters(1, 2)), RawElement(0x0B000000, True)
    got = intervals([start, start, end, end], "ipv4")
    assert dict(got.counters) == {net("10.0.0.0/8"): Counters(1, 2)}
