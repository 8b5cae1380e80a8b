"""Config text to addresses and CIDRs: what parses, to what, and the message for what does not."""

from __future__ import annotations

import ipaddress
from itertools import islice

import netaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success
from strategies import NEAR_MISSES, cidrs, ipv4_lists

from masq.core.addresses import (
    _LAYOUT_HOLDS,
    FAMILIES,
    IPNetwork,
    _assemble_ipv4_network,
    cidr_key,
    edited_cidrs,
    family_of,
    family_range,
    holds,
    inside,
    parse_cidr,
    parse_cidrs_sorted,
    parse_ip,
    sorted_cidrs,
    supernets,
)
from masq.core.errors import ConfigError, collect, invalid

PLAIN = (
    "not a plain CIDR (only an address and a prefix length, like 10.0.0.0/8 or fd00::/8;"
    " no spaces, quotes or other words)"
)
BAD_ADDRESS = "invalid address (IPv4 octets are 0-255 without leading zeros; IPv6 as in RFC 4291)"


@st.composite
def networks(draw: st.DrawFn) -> IPNetwork:
    """Any aligned network of either family, /0 and host routes included."""
    version = draw(st.sampled_from((4, 6)))
    bits = 32 if version == 4 else 128
    prefix = draw(st.sampled_from((0, bits)) | st.integers(0, bits))
    net: IPNetwork = ipaddress.ip_network((draw(st.integers(0, 2**bits - 1)), prefix), strict=False)
    return net


@given(networks())
def test_every_network_parses_from_its_own_spelling(net: IPNetwork) -> None:
    """For every aligned IPv4 or IPv6 network, /0 and /32 (/128) included, parsing the
    standard spelling ``address/prefix`` gives that network back."""
    assert parse_cidr(str(net)) == Success(net)


@given(networks(), st.integers(1, 2))
def test_a_prefix_with_leading_zeros_is_refused(net: IPNetwork, zeros: int) -> None:
    """A prefix length written with leading zeros (``10.0.0.0/08``, ``::/00``) is refused as
    not a plain CIDR, even though it names a valid network: only the canonical spelling of
    the prefix is accepted, as for the address's octets."""
    text = f"{net.network_address}/{'0' * zeros}{net.prefixlen}"
    result = parse_cidr(text)
    assert isinstance(result, Failure)
    assert str(result.failure()) == f"{text!r}: {PLAIN}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty CIDR"),
        ("10.0.0.0", "'10.0.0.0': missing prefix length (write e.g. 10.0.0.0/8 or fd00::/8)"),
        ("10.0.0.0/08", f"'10.0.0.0/08': {PLAIN}"),
        ("10.0.0.0/1000", f"'10.0.0.0/1000': {PLAIN}"),
        ("10.0.0.0/8 ", f"'10.0.0.0/8 ': {PLAIN}"),
        ("fe80::%eth0/64", f"'fe80::%eth0/64': {PLAIN}"),
        ("010.0.0.0/8", f"'010.0.0.0/8': {BAD_ADDRESS}"),
        ("10.256.0.0/16", f"'10.256.0.0/16': {BAD_ADDRESS}"),
        ("10.0.0.0/33", "'10.0.0.0/33': prefix length over 32 for IPv4"),
        ("fd00::/129", "'fd00::/129': prefix length over 128 for IPv6"),
        ("10.0.0.1/8", "'10.0.0.1/8': host bits set (misaligned); did you mean 10.0.0.0/8?"),
        ("10.0.0.0/0", "'10.0.0.0/0': host bits set (misaligned); did you mean 0.0.0.0/0?"),
    ],
)
def test_parse_cidr_refusals(text: str, message: str) -> None:
    result = parse_cidr(text)
    assert isinstance(result, Failure)
    assert str(result.failure()) == message


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.1", "10.0.0.1"),
        (" fd00::1 ", "fd00::1"),  # surrounding blanks, as typed on a command line
        ("::ffff:1.2.3.4", "::ffff:102:304"),
    ],
)
def test_parse_ip_accepts(text: str, address: str) -> None:
    assert parse_ip(text) == Success(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/8", "'10.0.0.0/8': is a CIDR; give one address, such as 10.0.0.1"),
        ("fe80::1%eth0", "'fe80::1%eth0': has an IPv6 zone; give the address without %zone"),
        ("10.0.0.256", "'10.0.0.256': is not an IPv4 or IPv6 address"),
        ("010.0.0.1", "'010.0.0.1': is not an IPv4 or IPv6 address"),
        ("", "'': is not an IPv4 or IPv6 address"),
        ("bogus", "'bogus': is not an IPv4 or IPv6 address"),
    ],
)
def test_parse_ip_refusals(text: str, message: str) -> None:
    """Each refusal says what is wrong with the text, and quotes the text as given."""
    result = parse_ip(text)
    assert isinstance(result, Failure)
    assert result.failure().value == text
    assert str(result.failure()) == message


