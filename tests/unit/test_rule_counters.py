"""The rule-counter reading of the netlink codec (masq/core/nftables/netlink.py): what a
scrape takes from one NEWRULE message of the agent's base chain."""

from __future__ import annotations

import struct

from masq.core.nftables.netlink import (
    GENMSG,
    NFPROTO,
    NFTA_COUNTER_BYTES,
    NFTA_COUNTER_PACKETS,
    NFTA_EXPR_DATA,
    NFTA_EXPR_NAME,
    NFTA_LIST_ELEM,
    NFTA_LOOKUP_SET,
    NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE,
    attr,
    nest,
    rule_counter,
    rule_dump_request,
    strz,
)
from masq.core.traffic import Counters


def _expr(name: str, *data: bytes) -> bytes:
    return nest(NFTA_LIST_ELEM, strz(NFTA_EXPR_NAME, name), nest(NFTA_EXPR_DATA, *data))


def _rule(*exprs: bytes) -> bytes:
    return (
        GENMSG.pack(NFPROTO["ip"], 0, 0)
        + strz(NFTA_RULE_TABLE, "ip-masq-agent")
        + strz(NFTA_RULE_CHAIN, "postrouting")
        + nest(NFTA_RULE_EXPRESSIONS, *exprs)
    )


def test_a_lookup_rule_gives_its_set_and_its_counter() -> None:
    """``ip daddr @non-masquerade-v4 counter return`` as the kernel sends it: the set the
    lookup names and the counter's packets and bytes (big endian, in the kernel's order)."""
    counter = _expr(
        "counter",
        attr(NFTA_COUNTER_BYTES, struct.pack(">Q", 4200)),
        attr(NFTA_COUNTER_PACKETS, struct.pack(">Q", 42)),
    )
    body = _rule(
        _expr("payload", attr(1, struct.pack(">I", 1))),
        _expr("lookup", strz(NFTA_LOOKUP_SET, "non-masquerade-v4")),
        counter,
        _expr("immediate", attr(1, struct.pack(">I", 0))),
    )
    assert rule_counter(body) == ("non-masquerade-v4", Counters(packets=42, bytes=4200))


def test_a_rule_without_lookup_or_counter_gives_none_for_them() -> None:
    """``fib daddr type local return``: neither a set nor a counter."""
    body = _rule(_expr("fib", attr(1, struct.pack(">I", 1))), _expr("immediate"))
    assert rule_counter(body) == (None, None)


def test_the_dump_request_names_the_table_and_the_chain() -> None:
    """One GETRULE dump, filtered by the kernel to our table and base chain."""
    request = rule_dump_request("inet", "ip-masq-agent", "postrouting", 7)
    assert b"ip-masq-agent\0" in request and b"postrouting\0" in request
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind & 0xFF, flags & 0x300, seq) == (len(request), 7, 0x300, 7)
