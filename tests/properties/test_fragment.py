"""parse_fragment: never raises, always blames the source, and reads what we write."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pvector
from returns.result import Failure, Success
from strategies import NEAR_MISSES, ipv4_lists

from masq.core.addresses import IPNetwork, sorted_cidrs
from masq.core.duration import format_duration
from masq.core.fragment import (
    KNOWN_KEYS,
    Fragment,
    _cidr_list,
    _cidrs,
    fragment_cidr_count,
    parse_fragment,
)

SOURCE = "conf/ip-masq-agent.yaml"

# Scalars that YAML reads in surprising ways, plus CIDR-ish and duration-ish text.
TRICKY = st.sampled_from(
    [
        "yes", "no", "on", "~", "null", "0x10", "1_000", "1:30", "2020-01-01", ".inf", "-.nan",
        "10.0.0.0/8", "10.0.0.1/8", "fd00::/8", "!!binary aGk=", "!!python/object:os.system",
        "&a [1]", "*a", "<<: *a", "{", "[", "'", '"', "- ", ": ", "\t", "60s", "-1s", "%TAG",
    ]
)  # fmt: skip


def yaml_garbage() -> st.SearchStrategy[str]:
    """Structured garbage: real keys and YAML punctuation in random arrangements."""
    token = st.one_of(TRICKY, st.sampled_from(KNOWN_KEYS), st.text(max_size=5))
    line = st.lists(token, max_size=4).map(" ".join)
    return st.lists(line, max_size=8).map("\n".join)


# Fails if an exception escapes parse_fragment: e.g. drop the catch-all in parse_fragment
# together with the yaml.YAMLError handler in _parse (unparsable text then raises); also
# fails if a message gains a newline (e.g. one put into the anchors/aliases message).
@given(st.one_of(st.text(), st.binary(), yaml_garbage()))
def test_never_raises_and_failures_name_the_source(text: str | bytes) -> None:
    """For any text or bytes (random, or YAML-like garbage made of the real keys and tricky
    scalars), parse_fragment returns a Success or a Failure and never raises, and a failure's
    message is a single line starting with the file name."""
    result = parse_fragment(text, SOURCE)
    assert isinstance(result, Success | Failure)
    if isinstance(result, Failure):
        message = str(result.failure())
        assert message.startswith(SOURCE + ": ")
        assert "\n" not in message and "\r" not in message


@st.composite
def networks(draw: st.DrawFn) -> IPNetwork:
    version = draw(st.sampled_from((4, 6)))
    bits = 32 if version == 4 else 128
    net: IPNetwork = ipaddress.ip_network(
        (draw(st.integers(0, 2**bits - 1)), draw(st.integers(0, bits))), strict=False
    )
    return net


IFNAME_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "/:\"'\\+*")


def interface_names() -> st.SearchStrategy[str]:
    """Valid outputInterfaces entries: kernel names of 1..15 bytes, or a prefix and ``*``."""
    exact = st.text(IFNAME_CHARS, min_size=1, max_size=15).filter(lambda n: n not in (".", ".."))
    pattern = st.text(IFNAME_CHARS, min_size=1, max_size=14).map(lambda n: n + "*")
    return exact | pattern


def host_addresses(
    version: int,
) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Unicast host addresses an outputAddress key accepts."""
    if version == 4:
        v4 = st.ip_addresses(v=4).filter(
            lambda a: (
                not (a.is_unspecified or a.is_multicast or a.is_loopback)
                and str(a) != "255.255.255.255"
            )
        )
        return v4
    return st.ip_addresses(v=6).filter(
        lambda a: (
            not (a.is_unspecified or a.is_multicast or a.is_loopback) and a.ipv4_mapped is None
        )
    )


