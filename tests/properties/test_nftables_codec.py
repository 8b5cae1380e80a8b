"""Properties of the nftables codec (masq/core/nftables/codec.py), with the kernel as oracle.

The round trip goes through real nft in a throwaway network namespace: what the agent
renders, nft loads, and what nft lists, the agent parses back to the same model.  The
kernel, not the codec's own renderer, decides what the listing looks like.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from ci import cannot_run
from hypothesis import given, settings
from hypothesis import strategies as st
from integration.topology import namespace
from pyrsistent import pvector
from strategies import cidrs, configs, egress_configs, table_options

from masq.core.addresses import IPNetwork
from masq.core.config import MasqConfig
from masq.core.nat import NatOptions, PortRange
from masq.core.nftables.codec import (
    parse_listing,
    parse_rule,
    render_batch,
    render_table,
    state_of,
)
from masq.core.nftables.model import AddElements, NftTable, ReplaceTable
from masq.core.nftables.plan import apply_ops, plan
from masq.core.nftables.table import TableOptions, desired_table

KERNEL_EXAMPLES = max(10, (settings.default or settings()).max_examples // 5)  # nft runs twice


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        cannot_run("the nft round trip needs root and nft")
    with namespace("nft-codec") as name:
        yield name


def nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def listed(ns: str, table: NftTable) -> NftTable:
    out = nft(ns, "-j", "list", "table", table.family, table.name)
    assert out.returncode == 0, out.stderr
    return parse_listing(out.stdout, table.family, table.name).unwrap()


@settings(max_examples=KERNEL_EXAMPLES)
@given(config=configs() | egress_configs(), options=table_options())
def test_kernel_listing_parses_back_to_the_rendered_table(
    netns: str, config: MasqConfig, options: TableOptions
) -> None:
    """Whatever the config (overlapping, adjacent, /0, link-local-covering CIDRs, both
    families, --to-ports, random-fully on or off; egress selection's interface patterns and
    source CIDRs, SNAT addresses), the batch the codec renders loads into the kernel, the
    kernel's JSON listing parses back to exactly the desired table, and planning against
    that listing writes nothing."""
    desired = desired_table(config, options)
    loaded = nft(netns, "-f", "-", stdin=render_batch((ReplaceTable(desired),)))
    assert loaded.returncode == 0, (loaded.stderr, render_table(desired))
    got = listed(netns, desired)
    assert got == desired
    assert plan(desired, state_of([got])) == ()
    assert nft(netns, "delete", "table", desired.family, desired.name).returncode == 0


@settings(max_examples=KERNEL_EXAMPLES)
@given(first=st.lists(cidrs("ipv4"), max_size=4), second=st.lists(cidrs("ipv4"), max_size=3))
def test_model_refuses_element_adds_exactly_when_the_kernel_does(
    netns: str, first: list[IPNetwork], second: list[IPNetwork]
) -> None:
    """Adding elements to an interval set: the kernel model (apply_ops) raises exactly when
    the kernel refuses the batch, and when both accept they hold the same elements."""
    table = desired_table(MasqConfig(), TableOptions())
    name = "non-masquerade-v4"
    assert nft(netns, "-f", "-", stdin=render_batch((ReplaceTable(table),))).returncode == 0
    state = state_of([table])
    for batch in (first, second):
        if not batch:
            continue
        op = AddElements(table.family, table.name, name, tuple(batch))
        kernel = nft(netns, "-f", "-", stdin=render_batch((op,)))
        try:
            state = apply_ops(state, [op])
            model_ok = True
        except ValueError:
            model_ok = False
        assert model_ok is (kernel.returncode == 0), (batch, kernel.stderr)
    assert listed(netns, table).sets[name].elements == state.tables["ip"].sets[name].elements
    assert nft(netns, "delete", "table", "ip", table.name).returncode == 0


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    )
)
def test_parse_listing_never_raises(junk: object) -> None:
    """Any JSON (or none) is parsed into a table or refused with a Failure, never raised."""
    for text in (json.dumps(junk), json.dumps({"nftables": junk}), "not json"):
        result = parse_listing(text, "ip", "ip-masq-agent")
        assert result.value_or(None) is None or result.unwrap().name == "ip-masq-agent"


def test_unknown_expressions_make_an_opaque_rule() -> None:
    """A rule outside the agent's grammar is kept as text, so it never equals a desired rule."""
    rule = parse_rule(
        [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": None}]
    )
    assert rule.verdict is None and rule.text is not None and "iif" in rule.text


def test_elements_in_every_spelling_nft_uses_read_the_same() -> None:
    """Prefix elements with counters (compacted while parsing), bare addresses and prefixes,
    and an element the model cannot hold (a range) kept as its own JSON text."""
    counted = {"packets": 3, "bytes": 300}
    a_range = {"elem": {"val": {"range": ["1.0.0.1", "1.0.0.9"]}, "counter": counted}}
    listing = {
        "nftables": [
            {"table": {"family": "ip", "name": "ip-masq-agent"}},
            {
                "set": {
                    "family": "ip",
                    "table": "ip-masq-agent",
                    "name": "non-masquerade-v4",
                    "type": "ipv4_addr",
                    "flags": ["interval"],
                    "elem": [
                        {
                            "elem": {
                                "val": {"prefix": {"addr": "10.0.0.0", "len": 8}},
                                "counter": counted,
                            }
                        },
                        {"prefix": {"addr": "172.16.0.0", "len": 12}},
                        "192.168.1.1",
                        a_range,
                    ],
                }
            },
        ]
    }
    table = parse_listing(json.dumps(listing), "ip", "ip-masq-agent").unwrap()
    s = table.sets["non-masquerade-v4"]
    assert {str(n) for n in s.elements} == {"10.0.0.0/8", "172.16.0.0/12", "192.168.1.1/32"}
    assert [(str(n), c.packets, c.bytes) for n, c in s.counters.items()] == [("10.0.0.0/8", 3, 300)]
    assert s.opaque == (json.dumps(a_range, sort_keys=True),)


def nets(*texts: str) -> list[IPNetwork]:
    return [ipaddress.ip_network(t) for t in texts]


IP_TABLE = """\
table ip ip-masq-agent {
    set masquerade-v4 {
        type ipv4_addr
        flags interval
        counter
        elements = { 10.240.0.0/16 }
    }
    set non-masquerade-v4 {
        type ipv4_addr
        flags interval
        counter
        elements = { 10.0.0.0/8, 192.168.0.0/16 }
    }
    chain snat-to-node {
        meta l4proto tcp numgen random mod 61744 < 28976 masquerade to :1024-29999
        meta l4proto tcp masquerade to :32768-65535
        meta l4proto udp numgen random mod 61744 < 28976 masquerade to :1024-29999
        meta l4proto udp masquerade to :32768-65535
        meta l4proto sctp numgen random mod 61744 < 28976 masquerade to :1024-29999
        meta l4proto sctp masquerade to :32768-65535
        masquerade
    }
    chain postrouting {
        type nat hook postrouting priority srcnat + 10; policy accept;
        fib daddr type local return
        ip daddr @masquerade-v4 counter jump snat-to-node
        ip daddr 169.254.0.0/16 counter return
        ip daddr @non-masquerade-v4 counter return
        counter jump snat-to-node
    }
}
"""
INET_TABLE = """\
table inet ip-masq-agent {
    set masquerade-v4 {
        type ipv4_addr
        flags interval
        counter
    }
    set masquerade-v6 {
        type ipv6_addr
        flags interval
        counter
    }
    set non-masquerade-v4 {
        type ipv4_addr
        flags interval
        counter
        elements = { 10.0.0.0/8 }
    }
    set non-masquerade-v6 {
        type ipv6_addr
        flags interval
        counter
        elements = { fd00::/8 }
    }
    chain snat-to-node {
        meta l4proto tcp masquerade to :7 fully-random
        meta l4proto udp masquerade to :7 fully-random
        meta l4proto sctp masquerade to :7 fully-random
        masquerade fully-random
    }
    chain postrouting {
        type nat hook postrouting priority srcnat + 10; policy accept;
        fib daddr type local return
        ip daddr @masquerade-v4 counter jump snat-to-node
        ip6 daddr @masquerade-v6 counter jump snat-to-node
        ip daddr 169.254.0.0/16 counter return
        ip daddr @non-masquerade-v4 counter return
        ip6 daddr @non-masquerade-v6 counter return
        meta nfproto ipv4 counter jump snat-to-node
        meta nfproto ipv6 counter jump snat-to-node
    }
}
"""


# Without root the kernel round trip above does not run; these pin the rendered text, so the
# fast suite fails if the catch-all of an ip table gains "meta nfproto", if numgen's modulus
# and bound change places (or the ranges their shares), if a set loses "counter" (its
# elements would count nothing), or if the inet table's catch-alls lose their family.
@pytest.mark.parametrize(
    ("config", "options", "text"),
    [
        (
            MasqConfig(
                non_masquerade_cidrs=pvector(nets("10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16")),
                masquerade_cidrs=pvector(nets("10.240.0.0/16")),
            ),
            TableOptions(
                nat=NatOptions(
                    random_fully=False,
                    to_ports=(PortRange(1024, 29999), PortRange(32768, 65535)),
                )
            ),
            IP_TABLE,
        ),
        (
            MasqConfig(
                non_masquerade_cidrs=pvector(nets("10.0.0.0/8", "fd00::/8")),
                masq_link_local_ipv6=True,
            ),
            TableOptions(enable_ipv6=True, nat=NatOptions(to_ports=(PortRange(7, 7),))),
            INET_TABLE,
        ),
    ],
    ids=["ip, two port ranges", "inet, one port"],
)
def test_rendered_table_text(config: MasqConfig, options: TableOptions, text: str) -> None:
    """The table as the agent writes it, word for word (tabs shown as four spaces): sets with
    counters, CIDRs covered by another of their list left out, the --to-ports shares as
    ``numgen random mod TOTAL < SHARE``, the catch-all with ``meta nfproto`` only in an inet
    table."""
    assert render_table(desired_table(config, options)).replace("\t", "    ") == text


def numgen_rule(gen: dict[str, object]) -> list[Mapping[str, Any]]:
    """``meta l4proto tcp numgen ... < 1 masquerade`` as nft's JSON listing spells it."""
    return [
        {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
        {"match": {"op": "<", "left": {"numgen": gen}, "right": 1}},
        {"masquerade": None},
    ]


# Fails if the parser ignores a numgen offset: "numgen random mod 2 offset 5 < 1" never
# matches (the numbers run 5..6), so reading it as the agent's rule would hide a rule that
# masquerades nothing from the plan.
def test_a_numgen_offset_makes_the_rule_opaque() -> None:
    """A numgen match with an offset is outside the agent's grammar: the rule is opaque,
    while the same rule without the offset is the agent's (modulus 2, bound 1)."""
    plain = parse_rule(numgen_rule({"mode": "random", "mod": 2}))
    assert (plain.verdict, plain.protocol, plain.numgen) == ("masquerade", "tcp", (2, 1))
    offset = parse_rule(numgen_rule({"mode": "random", "mod": 2, "offset": 5}))
    assert offset.verdict is None and offset.text is not None and '"offset": 5' in offset.text