# Fails if a bisect uses another order than cidr_key, if ``inside`` misses a CIDR that
# starts at the last address or takes one just past it, or if an edit loses the order.
@given(
    st.lists(st.one_of(cidrs("ipv4"), cidrs("ipv6")), max_size=12),
    st.lists(st.one_of(cidrs("ipv4"), cidrs("ipv6")), max_size=6),
    st.one_of(cidrs("ipv4"), cidrs("ipv6")),
)
def test_ordered_lookups_and_edits_agree_with_brute_force(
    listed: list[IPNetwork], others: list[IPNetwork], probe: IPNetwork
) -> None:
    """On a canonically ordered list: ``holds`` is membership, ``inside`` is every listed
    CIDR that starts within the probe's range (so its subnets, itself, and its supernets
    starting where it starts), ``supernets`` every listed CIDR that covers the probe
    strictly (shortest first), ``family_range`` indexes exactly one family's CIDRs, and
    ``edited_cidrs`` equals sorting the edited set."""
    nets = sorted_cidrs(listed)
    for family in FAMILIES:
        assert [nets[i] for i in family_range(nets, family)] == [
            n for n in nets if family_of(n) == family
        ]
    assert holds(nets, probe) == (probe in set(nets))
    first, last = int(probe.network_address), int(probe.broadcast_address)
    expected = [
        n for n in nets if n.version == probe.version and first <= int(n.network_address) <= last
    ]
    assert list(inside(nets, probe)) == expected
    assert supernets(nets, probe) == [
        n
        for n in nets
        if n.version == probe.version and n != probe and probe.subnet_of(n)  # type: ignore[arg-type]
    ]
    removed = [n for n in nets if n in set(others) or n == probe]
    added = sorted_cidrs(n for n in others if n not in set(nets))
    result = edited_cidrs(nets, added, removed)
    assert result == sorted_cidrs((set(nets) - set(removed)) | set(added))


def general_path(texts: list[object]) -> Result[PVector[IPNetwork], ConfigError]:
    """Every entry through ``parse_cidr`` in turn, then ``sorted_cidrs``: the path every list
    took before the batch path existed (a non-string is an error here)."""
    parsed = collect(
        parse_cidr(t) if isinstance(t, str) else Failure(invalid("not text")) for t in texts
    )
    return parsed.map(sorted_cidrs)


def layout(net: IPNetwork) -> tuple[list[str], dict[str, object]]:
    """A network's attribute names, and their values but for ``hosts`` (the constructor's
    override for /31 and /32: a bound method or a lambda, equal to no other object's)."""
    return sorted(vars(net)), {k: v for k, v in vars(net).items() if k != "hosts"}


# Fails if the batch path accepts a spelling parse_cidr refuses (e.g. drop the alignment
# check, or let the shape allow a leading zero or /33), refuses a list parse_cidr accepts
# (e.g. IPv6 entries sent back to the general path), loses order or keeps a duplicate
# (e.g. skip the sort when the keys are not strictly increasing, or compare with <=, or
# put IPv6 first), or builds a network that differs from the constructor's in any
# attribute (e.g. drop the /31-/32 exception: those carry a ``hosts`` override).
@pytest.mark.parametrize("kind", NEAR_MISSES)
@given(data=st.data())
def test_the_batch_path_gives_what_the_general_path_gives(kind: str, data: st.DataObject) -> None:
    """For any list of entries (canonical IPv4 CIDRs in any order with repeats, and one
    entry of each other kind in turn: valid IPv6, or one step from a valid CIDR, or not
    text), ``parse_cidrs_sorted`` gives ``None`` exactly when checking each entry with
    ``parse_cidr`` fails (the caller then takes that path for its error), and otherwise
    that path's vector: the same networks in the same order, each with the same
    attributes, hash and ordering as the constructor builds; netaddr agrees on each."""
    texts = data.draw(ipv4_lists(kind))
    batch = parse_cidrs_sorted(texts)
    general = general_path(texts)
    assert (batch is None) == isinstance(general, Failure)
    if batch is None:
        return
    assert isinstance(general, Success)
    expected = general.unwrap()
    assert batch == expected
    assert [layout(n) for n in batch] == [layout(n) for n in expected]
    assert [hash(n) for n in batch] == [hash(n) for n in expected]
    assert list(batch) == sorted(set(batch), key=cidr_key)
    for net in batch:
        oracle = netaddr.IPNetwork(str(net))
        assert (oracle.value, oracle.prefixlen) == (int(net.network_address), net.prefixlen)
        assert net.broadcast_address == ipaddress.ip_network(str(net)).broadcast_address
        assert [*islice(net.hosts(), 3)] == [*islice(ipaddress.ip_network(str(net)).hosts(), 3)]


@given(st.integers(0, 2**32 - 1), st.integers(0, 30))
def test_an_assembled_ipv4_network_is_the_constructors(value: int, prefix: int) -> None:
    """For every aligned IPv4 network up to /30, the network assembled without the
    constructor holds the same attributes as ``IPv4Network((value, prefix))`` and compares,
    hashes, prints and derives (broadcast, hostmask, supernet) the same; and this Python's
    ``ipaddress`` has the layout the batch path relies on, so the tests above run it."""
    aligned = value >> (32 - prefix) << (32 - prefix)
    built = _assemble_ipv4_network(aligned, prefix)
    reference = ipaddress.IPv4Network((aligned, prefix))
    assert _LAYOUT_HOLDS
    assert vars(built) == vars(reference)
    assert (built == reference, hash(built), str(built), repr(built)) == (
        True,
        hash(reference),
        str(reference),
        repr(reference),
    )
    assert not built < reference and not reference < built
    assert (built.broadcast_address, built.hostmask, built.num_addresses) == (
        reference.broadcast_address,
        reference.hostmask,
        reference.num_addresses,
    )
    assert built.supernet() == reference.supernet() if prefix else True
