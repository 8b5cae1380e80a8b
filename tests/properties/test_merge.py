"""merge: order/duplication independence, conflicts iff explicit disagreement, defaults."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import replace

import netaddr
from hypothesis import example, given
from hypothesis import strategies as st
from integration.expected import RESERVED, RFC1918
from pyrsistent import pvector
from returns.result import Failure, Success
from strategies import fragment_histories

from masq.core.addresses import IPNetwork, cidr_key, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.duration import format_duration
from masq.core.fragment import Fragment
from masq.core.merge import Merged, merge, provenance

# A small pool so that fragments overlap, repeat and cover each other often.
POOL_V4 = [
    ipaddress.IPv4Network(c)
    for c in (
        "10.0.0.0/8",
        "10.0.0.0/9",
        "10.128.0.0/9",
        "10.0.0.0/16",
        "10.1.0.0/16",
        "192.168.0.0/16",
        "192.168.1.0/24",
        "172.16.0.0/12",
        "100.64.0.0/10",
        "0.0.0.0/0",
    )
]
POOL_V6 = [
    ipaddress.IPv6Network(c) for c in ("fd00::/8", "fd00::/9", "fd80::/9", "2001:db8::/32", "::/0")
]
SOURCES = ["a.yaml", "b.yaml", "c.json", "d", "zz"]
TEN_8, TEN_LOW_9, TEN_HIGH_9 = POOL_V4[:3]
# Two adjacent /9s in one file cover a /8 in another only as a union (the spans must join).
UNION_COVERS = [
    Fragment("a.yaml", masquerade_cidrs=pvector([TEN_LOW_9, TEN_HIGH_9])),
    Fragment("b.yaml", non_masquerade_cidrs=pvector([TEN_8])),
]
# A masquerade /8 covers a non-masquerade /9: the /8 is the /9's immediate supernet.
SUPERNET_COVERS = [
    Fragment("a.yaml", masquerade_cidrs=pvector([TEN_8])),
    Fragment("b.yaml", non_masquerade_cidrs=pvector([TEN_HIGH_9])),
]


def cidr_lists(pool: list[IPNetwork]) -> st.SearchStrategy[object]:
    return st.none() | st.lists(st.sampled_from(pool), max_size=4).map(sorted_cidrs)


@st.composite
def fragments(draw: st.DrawFn, v6: bool = True, limits: bool = True) -> Fragment:
    pool = POOL_V4 + POOL_V6 if v6 else POOL_V4
    return Fragment(
        source=draw(st.sampled_from(SOURCES)),
        non_masquerade_cidrs=draw(cidr_lists(pool)),  # type: ignore[arg-type]
        masquerade_cidrs=draw(cidr_lists(pool)),  # type: ignore[arg-type]
        masq_link_local=draw(st.none() | st.booleans()),
        masq_link_local_ipv6=draw(st.none() | st.booleans()),
        resync_interval=draw(st.none() | st.sampled_from([0.5, 30.0, 60.0, 90.0])),
        cidr_limit=draw(st.none() | st.integers(0, 20)) if limits else None,
    )


def distinct_sources(frags: list[Fragment]) -> list[Fragment]:
    """One fragment per source name, as a real config directory has."""
    seen: dict[str, Fragment] = {}
    for f in frags:
        seen.setdefault(f.source, f)
    return list(seen.values())


# Fails if merge keeps "last file wins" for any key, or emits conflicts/CIDRs in input order.
@given(st.lists(fragments(), max_size=5), st.randoms(use_true_random=False), st.booleans())
def test_merge_is_order_and_duplication_independent(
    frags: list[Fragment], rnd: object, v6: bool
) -> None:
    """For any fragments (one per file name), merging them in any order, or with some of them
    repeated, gives an equal result: the same config and the same conflicts."""
    frags = distinct_sources(frags)
    shuffled = list(frags)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    duplicated = shuffled + shuffled[: len(shuffled) // 2 + 1]
    expected = merge(frags, enable_ipv6=v6)
    assert merge(shuffled, enable_ipv6=v6) == expected
    assert merge(duplicated, enable_ipv6=v6) == expected


def expected_conflicts(frags: list[Fragment]) -> set[tuple[str, str | None, frozenset[str]]]:
    """(key, covered CIDR, sources involved), computed from explicit values with netaddr."""
    out: set[tuple[str, str | None, frozenset[str]]] = set()
    scalar_keys: dict[str, Callable[[Fragment], object]] = {
        "masqLinkLocal": lambda f: f.masq_link_local,
        "masqLinkLocalIPv6": lambda f: f.masq_link_local_ipv6,
        "resyncInterval": lambda f: f.resync_interval,
        "cidrLimit": lambda f: f.cidr_limit,
    }
    for key, get in scalar_keys.items():
        setters = [f for f in frags if get(f) is not None]
        if len({get(f) for f in setters}) > 1:
            out.add((key, None, frozenset(f.source for f in setters)))
    masq = netaddr.IPSet(str(n) for f in frags for n in f.masquerade_cidrs or ())
    explicit = {n for f in frags for n in f.non_masquerade_cidrs or ()}
    for net in explicit:
        if netaddr.IPSet([str(net)]).issubset(masq):
            listing = {f.source for f in frags if net in (f.non_masquerade_cidrs or ())}
            overlapping = {
                f.source for f in frags for m in f.masquerade_cidrs or () if m.overlaps(net)
            }
            out.add(("nonMasqueradeCIDRs", str(net), frozenset(listing | overlapping)))
    return out


# Fails if a source that leaves a key out is counted as disagreeing (e.g. None treated as
# false), if equal values from two files are reported, or if coverage by a *union* of
# masquerade CIDRs (10.0.0.0/9 + 10.128.0.0/9 over 10.0.0.0/8) is missed, or if a covering
# masquerade CIDR that is the covered one's immediate supernet goes unnamed.
@given(st.lists(fragments(limits=False), max_size=5))
@example(UNION_COVERS)
@example(SUPERNET_COVERS)
def test_conflicts_iff_explicit_disagreement(frags: list[Fragment]) -> None:
    """merge reports a conflict exactly when files explicitly disagree: a scalar key (masqLinkLocal,
    masqLinkLocalIPv6, resyncInterval, cidrLimit) given different values, naming every file that
    sets it; or a nonMasqueradeCIDR wholly covered by the union of the masqueradeCIDRs, naming the
    files that list it and those whose masquerade CIDRs overlap it. Conflicts come in a fixed order,
    each with its values sorted by file, each printed as one line naming its key."""
    frags = distinct_sources(frags)
    merged = merge(frags, enable_ipv6=True).unwrap()
    got = {
        (c.key, None if c.cidr is None else str(c.cidr), frozenset(s for s, _ in c.values))
        for c in merged.conflicts
    }
    assert got == expected_conflicts(frags)
    order = [
        (c.key, cidr_key(c.cidr) if c.cidr else (0, 0, 0), tuple(c.values))
        for c in merged.conflicts
    ]
    assert order == sorted(order)  # deterministic report order
    for c in merged.conflicts:
        assert list(c.values) == sorted(c.values)  # values sorted by source
        assert "\n" not in str(c) and c.key in str(c)


# Fails if conflict reporting depends on which source name sorts first (e.g. only the
# first source's value is compared against the rest).
@given(st.lists(fragments(limits=False), max_size=5), st.permutations(SOURCES))
def test_conflicts_symmetric_in_sources(frags: list[Fragment], names: list[str]) -> None:
    """Renaming the files (any permutation of the names) changes nothing but the names: the same
    config, and the same conflicts with each value under its file's new name."""
    frags = distinct_sources(frags)
    rename = dict(zip(SOURCES, names, strict=True))
    renamed = [
        Fragment(
            rename[f.source],
            f.non_masquerade_cidrs,
            f.masquerade_cidrs,
            f.masq_link_local,
            f.masq_link_local_ipv6,
            f.resync_interval,
            f.cidr_limit,
        )
        for f in frags
    ]
    before = merge(frags, enable_ipv6=True).unwrap()
    after = merge(renamed, enable_ipv6=True).unwrap()
    assert before.config == after.config
    assert {
        (c.key, c.cidr, frozenset((rename[s], v) for s, v in c.values)) for c in before.conflicts
    } == {(c.key, c.cidr, frozenset(c.values)) for c in after.conflicts}


