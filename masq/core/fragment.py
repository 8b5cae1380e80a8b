"""One config file (a fragment of the effective config) and its strict parser.

The parser is the trust boundary: text from a ConfigMap becomes a ``Fragment``
only if every value is exactly what the key allows, so nothing downstream ever
re-validates.  The text is read into plain values first (``plain``: JSON, or YAML
as an event stream that refuses anchors and object tags), then checked here.
An empty file, or one holding only ``null``, is a fragment with no opinion on
any key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.addresses import (
    Family,
    IPAddress,
    IPNetwork,
    parse_cidr,
    parse_cidrs_sorted,
    sorted_cidrs,
)
from masq.core.config import DEFAULT_CIDR_LIMIT
from masq.core.duration import parse_duration_ns
from masq.core.egress import parse_interface, parse_output_address, sorted_interfaces
from masq.core.errors import ConfigError, collect, invalid
from masq.core.plain import SHOWN_CHARS, Pairs, Timestamp, load

MAX_FRAGMENT_BYTES = 1024 * 1024

NON_MASQUERADE_CIDRS: Final = "nonMasqueradeCIDRs"
MASQUERADE_CIDRS: Final = "masqueradeCIDRs"
MASQ_LINK_LOCAL: Final = "masqLinkLocal"
MASQ_LINK_LOCAL_IPV6: Final = "masqLinkLocalIPv6"
RESYNC_INTERVAL: Final = "resyncInterval"
CIDR_LIMIT: Final = "cidrLimit"
OUTPUT_INTERFACES: Final = "outputInterfaces"
SOURCE_CIDRS: Final = "sourceCIDRs"
OUTPUT_ADDRESS: Final = "outputAddress"
OUTPUT_ADDRESS_IPV6: Final = "outputAddressIPv6"
KNOWN_KEYS: Final = (
    NON_MASQUERADE_CIDRS,
    MASQUERADE_CIDRS,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    RESYNC_INTERVAL,
    CIDR_LIMIT,
    OUTPUT_INTERFACES,
    SOURCE_CIDRS,
    OUTPUT_ADDRESS,
    OUTPUT_ADDRESS_IPV6,
)


@dataclass(frozen=True, slots=True)
class Fragment:
    """A parsed, validated config file.  ``None`` means the file has no opinion on a key."""

    source: str
    non_masquerade_cidrs: PVector[IPNetwork] | None = None
    masquerade_cidrs: PVector[IPNetwork] | None = None
    masq_link_local: bool | None = None
    masq_link_local_ipv6: bool | None = None
    resync_interval: float | None = None  # seconds, from a Go duration string
    cidr_limit: int | None = None
    output_interfaces: PVector[str] | None = None
    source_cidrs: PVector[IPNetwork] | None = None
    output_address: ipaddress.IPv4Address | None = None
    output_address_ipv6: ipaddress.IPv6Address | None = None


# --- validation: plain values -> Fragment ---


def _show(value: object) -> str:
    """A bounded, single-line rendering of an offending value (ConfigError repr()s it)."""
    if isinstance(value, Timestamp):
        text = value.text
    elif isinstance(value, Pairs):
        text = "{...}"
    elif isinstance(value, list):
        text = "[...]"
    else:
        text = str(value)
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + "..."
    return text


_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (Timestamp, "a date"),
    (list, "a list"),
)


def _kind(value: object) -> str:
    """How an error message names the type of a value a file gave."""
    return next((name for cls, name in _KINDS if isinstance(value, cls)), "a mapping")


def _suggest(key: str) -> str:
    import difflib  # here: only an unknown key pays for it

    by_lower = {k.lower(): k for k in KNOWN_KEYS}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {by_lower[close[0]]}?"
    return "unknown key; known keys are " + ", ".join(KNOWN_KEYS)


_Parsed = PVector[IPNetwork] | PVector[str] | IPAddress | bool | float | int


def _wrong_type(expected: str, value: object) -> ConfigError:
    return invalid(f"wrong type: expected {expected}, got {_kind(value)}", _show(value))


_T = TypeVar("_T")


def _entries(
    one: str, many: str, parse: Callable[[str], Result[_T, ConfigError]]
) -> Callable[[object], Result[tuple[_T, ...], ConfigError]]:
    """A list key's check: a list of non-empty strings, each read by ``parse``; an error
    names the entry's index and shows its value (``one``/``many`` name what is expected)."""

    def entry(index: int, item: object) -> Result[_T, ConfigError]:
        if item is None or item == "":
            what = "null" if item is None else "empty"
            return Failure(ConfigError("", f"{what} entry: expected {one}", index=index))
        if not isinstance(item, str):
            return Failure(replace(_wrong_type(one, item), index=index))
        return parse(item).alt(lambda e: replace(e, index=index, value=_show(item)))

    def check(value: object) -> Result[tuple[_T, ...], ConfigError]:
        if not isinstance(value, list):
            return Failure(_wrong_type(f"a list of {many}", value))
        return collect(entry(index, item) for index, item in enumerate(value))

    return check