DURATIONS = st.integers(1, 10**6).map(lambda ms: ms / 1000)


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, object], Fragment]:
    """A valid config as plain data, and the Fragment it must parse to."""
    data: dict[str, object] = {}
    expected: dict[str, object] = {}
    listed: set[IPNetwork] = set()
    for key, field in (
        ("nonMasqueradeCIDRs", "non_masquerade_cidrs"),
        ("masqueradeCIDRs", "masquerade_cidrs"),
    ):
        if draw(st.booleans()):
            nets = draw(st.lists(networks(), max_size=4))
            data[key] = [str(n) for n in nets]
            expected[field] = sorted_cidrs(nets)
            listed.update(nets)
    if draw(st.booleans()):
        nets = draw(st.lists(networks(), max_size=3))
        data["sourceCIDRs"] = [str(n) for n in nets]
        expected["source_cidrs"] = sorted_cidrs(nets)
        listed.update(nets)
    if draw(st.booleans()):
        names = draw(st.lists(interface_names(), max_size=4))
        data["outputInterfaces"] = names
        expected["output_interfaces"] = pvector(sorted(set(names)))
    for key, field, version in (
        ("outputAddress", "output_address", 4),
        ("outputAddressIPv6", "output_address_ipv6", 6),
    ):
        if draw(st.booleans()):
            address = draw(host_addresses(version))
            data[key] = str(address)
            expected[field] = address
    for key, field in (
        ("masqLinkLocal", "masq_link_local"),
        ("masqLinkLocalIPv6", "masq_link_local_ipv6"),
    ):
        if draw(st.booleans()):
            data[key] = expected[field] = draw(st.booleans())
    if draw(st.booleans()):
        seconds = draw(DURATIONS)
        data["resyncInterval"] = format_duration(seconds)
        expected["resync_interval"] = seconds
    # A limit the file just meets (0 for a file without CIDRs) is valid.
    limit = draw(st.none() | st.integers(len(listed), len(listed) + 2) | st.integers(8, 10**6))
    if limit is not None:
        data["cidrLimit"] = expected["cidr_limit"] = limit
    return data, Fragment(SOURCE, **expected)  # type: ignore[arg-type]


# Fails if a key is dropped or renamed, CIDRs are stored unsorted/undeduplicated, a
# duration is mis-scaled (e.g. ms read as s), or the JSON and YAML paths disagree.
@given(documents(), st.booleans())
def test_valid_configs_round_trip_yaml_and_json(
    doc: tuple[dict[str, object], Fragment], flow: bool
) -> None:
    """Every valid config, written as YAML (block or flow style), as JSON text or as JSON bytes,
    parses to the Fragment holding exactly its values: CIDRs deduplicated in canonical order,
    durations in seconds, the keys it leaves out None."""
    data, expected = doc
    as_yaml = yaml.safe_dump(data, default_flow_style=flow)
    as_json = json.dumps(data)
    assert parse_fragment(as_yaml, SOURCE) == Success(expected)
    assert parse_fragment(as_json, SOURCE) == Success(expected)
    assert parse_fragment(as_json.encode(), SOURCE) == Success(expected)


@given(st.lists(networks(), max_size=6, unique=True), st.sampled_from((-1, 0, 1)))
def test_own_cidr_limit_counts_inclusively(nets: list[IPNetwork], offset: int) -> None:
    """A file may list exactly its own cidrLimit distinct CIDRs (so ``cidrLimit: 0`` with no
    CIDRs is valid); one more is refused with a message giving the count and the limit."""
    limit = max(len(nets) + offset, 0)
    half = len(nets) // 2
    text = json.dumps(
        {
            "cidrLimit": limit,
            "nonMasqueradeCIDRs": [str(n) for n in nets[:half]],
            "masqueradeCIDRs": [str(n) for n in nets[half:]],
        }
    )
    result = parse_fragment(text, SOURCE)
    if len(nets) <= limit:
        assert isinstance(result, Success)
        assert result.unwrap().cidr_limit == limit
    else:
        assert isinstance(result, Failure)
        assert str(result.failure()) == (
            f"{SOURCE}: cidrLimit: '{limit}': the file lists {len(nets)} distinct CIDRs"
            f" (nonMasqueradeCIDRs + masqueradeCIDRs), over its own cidrLimit of {limit}"
        )