SCALAR_TEXT: dict[str, Callable[[MasqConfig], str]] = {
    "masqLinkLocal": lambda c: "true" if c.masq_link_local else "false",
    "masqLinkLocalIPv6": lambda c: "true" if c.masq_link_local_ipv6 else "false",
    "resyncInterval": lambda c: format_duration(c.resync_interval),
    "cidrLimit": lambda c: str(c.cidr_limit),
}


# Fails if a scalar conflict's message and the merged value follow different rules (e.g. the
# message says the shortest resyncInterval wins while the config keeps the longest).
@given(st.lists(fragments(v6=False), max_size=5))
def test_a_scalar_conflict_names_the_value_the_config_holds(frags: list[Fragment]) -> None:
    """For every scalar key the files disagree on, the conflict's resolution ends with the value
    the merged config holds for that key, spelled as a file would spell it; and that value is
    one of the values the files gave."""
    frags = distinct_sources(frags)
    merged = merge(frags, default_resync_interval=45.0)
    if isinstance(merged, Failure):  # over a cidrLimit: no config to compare with
        return
    result = merged.unwrap()
    scalar_conflicts = [c for c in result.conflicts if c.cidr is None]
    for c in scalar_conflicts:
        held = SCALAR_TEXT[c.key](result.config)
        assert c.resolution.endswith(f": {held}")
        assert held in {value for _, value in c.values}