_cidrs = _entries("a CIDR string", "CIDR strings", parse_cidr)
_interfaces = _entries("an interface name", "interface names", parse_interface)


def _cidr_list(value: object) -> Result[_Parsed, ConfigError]:
    """A CIDR list key's value: the batch path for a list of valid CIDRs, else the
    entry-by-entry path, which names the first bad entry (and gives the same vector for
    a valid list: see the properties)."""
    if isinstance(value, list):
        batch = parse_cidrs_sorted(value)
        if batch is not None:
            return Success(batch)
    return _cidrs(value).map(sorted_cidrs)


def _interface_list(value: object) -> Result[_Parsed, ConfigError]:
    return _interfaces(value).map(sorted_interfaces)


def _address(family: Family) -> Callable[[object], Result[_Parsed, ConfigError]]:
    def check(value: object) -> Result[_Parsed, ConfigError]:
        if not isinstance(value, str):
            return Failure(_wrong_type("an address string like 192.0.2.10", value))
        return parse_output_address(value, family).alt(lambda e: replace(e, value=_show(value)))

    return check


def _boolean(value: object) -> Result[_Parsed, ConfigError]:
    if isinstance(value, bool):
        return Success(value)
    return Failure(_wrong_type("true or false (unquoted)", value))


def _duration(value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, str):
        return Failure(_wrong_type("a Go duration string like 60s or 1m30s", value))
    return (
        parse_duration_ns(value)
        .map(lambda ns: ns / 1_000_000_000)
        .alt(lambda e: replace(e, value=_show(value)))
    )


def _limit(value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, int) or isinstance(value, bool):
        return Failure(_wrong_type("a non-negative integer", value))
    if value < 0:
        return Failure(invalid("must not be negative", _show(value)))
    return Success(value)


_Check = Callable[[object], Result[_Parsed, ConfigError]]
_KEYS: dict[str, tuple[_Check, str]] = {
    NON_MASQUERADE_CIDRS: (_cidr_list, "non_masquerade_cidrs"),
    MASQUERADE_CIDRS: (_cidr_list, "masquerade_cidrs"),
    MASQ_LINK_LOCAL: (_boolean, "masq_link_local"),
    MASQ_LINK_LOCAL_IPV6: (_boolean, "masq_link_local_ipv6"),
    RESYNC_INTERVAL: (_duration, "resync_interval"),
    CIDR_LIMIT: (_limit, "cidr_limit"),
    OUTPUT_INTERFACES: (_interface_list, "output_interfaces"),
    SOURCE_CIDRS: (_cidr_list, "source_cidrs"),
    OUTPUT_ADDRESS: (_address("ipv4"), "output_address"),
    OUTPUT_ADDRESS_IPV6: (_address("ipv6"), "output_address_ipv6"),
}
"""Each key: how its value is checked, and the Fragment field it fills."""