BAD_VALUES = [
    # (key, value, index or None, what the message says is wrong)
    ("outputInterfaces", "eth0", None, "expected a list of interface names, got a string"),
    ("outputInterfaces", [None], 0, "null entry: expected an interface name"),
    ("outputInterfaces", ["eth0", ""], 1, "empty entry: expected an interface name"),
    ("outputInterfaces", [7], 0, "expected an interface name, got an integer"),
    ("outputInterfaces", ["a" * 16], 0, "interface name over 15 bytes"),
    ("outputInterfaces", ["é" * 8], 0, "interface name over 15 bytes"),
    ("outputInterfaces", ["."], 0, "the kernel refuses . and .."),
    ("outputInterfaces", [".."], 0, "the kernel refuses . and .."),
    ("outputInterfaces", ["eth/0"], 0, "interface name has '/'"),
    ("outputInterfaces", ["eth:0"], 0, "interface name has ':'"),
    ("outputInterfaces", ["eth 0"], 0, "interface name has ' '"),
    ("outputInterfaces", ["eth\t0"], 0, "interface name has '\\t'"),
    ("outputInterfaces", ["e*th"], 0, "only once, at the end"),
    ("outputInterfaces", ["eth**"], 0, "only once, at the end"),
    ("outputInterfaces", ["eth+"], 0, "interface name has '+'"),
    ("outputInterfaces", ['eth"0'], 0, "interface name has '\"'"),
    ("outputInterfaces", ["ethé"], 0, "printable ASCII"),
    ("outputInterfaces", ["*"], 0, "a lone * selects every interface"),
    ("sourceCIDRs", "10.0.0.0/8", None, "expected a list of CIDR strings, got a string"),
    ("sourceCIDRs", ["10.0.0.1/8"], 0, "host bits set (misaligned); did you mean 10.0.0.0/8?"),
    ("sourceCIDRs", ["10.0.0.0/8", None], 1, "null entry: expected a CIDR string"),
    ("sourceCIDRs", ["10.0.0.1"], 0, "missing prefix length"),
    ("sourceCIDRs", ["10.0.0.0/33"], 0, "prefix length over 32 for IPv4"),
    ("sourceCIDRs", ["pods"], 0, "not a plain CIDR"),
    (
        "outputAddress",
        ["192.0.2.1"],
        None,
        "expected an address string like 192.0.2.10, got a list",
    ),
    ("outputAddress", 7, None, "expected an address string like 192.0.2.10, got an integer"),
    ("outputAddress", "", None, "is not an IPv4 or IPv6 address"),
    ("outputAddress", "fd00::1", None, "not an IPv4 address"),
    ("outputAddress", "192.0.2.0/24", None, "is a CIDR; give one address"),
    ("outputAddress", "192.0.2.1/32", None, "is a CIDR; give one address"),
    ("outputAddress", "0.0.0.0", None, "an unspecified address"),
    ("outputAddress", "224.0.0.1", None, "a multicast address"),
    ("outputAddress", "255.255.255.255", None, "a broadcast address"),
    ("outputAddress", "127.0.0.1", None, "a loopback address"),
    ("outputAddress", "node", None, "is not an IPv4 or IPv6 address"),
    ("outputAddressIPv6", "192.0.2.1", None, "not an IPv6 address"),
    ("outputAddressIPv6", "::ffff:192.0.2.1", None, "an IPv4-mapped address"),
    ("outputAddressIPv6", "fd00::/64", None, "is a CIDR; give one address"),
    ("outputAddressIPv6", "::", None, "an unspecified address"),
    ("outputAddressIPv6", "ff02::1", None, "a multicast address"),
    ("outputAddressIPv6", "::1", None, "a loopback address"),
    ("outputAddressIPv6", "fe80::1%eth0", None, "has an IPv6 zone"),
]


@pytest.mark.parametrize(("key", "value", "index", "wrong"), BAD_VALUES)
def test_every_invalid_egress_value_is_one_line_naming_file_key_index_value(
    key: str, value: object, index: int | None, wrong: str
) -> None:
    """Each invalid value of an egress key (outputInterfaces, sourceCIDRs, outputAddress,
    outputAddressIPv6), written as JSON, is refused with one line that starts with the file,
    the key and (for a list) the entry's index, shows the value, and says what is wrong."""
    result = parse_fragment(json.dumps({key: value}), SOURCE)
    assert isinstance(result, Failure)
    message = str(result.failure())
    where = f"{SOURCE}: {key}" + (f"[{index}]" if index is not None else "")
    assert message.startswith(where + ": "), message
    assert wrong in message, message
    assert "\n" not in message
    shown = value[index] if isinstance(value, list) and index is not None else value
    if isinstance(shown, str) and shown:
        assert repr(shown) in message or repr(shown.encode("unicode_escape").decode()) in message


@given(
    st.lists(networks(), max_size=4, unique=True),
    st.lists(networks(), min_size=1, max_size=4, unique=True),
    st.sampled_from((-1, 0, 1)),
)
def test_own_cidr_limit_counts_source_cidrs(
    nets: list[IPNetwork], sources: list[IPNetwork], offset: int
) -> None:
    """sourceCIDRs count towards a file's own cidrLimit, together with the destination
    lists (a CIDR in both counts once); over it, the message names all three keys."""
    distinct = len(set(nets) | set(sources))
    limit = max(distinct + offset, 0)
    text = json.dumps(
        {
            "cidrLimit": limit,
            "nonMasqueradeCIDRs": [str(n) for n in nets],
            "sourceCIDRs": [str(n) for n in sources],
        }
    )
    result = parse_fragment(text, SOURCE)
    if distinct <= limit:
        assert isinstance(result, Success)
    else:
        assert isinstance(result, Failure)
        assert str(result.failure()) == (
            f"{SOURCE}: cidrLimit: '{limit}': the file lists {distinct} distinct CIDRs"
            f" (nonMasqueradeCIDRs + masqueradeCIDRs + sourceCIDRs), over its own"
            f" cidrLimit of {limit}"
        )