# Fails if the nonMasqueradeCIDRs default is dropped when some file sets only another key
# (upstream v2's bug), if an explicit empty list is replaced by the default, or if any
# other key's default or merge rule (OR, minimum, union) is changed.
@given(st.lists(fragments(limits=False), max_size=5), st.booleans(), st.sampled_from([5.0, 60.0]))
def test_defaults_and_rules_per_key(frags: list[Fragment], reserved: bool, resync: float) -> None:
    """Per key: nonMasqueradeCIDRs is the union over the files that set it (an empty list counts as
    set), else the default (RFC 1918, or every reserved range with --nomasq-all-reserved-ranges);
    masqueradeCIDRs is the union; masqLinkLocal and masqLinkLocalIPv6 are true iff some file sets
    them true; resyncInterval is the smallest given, else the flag's; cidrLimit is 64 when no file
    sets it; CIDRs come out in canonical order."""
    frags = distinct_sources(frags)
    config = (
        merge(frags, enable_ipv6=True, reserved_ranges=reserved, default_resync_interval=resync)
        .unwrap()
        .config
    )
    setters = [f.non_masquerade_cidrs for f in frags if f.non_masquerade_cidrs is not None]
    if setters:
        assert set(config.non_masquerade_cidrs) == {n for s in setters for n in s}
    else:
        defaults = RESERVED if reserved else RFC1918
        assert set(config.non_masquerade_cidrs) == {ipaddress.ip_network(c) for c in defaults}
    assert set(config.masquerade_cidrs) == {n for f in frags for n in f.masquerade_cidrs or ()}
    assert config.masq_link_local == any(f.masq_link_local is True for f in frags)
    assert config.masq_link_local_ipv6 == any(f.masq_link_local_ipv6 is True for f in frags)
    explicit = [f.resync_interval for f in frags if f.resync_interval is not None]
    assert config.resync_interval == (min(explicit) if explicit else resync)
    assert config.cidr_limit == 64
    assert list(config.non_masquerade_cidrs) == list(sorted_cidrs(config.non_masquerade_cidrs))


# Fails if IPv6 CIDRs pass without enable_ipv6, or if the error blames only one of several
# sources that list IPv6 CIDRs.
@given(st.lists(fragments(limits=False), min_size=1, max_size=5))
def test_ipv6_without_enable_names_every_source(frags: list[Fragment]) -> None:
    """Without --enable-ipv6 a merge succeeds iff no file lists an IPv6 CIDR; otherwise it fails,
    naming every file that lists one, with a message that says IPv6."""
    frags = distinct_sources(frags)
    v6_sources = {
        f.source
        for f in frags
        for n in (*(f.non_masquerade_cidrs or ()), *(f.masquerade_cidrs or ()))
        if n.version == 6
    }
    result = merge(frags, enable_ipv6=False)
    if not v6_sources:
        assert isinstance(result, Success)
        return
    assert isinstance(result, Failure)
    error = result.failure()
    assert set(error.source.split(", ")) == v6_sources
    assert "IPv6" in str(error)