def _entry(key: object, value: object, seen: set[str]) -> Result[tuple[str, _Parsed], ConfigError]:
    """One top-level ``key: value``, checked: the field to set and its value."""
    if not isinstance(key, str):
        return Failure(
            invalid(f"key is {_kind(key)}, expected one of " + ", ".join(KNOWN_KEYS), _show(key))
        )
    if key not in _KEYS:
        return Failure(ConfigError("", _suggest(key), key=key))
    if key in seen:
        return Failure(ConfigError("", "duplicate key", key=key))
    if value is None:
        return Failure(ConfigError("", "null value: give a value or leave the key out", key=key))
    seen.add(key)
    check, field_name = _KEYS[key]
    return check(value).map(lambda parsed: (field_name, parsed)).alt(lambda e: replace(e, key=key))


def _fragment(source: str, document: object) -> Result[Fragment, ConfigError]:
    if document is None:
        return Success(Fragment(source))
    if not isinstance(document, Pairs):
        return Failure(
            invalid(
                f"not a mapping: the top level must map keys to values, got {_kind(document)}",
                _show(document),
            ).at(source)
        )
    fragment = Fragment(source)
    seen: set[str] = set()
    for key, value in document.pairs:
        match _entry(key, value, seen):
            case Success((field_name, parsed)):
                fragment = replace(fragment, **{field_name: parsed})
            case Failure(error):
                return Failure(error.at(source))
    return _within_own_limit(fragment)


def fragment_cidr_count(fragment: Fragment) -> int:
    """Distinct CIDRs the file lists, over all its CIDR lists (duplicates count once).

    Each list is already deduplicated, so one list alone counts by its length, without
    hashing every network; only a file with several lists pays for the union."""
    every = (fragment.non_masquerade_cidrs, fragment.masquerade_cidrs, fragment.source_cidrs)
    lists = [nets for nets in every if nets]
    if len(lists) <= 1:
        return sum(map(len, lists))
    return len(set().union(*lists))


def counted_keys(with_sources: bool) -> str:
    """The keys a CIDR count covers, as a limit error names them."""
    keys = f"{NON_MASQUERADE_CIDRS} + {MASQUERADE_CIDRS}"
    return f"{keys} + {SOURCE_CIDRS}" if with_sources else keys


def _within_own_limit(fragment: Fragment) -> Result[Fragment, ConfigError]:
    limit = DEFAULT_CIDR_LIMIT if fragment.cidr_limit is None else fragment.cidr_limit
    count = fragment_cidr_count(fragment)
    if count <= limit:
        return Success(fragment)
    origin = "its own" if fragment.cidr_limit is not None else "the default"
    return Failure(
        ConfigError(
            fragment.source,
            f"the file lists {count} distinct CIDRs ({counted_keys(bool(fragment.source_cidrs))}),"
            f" over {origin} {CIDR_LIMIT} of {limit}",
            key=CIDR_LIMIT,
            value=str(limit),
        )
    )


def parse_fragment(text: str | bytes, source: str) -> Result[Fragment, ConfigError]:
    """Parse one YAML/JSON config file; never raises, whatever the input."""
    try:
        return _parse(text, source)
    except Exception as error:  # a bug or a resource limit; still a clean one-line Failure
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        return Failure(ConfigError(source, f"could not read the file ({detail})"))


def _parse(text: str | bytes, source: str) -> Result[Fragment, ConfigError]:
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            return Failure(ConfigError(source, "not UTF-8 text (contains lone surrogates)"))
    else:
        raw = text
    if len(raw) > MAX_FRAGMENT_BYTES:
        return Failure(
            ConfigError(source, f"file is over the limit of {MAX_FRAGMENT_BYTES} bytes (1 MiB)")
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Failure(ConfigError(source, f"not UTF-8 text (bad byte at offset {error.start})"))
    return load(decoded).alt(lambda e: e.at(source)).bind(lambda doc: _fragment(source, doc))