# Fails if a boolean key accepts an integer (Python's bool is an int: isinstance(1, int)
# holds, and 0 and 1 compare equal to False and True).
@given(
    st.sampled_from(["masqLinkLocal", "masqLinkLocalIPv6"]),
    st.integers(-(2**40), 2**40) | st.sampled_from([0, 1]),
    st.booleans(),
)
def test_a_boolean_key_refuses_an_integer(key: str, number: int, as_json: bool) -> None:
    """masqLinkLocal and masqLinkLocalIPv6 take true or false only: any integer (0 and 1
    included), in JSON or YAML, fails the file as a wrong type naming the key."""
    text = json.dumps({key: number}) if as_json else f"{key}: {number}\n"
    result = parse_fragment(text, SOURCE)
    assert isinstance(result, Failure)
    assert str(result.failure()) == (
        f"{SOURCE}: {key}: '{number}': wrong type: expected true or false (unquoted),"
        " got an integer"
    )


# Fails if JSON's NaN or Infinity reach the validator as floats (json.loads accepts them
# unless told otherwise): a key would then report "a number" for text no JSON allows.
READ_AS_TEXT = {
    "cidrLimit": "wrong type: expected a non-negative integer, got a string",
    "masqLinkLocal": "wrong type: expected true or false (unquoted), got a string",
    "masqLinkLocalIPv6": "wrong type: expected true or false (unquoted), got a string",
}


@given(st.sampled_from(sorted(READ_AS_TEXT)), st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_json_nan_and_infinity_are_not_numbers(key: str, constant: str) -> None:
    """``{"cidrLimit": NaN}`` (or Infinity, -Infinity) is not JSON; read as YAML the value is
    the word written, so the file fails as a wrong type that got a string, never a number."""
    result = parse_fragment(f'{{"{key}": {constant}}}', SOURCE)
    assert isinstance(result, Failure)
    assert str(result.failure()) == f"{SOURCE}: {key}: '{constant}': {READ_AS_TEXT[key]}"


# Fails if the batch path of a CIDR list accepts what the entry-by-entry path refuses, or
# gives another order or other networks (see test_addresses for its own mutants), if a list
# with a bad entry no longer reaches the entry-by-entry path (its error would be lost or
# change), or if the YAML reader's run of string scalars reads an entry otherwise than
# the event-by-event path (e.g. a quoted or tagged entry).
@pytest.mark.parametrize("kind", NEAR_MISSES)
@given(data=st.data(), as_json=st.booleans())
def test_a_cidr_list_reads_the_same_on_the_batch_and_the_entry_by_entry_paths(
    kind: str, data: st.DataObject, as_json: bool
) -> None:
    """For any CIDR list (canonical IPv4 entries in any order, with repeats, and one entry of
    each kind of near miss in turn: misaligned, an octet or prefix out of range or with a
    leading zero, IPv6, not a CIDR, not text), the list check gives exactly what checking
    each entry with ``parse_cidr`` and sorting gives: the same vector, or the same error
    (index, value and message).  Written into a file, as YAML or as JSON, the file parses to
    that vector or fails with that error, placed at the file and key."""
    texts = data.draw(ipv4_lists(kind))
    general = _cidrs(texts).map(sorted_cidrs)
    assert _cidr_list(texts) == general
    document = {"cidrLimit": 100, "nonMasqueradeCIDRs": texts}
    text = json.dumps(document) if as_json else yaml.safe_dump(document)
    expected = general.map(
        lambda nets: Fragment(SOURCE, non_masquerade_cidrs=nets, cidr_limit=100)
    ).alt(lambda error: replace(error, key="nonMasqueradeCIDRs").at(SOURCE))
    result = parse_fragment(text, SOURCE)
    assert result == expected
    assert str(result.failure() if isinstance(result, Failure) else "") == str(
        expected.failure() if isinstance(expected, Failure) else ""
    )


# Fails if the count of a file's distinct CIDRs adds the lengths of several lists (a CIDR
# in two lists would count twice), or counts a single list otherwise than by its length.
@given(
    st.lists(st.lists(networks(), max_size=4), min_size=3, max_size=3),
    st.lists(st.booleans(), min_size=3, max_size=3),
)
def test_a_files_cidr_count_is_its_distinct_cidrs(
    lists: list[list[IPNetwork]], present: list[bool]
) -> None:
    """Over any fragment with any of its three CIDR lists set (overlapping, empty or
    absent), ``fragment_cidr_count`` is the number of distinct CIDRs in their union."""
    given_lists = [
        sorted_cidrs(nets) if there else None for nets, there in zip(lists, present, strict=True)
    ]
    fragment = Fragment(
        SOURCE,
        non_masquerade_cidrs=given_lists[0],
        masquerade_cidrs=given_lists[1],
        source_cidrs=given_lists[2],
    )
    union = {net for nets in given_lists for net in nets or ()}
    assert fragment_cidr_count(fragment) == len(union)