# Fails if the merged count ignores masqueradeCIDRs or the default CIDRs, counts a CIDR in
# both lists twice, uses the largest cidrLimit, or blames no source.
@given(st.lists(fragments(v6=False), min_size=1, max_size=5))
def test_over_limit_fails_naming_sources(frags: list[Fragment]) -> None:
    """The merged config holds at most the smallest cidrLimit any file gives (64 by default)
    distinct CIDRs, counting both lists and the default ranges, a CIDR in both lists once; over it,
    merge fails naming the files that list CIDRs (or, when none does, the files setting that limit),
    the count and the limit."""
    frags = distinct_sources(frags)
    setters = [f.non_masquerade_cidrs for f in frags if f.non_masquerade_cidrs is not None]
    non_masq = (
        {n for s in setters for n in s} if setters else {ipaddress.ip_network(c) for c in RFC1918}
    )
    count = len(non_masq | {n for f in frags for n in f.masquerade_cidrs or ()})
    limit = min((f.cidr_limit for f in frags if f.cidr_limit is not None), default=64)
    result = merge(frags)
    if count <= limit:
        assert isinstance(result, Success)
        return
    assert isinstance(result, Failure)
    error = result.failure()
    listing = {f.source for f in frags if f.non_masquerade_cidrs or f.masquerade_cidrs}
    limiting = {f.source for f in frags if f.cidr_limit == limit}
    assert set(error.source.split(", ")) == (listing or limiting)
    assert f"{count} distinct CIDRs" in str(error) and str(limit) in str(error)


# Fails if provenance returns sources in input order, includes files that list only a
# supernet of the network, or ignores masqueradeCIDRs.
@given(st.lists(fragments(limits=False), max_size=5), st.sampled_from(POOL_V4 + POOL_V6))
def test_provenance_names_exactly_the_listing_sources(
    frags: list[Fragment], net: IPNetwork
) -> None:
    """provenance(fragments, net) names, sorted, exactly the files that list net itself (not a
    supernet of it) in either list, whatever the order of the fragments."""
    expected = sorted(
        {
            f.source
            for f in frags
            if any(n == net for n in (*(f.non_masquerade_cidrs or ()), *(f.masquerade_cidrs or ())))
        }
    )
    assert provenance(frags, net) == tuple(expected)
    assert provenance(reversed(frags), net) == tuple(expected)


# Fails if the incremental merge misses a CIDR still listed by another file, keeps a conflict
# whose cause went away, miscounts CIDRs in several lists (sourceCIDRs too) against cidrLimit,
# or loses the defaults' switch when the last file listing nonMasqueradeCIDRs goes.
@given(st.data(), st.booleans(), st.booleans())
def test_incremental_merge_equals_merge_from_scratch(
    data: st.DataObject, v6: bool, reserved: bool
) -> None:
    """For any sequence of config directories where each step adds, removes or edits one
    file, merging each step with ``previous=`` the last successful merge gives exactly what
    merging it from scratch gives (config, conflicts, or the same error), and the config's
    ``change`` names exactly the CIDRs each list gained and lost."""
    history = data.draw(fragment_histories(ipv6=v6 or data.draw(st.integers(0, 3)) == 0))
    previous: Merged | None = None
    for frags in history:
        scratch = merge(frags, enable_ipv6=v6, reserved_ranges=reserved)
        stepped = merge(frags, enable_ipv6=v6, reserved_ranges=reserved, previous=previous)
        assert stepped == scratch
        if isinstance(stepped, Failure):
            continue
        config = stepped.unwrap().config
        if previous is not None and config.change is not None:
            before = previous.config
            for key, old, new in (
                ("nonMasqueradeCIDRs", before.non_masquerade_cidrs, config.non_masquerade_cidrs),
                ("masqueradeCIDRs", before.masquerade_cidrs, config.masquerade_cidrs),
                ("sourceCIDRs", before.source_cidrs, config.source_cidrs),
            ):
                change = config.change.lists[key]
                assert change.follows(old, new)
                assert set(change.added) == set(new) - set(old)
                assert set(change.removed) == set(old) - set(new)
        previous = stepped.unwrap()


