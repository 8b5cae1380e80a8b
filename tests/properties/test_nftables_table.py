"""Properties of the desired nftables table (masq/core/nftables/table.py) and its rendering."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import replace

import netaddr
from hypothesis import given
from hypothesis import strategies as st
from nft_text import masquerades, parse_text
from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Success
from strategies import configs, fragment_histories, probe_addresses, table_options

from masq.core.addresses import IPNetwork, cidr_key, family_of
from masq.core.config import MasqConfig
from masq.core.decision import should_masquerade
from masq.core.fragment import Fragment, parse_fragment
from masq.core.merge import merge
from masq.core.nftables.codec import render_table
from masq.core.nftables.model import NftTable
from masq.core.nftables.table import TableOptions, desired_table


@given(config=configs(), options=table_options(), data=st.data())
def test_rendered_table_decides_like_should_masquerade(
    config: MasqConfig, options: TableOptions, data: st.DataObject
) -> None:
    """For every config and every non-local destination of an enabled family, the rendered
    table text, read by an independent nft-text interpreter with netaddr set lookups,
    masquerades exactly when should_masquerade says so: first and last addresses of every
    CIDR in play and their neighbours, link-local ranges, and random addresses."""
    # Fails if the masquerade exceptions come after the link-local return, if a covered
    # CIDR's coverer is dropped instead of the covered one, if a family's catch-all or
    # link-local rule is missing, or if an element is rendered with the wrong prefix.
    text = parse_text(render_table(desired_table(config, options)))
    for ip in probe_addresses(config, data):
        if family_of(ip) not in options.families:
            continue
        assert masquerades(text, str(ip)) is should_masquerade(config, ip), (ip, text)


@given(config=configs(), options=table_options())
def test_sets_hold_exactly_the_uncovered_cidrs(config: MasqConfig, options: TableOptions) -> None:
    """Each set holds its list's CIDRs of its family minus those another CIDR of the same
    list covers (so no two elements overlap, as the kernel demands), adjacent CIDRs stay
    separate elements, and together the elements cover exactly what the list covers."""
    table = desired_table(config, options)
    for family in options.families:
        for kind, listed in (
            ("masquerade", config.masquerade_cidrs),
            ("non-masquerade", config.non_masquerade_cidrs),
        ):
            mine = [n for n in listed if family_of(n) == family]
            elements = table.sets[f"{kind}-v{4 if family == 'ipv4' else 6}"].elements
            assert elements <= set(mine)
            assert netaddr.IPSet(str(e) for e in elements) == netaddr.IPSet(str(n) for n in mine)
            for a in elements:
                assert not any(a != b and a.overlaps(b) for b in elements), a
            for net in set(mine) - set(elements):
                assert any(e != net and net.subnet_of(e) for e in elements)  # type: ignore[arg-type]


@given(config=configs(), options=table_options())
def test_family_and_sets_follow_enable_ipv6(config: MasqConfig, options: TableOptions) -> None:
    """Without IPv6 the table is family ip with IPv4 sets only (an inet nat chain would turn
    on IPv6 NAT); with IPv6 it is inet with a set pair per family."""
    table = desired_table(config, options)
    assert table.family == ("inet" if options.enable_ipv6 else "ip")
    suffixes = {name.rsplit("-", 1)[1] for name in table.sets}
    assert suffixes == ({"v4", "v6"} if options.enable_ipv6 else {"v4"})


def test_zero_prefix_and_link_local_overlap_render_and_decide() -> None:
    """A /0 in either list and a non-masquerade range containing link-local are legal
    elements and decide like should_masquerade (the link-local rule comes first)."""
    fragment = parse_fragment(
        "nonMasqueradeCIDRs: [0.0.0.0/0, 169.254.0.0/16, '::/0']\n"
        "masqueradeCIDRs: [169.254.169.254/32, 2001:db8::/32]\n",
        "f",
    ).unwrap()
    config = merge([fragment], enable_ipv6=True).unwrap().config
    options = TableOptions(enable_ipv6=True)
    text = parse_text(render_table(desired_table(config, options)))
    for ip in ("169.254.169.254", "169.254.1.1", "8.8.8.8", "2001:db8::1", "fe80::1", "2001::1"):
        address = ipaddress.ip_address(ip)
        assert masquerades(text, ip) is should_masquerade(config, address), ip
    assert text.sets["non-masquerade-v4"][2] == ["0.0.0.0/0"]


def _configs_over_time(history: list[list[Fragment]], v6: bool) -> list[MasqConfig]:
    """Each step's config, merged incrementally from the last good one (as the agent does)."""
    configs_seen: list[MasqConfig] = []
    previous = None
    for frags in history:
        merged = merge(frags, enable_ipv6=v6, previous=previous)
        if isinstance(merged, Success):
            previous = merged.unwrap()
            configs_seen.append(previous.config)
    return configs_seen


# Fails if a removed covering CIDR does not bring back the CIDRs it covered, if an added one
# does not push out those it covers, if a set of the other family is touched, or if the
# recorded delta or order disagree with the elements.
@given(data=st.data(), options=table_options())
def test_derived_table_equals_table_from_scratch(
    data: st.DataObject, options: TableOptions
) -> None:
    """For any sequence of configs from incremental merges, the table derived from the
    previous config's table equals the one built from scratch, and each derived set knows
    exactly which elements it gained and lost."""
    history = data.draw(fragment_histories(ipv6=options.enable_ipv6))
    previous: tuple[MasqConfig, NftTable] | None = None
    for config in _configs_over_time(history, options.enable_ipv6):
        table = desired_table(config, options, previous)
        assert table == desired_table(config, options)
        for name, s in table.sets.items():
            assert s.index is not None and s.index.of is s.elements
            if previous is not None and config.change is not None:
                before = previous[1].sets[name].elements
                if s.elements is not before:
                    assert s.delta_from(before) == (before - s.elements, s.elements - before)
        previous = (config, table)


@given(config=configs(), options=table_options(), rnd=st.randoms(use_true_random=False))
def test_a_config_out_of_canonical_order_makes_the_same_table(
    config: MasqConfig, options: TableOptions, rnd: random.Random
) -> None:
    """A config built by hand with its lists in any order, duplicates included, makes the
    table of the same config in canonical order; and every set's ``ordered()`` is its
    elements in canonical order, each once."""

    def shuffled(nets: Sequence[IPNetwork]) -> PVector[IPNetwork]:
        out = [*nets, *nets[: rnd.randint(0, len(nets))]]
        rnd.shuffle(out)
        return pvector(out)

    table = desired_table(config, options)
    by_hand = replace(
        config,
        non_masquerade_cidrs=shuffled(config.non_masquerade_cidrs),
        masquerade_cidrs=shuffled(config.masquerade_cidrs),
    )
    assert desired_table(by_hand, options) == table
    for s in table.sets.values():
        assert list(s.ordered()) == sorted(s.elements, key=cidr_key)