def test_an_edit_of_one_file_records_its_change() -> None:
    """Editing one CIDR of one file out of two merges incrementally: the config's change
    names that CIDR alone, and the untouched list is the previous object itself."""
    a = Fragment(
        "a", non_masquerade_cidrs=sorted_cidrs(net(c) for c in ("10.0.0.0/8", "11.0.0.0/8"))
    )
    b = Fragment("b", masquerade_cidrs=sorted_cidrs([net("10.1.0.0/16")]))
    first = merge([a, b]).unwrap()
    edited = Fragment(
        "a", non_masquerade_cidrs=sorted_cidrs([net("10.0.0.0/8"), net("12.0.0.0/8")])
    )
    second = merge([edited, b], previous=first).unwrap()
    assert second == merge([edited, b]).unwrap()
    change = second.config.change
    assert change is not None
    assert change.lists["nonMasqueradeCIDRs"].added == (net("12.0.0.0/8"),)
    assert change.lists["nonMasqueradeCIDRs"].removed == (net("11.0.0.0/8"),)
    assert second.config.masquerade_cidrs is first.config.masquerade_cidrs


def net(text: str) -> IPNetwork:
    return ipaddress.ip_network(text)


ADDRESSES_V4 = [ipaddress.IPv4Address(a) for a in ("192.0.2.10", "192.0.2.11", "198.51.100.1")]
ADDRESSES_V6 = [ipaddress.IPv6Address(a) for a in ("2001:db8::10", "2001:db8::11")]
INTERFACE_POOL = ["eth0", "eth1", "eth*", "wlan0", "bond0.100"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
ADDRESS_KEYS: list[tuple[str, Callable[[Fragment], Address | None]]] = [
    ("outputAddress", lambda f: f.output_address),
    ("outputAddressIPv6", lambda f: f.output_address_ipv6),
]


@st.composite
def egress_fragments(draw: st.DrawFn, v6: bool = True) -> Fragment:
    """``fragments`` that also set (or leave out) the egress selection keys."""
    base = draw(fragments(v6=v6, limits=False))
    pool = POOL_V4 + POOL_V6 if v6 else POOL_V4
    return replace(
        base,
        output_interfaces=draw(
            st.none()
            | st.lists(st.sampled_from(INTERFACE_POOL), max_size=3).map(
                lambda names: pvector(sorted(set(names)))
            )
        ),
        source_cidrs=draw(cidr_lists(pool)),  # type: ignore[arg-type]
        output_address=draw(st.none() | st.sampled_from(ADDRESSES_V4)),
        output_address_ipv6=draw(st.none() | st.sampled_from(ADDRESSES_V6)) if v6 else None,
    )


@given(st.lists(egress_fragments(), max_size=5), st.randoms(use_true_random=False))
def test_egress_keys_merge_independent_of_order(frags: list[Fragment], rnd: object) -> None:
    """With outputInterfaces, sourceCIDRs and outputAddress* in the files, merging them in any
    order, or with some repeated, gives an equal config and equal conflicts; the lists are the
    union of what the files give (sorted), each address the lowest any file gives."""
    frags = distinct_sources(frags)
    shuffled = list(frags)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    expected = merge(frags, enable_ipv6=True)
    assert merge(shuffled, enable_ipv6=True) == expected
    assert merge(shuffled + shuffled[:2], enable_ipv6=True) == expected
    config = expected.unwrap().config
    assert list(config.output_interfaces) == sorted(
        {i for f in frags for i in f.output_interfaces or ()}
    )
    assert set(config.source_cidrs) == {n for f in frags for n in f.source_cidrs or ()}
    merged_addresses = (config.output_address, config.output_address_ipv6)
    for (_, get), got in zip(ADDRESS_KEYS, merged_addresses, strict=True):
        given_values = [v for f in frags if (v := get(f)) is not None]
        assert got == (min(given_values, key=int) if given_values else None)


@given(st.lists(egress_fragments(), max_size=5))
def test_egress_address_conflicts_iff_files_disagree(frags: list[Fragment]) -> None:
    """outputAddress (outputAddressIPv6) conflicts exactly when two files give different
    addresses, naming every file that sets it, with the resolution naming the lowest; lists
    (outputInterfaces, sourceCIDRs) never conflict."""
    frags = distinct_sources(frags)
    merged = merge(frags, enable_ipv6=True).unwrap()
    for key, get in ADDRESS_KEYS:
        setters = {(f.source, str(v)) for f in frags if (v := get(f)) is not None}
        conflicts = [c for c in merged.conflicts if c.key == key]
        if len({v for _, v in setters}) > 1:
            (conflict,) = conflicts
            assert set(conflict.values) == setters
            lowest = min((v for f in frags if (v := get(f)) is not None), key=int)
            assert str(conflict).endswith(f"the lowest address wins: {lowest}")
        else:
            assert conflicts == []
    assert not [c for c in merged.conflicts if c.key in ("outputInterfaces", "sourceCIDRs")]


@given(st.lists(egress_fragments(), min_size=1, max_size=5))
def test_egress_ipv6_without_enable_and_limit(frags: list[Fragment]) -> None:
    """Without --enable-ipv6, an IPv6 sourceCIDR or an outputAddressIPv6 fails the merge like an
    IPv6 destination CIDR (naming every file with one); and sourceCIDRs count towards the
    merged cidrLimit (a CIDR listed under several keys once)."""
    frags = distinct_sources(frags)
    v6 = {
        f.source
        for f in frags
        for n in (
            *(f.non_masquerade_cidrs or ()),
            *(f.masquerade_cidrs or ()),
            *(f.source_cidrs or ()),
        )
        if n.version == 6
    }
    with_address = {f.source for f in frags if f.output_address_ipv6 is not None}
    result = merge(frags, enable_ipv6=False)
    if v6 or with_address:
        assert isinstance(result, Failure)
        assert set(result.failure().source.split(", ")) == (v6 or with_address)
        assert "IPv6" in str(result.failure())
    else:
        assert isinstance(result, Success)
    config = merge(frags, enable_ipv6=True, reserved_ranges=False).unwrap().config
    count = len(
        set(config.non_masquerade_cidrs) | set(config.masquerade_cidrs) | set(config.source_cidrs)
    )
    limited = [replace(frags[0], cidr_limit=count - 1), *frags[1:]] if count else frags
    outcome = merge(limited, enable_ipv6=True)
    assert isinstance(outcome, Failure) == (count > 0)
    if count:
        assert f"{count} distinct CIDRs" in str(outcome.failure())


# /24s of one /20 and what covers them: files of these hold ranges that are disjoint,
# nested, interleaved or touch at one CIDR.
RUN_POOL: list[IPNetwork] = [
    *(ipaddress.IPv4Network(f"10.0.{k}.0/24") for k in range(16)),
    *(ipaddress.IPv4Network(c) for c in ("10.0.0.0/20", "10.0.8.0/21", "10.0.4.0/22")),
    *(ipaddress.IPv6Network(f"fd00:0:0:{k}::/64") for k in range(4)),
]


@given(st.lists(st.lists(st.sampled_from(RUN_POOL), max_size=6).map(sorted_cidrs), max_size=6))
def test_union_is_every_files_cidrs_in_canonical_order(lists: list[list[IPNetwork]]) -> None:
    """The merged list is every file's CIDRs, deduplicated and in canonical order, whether
    the files' ranges (first to last CIDR) are disjoint (laid end to end without a sort),
    nested, interleaved, or share a CIDR."""
    frags = [Fragment(f"f{i}", non_masquerade_cidrs=pvector(v)) for i, v in enumerate(lists)]
    merged = merge(frags, enable_ipv6=True, default_resync_interval=60.0).unwrap()
    everything = [n for v in lists for n in v]
    if lists:
        assert list(merged.config.non_masquerade_cidrs) == list(sorted_cidrs(everything))
