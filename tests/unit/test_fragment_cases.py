# ruff: noqa: E501  (one table row per case reads better than wrapped strings)
"""One example per class of bad config input, pinning the exact one-line message."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest
from pyrsistent import pvector
from returns.result import Failure, Success

from masq.core.fragment import MAX_FRAGMENT_BYTES, Fragment, parse_fragment

SRC = "ip-masq-agent"
PLAIN = (
    "not a plain CIDR (only an address and a prefix length, like 10.0.0.0/8 or fd00::/8;"
    " no spaces, quotes or other words)"
)
TAG = "is not allowed (only plain values, lists and mappings)"

CASES: list[tuple[str, str | bytes, str]] = [
    ("unparsable", "{*", f"{SRC}: not valid YAML or JSON: did not find expected alphabetic or numeric character at line 1, column 3"),
    ("unparsable yaml", "*", f"{SRC}: not valid YAML or JSON: did not find expected alphabetic or numeric character at line 1, column 2"),
    ("non-mapping", "- 10.0.0.0/8\n", f"{SRC}: '[...]': not a mapping: the top level must map keys to values, got a list"),
    ("scalar document", "hello", f"{SRC}: 'hello': not a mapping: the top level must map keys to values, got a string"),
    ("unknown key", "nonMasqueradeCidrs: []", f"{SRC}: nonMasqueradeCidrs: unknown key; did you mean nonMasqueradeCIDRs?"),
    ("unknown key far off", "colour: red", f"{SRC}: colour: unknown key; known keys are nonMasqueradeCIDRs, masqueradeCIDRs, masqLinkLocal, masqLinkLocalIPv6, resyncInterval, cidrLimit, outputInterfaces, sourceCIDRs, outputAddress, outputAddressIPv6"),
    ("non-string key", "1: 2", f"{SRC}: '1': key is an integer, expected one of nonMasqueradeCIDRs, masqueradeCIDRs, masqLinkLocal, masqLinkLocalIPv6, resyncInterval, cidrLimit, outputInterfaces, sourceCIDRs, outputAddress, outputAddressIPv6"),
    ("duplicate key", "masqLinkLocal: true\nmasqLinkLocal: false", f"{SRC}: masqLinkLocal: duplicate key"),
    ("two documents", "masqLinkLocal: true\n---\ncidrLimit: 1", f"{SRC}: more than one YAML document"),
    ("bool as word", "masqLinkLocal: maybe", f"{SRC}: masqLinkLocal: 'maybe': wrong type: expected true or false (unquoted), got a string"),
    ("bool quoted", 'masqLinkLocalIPv6: "true"', f"{SRC}: masqLinkLocalIPv6: 'true': wrong type: expected true or false (unquoted), got a string"),
    ("string for list", "nonMasqueradeCIDRs: 10.0.0.0/8", f"{SRC}: nonMasqueradeCIDRs: '10.0.0.0/8': wrong type: expected a list of CIDR strings, got a string"),
    ("number in list", "masqueradeCIDRs: [10]", f"{SRC}: masqueradeCIDRs[0]: '10': wrong type: expected a CIDR string, got an integer"),
    ("bare number duration", "resyncInterval: 60", f"{SRC}: resyncInterval: '60': wrong type: expected a Go duration string like 60s or 1m30s, got an integer"),
    ("quoted bare number duration", 'resyncInterval: "60"', f"{SRC}: resyncInterval: '60': missing unit (one of ns, us, ms, s, m, h)"),
    ("zero duration", "resyncInterval: 0s", f"{SRC}: resyncInterval: '0s': duration must be greater than zero"),
    ("date for duration", "resyncInterval: 2024-01-01", f"{SRC}: resyncInterval: '2024-01-01': wrong type: expected a Go duration string like 60s or 1m30s, got a date"),
    ("bool for int", "cidrLimit: true", f"{SRC}: cidrLimit: 'True': wrong type: expected a non-negative integer, got a boolean"),
    ("float for int", "cidrLimit: 1.5", f"{SRC}: cidrLimit: '1.5': wrong type: expected a non-negative integer, got a number"),
    ("negative int", "cidrLimit: -1", f"{SRC}: cidrLimit: '-1': must not be negative"),
    ("null value", "masqueradeCIDRs: null", f"{SRC}: masqueradeCIDRs: null value: give a value or leave the key out"),
    ("null entry", "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  -\n", f"{SRC}: nonMasqueradeCIDRs[1]: null entry: expected a CIDR string"),
    ("empty entry", 'nonMasqueradeCIDRs: [""]', f"{SRC}: nonMasqueradeCIDRs[0]: empty entry: expected a CIDR string"),
    ("misaligned", "nonMasqueradeCIDRs: [10.0.0.1/8]", f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.1/8': host bits set (misaligned); did you mean 10.0.0.0/8?"),
    ("bad octet", "nonMasqueradeCIDRs: [10.256.0.0/16]", f"{SRC}: nonMasqueradeCIDRs[0]: '10.256.0.0/16': invalid address (IPv4 octets are 0-255 without leading zeros; IPv6 as in RFC 4291)"),
    ("leading zero", "nonMasqueradeCIDRs: [010.0.0.0/8]", f"{SRC}: nonMasqueradeCIDRs[0]: '010.0.0.0/8': invalid address (IPv4 octets are 0-255 without leading zeros; IPv6 as in RFC 4291)"),
    ("leading zero in prefix", "nonMasqueradeCIDRs: [10.0.0.0/08]", f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.0/08': {PLAIN}"),
    ("prefix too long", "nonMasqueradeCIDRs: [10.0.0.0/33]", f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.0/33': prefix length over 32 for IPv4"),
    ("no prefix", "nonMasqueradeCIDRs: [10.0.0.0]", f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.0': missing prefix length (write e.g. 10.0.0.0/8 or fd00::/8)"),
    ("garbage", "nonMasqueradeCIDRs: [abcdefg]", f"{SRC}: nonMasqueradeCIDRs[0]: 'abcdefg': {PLAIN}"),
    ("iptables words", 'nonMasqueradeCIDRs: ["10.0.0.0/8 -j ACCEPT"]', f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.0/8 -j ACCEPT': {PLAIN}"),
    ("newline", 'masqueradeCIDRs: ["10.0.0.0/8\\n-A X"]', f"{SRC}: masqueradeCIDRs[0]: '10.0.0.0/8\\n-A X': {PLAIN}"),
    ("trailing space", 'nonMasqueradeCIDRs: ["10.0.0.0/8 "]', f"{SRC}: nonMasqueradeCIDRs[0]: '10.0.0.0/8 ': {PLAIN}"),
    ("scoped ipv6", 'nonMasqueradeCIDRs: ["fe80::%eth0/64"]', f"{SRC}: nonMasqueradeCIDRs[0]: 'fe80::%eth0/64': {PLAIN}"),
    ("over own cidrLimit", "cidrLimit: 1\nnonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.1.0.0/16]", f"{SRC}: cidrLimit: '1': the file lists 2 distinct CIDRs (nonMasqueradeCIDRs + masqueradeCIDRs), over its own cidrLimit of 1"),
    ("over default cidrLimit", "nonMasqueradeCIDRs: [" + ", ".join(f"10.{i}.0.0/16" for i in range(65)) + "]", f"{SRC}: cidrLimit: '64': the file lists 65 distinct CIDRs (nonMasqueradeCIDRs + masqueradeCIDRs), over the default cidrLimit of 64"),
    ("over 1 MiB", "#" * (MAX_FRAGMENT_BYTES + 1), f"{SRC}: file is over the limit of 1048576 bytes (1 MiB)"),
    ("not utf-8", b"masqLinkLocal: \xff", f"{SRC}: not UTF-8 text (bad byte at offset 15)"),
    ("python tag", "masqLinkLocal: !!python/object/apply:os.system [ls]", f"{SRC}: YAML tag '!!python/object/apply:os.system' {TAG}"),
    ("binary tag", "masqLinkLocal: !!binary aGk=", f"{SRC}: YAML tag '!!binary' {TAG}"),
    ("set tag", "nonMasqueradeCIDRs: !!set {10.0.0.0/8: null}", f"{SRC}: YAML tag '!!set' {TAG}"),
    ("local tag", "cidrLimit: !mine 3", f"{SRC}: YAML tag '!mine' {TAG}"),
    ("alias bomb", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n", f"{SRC}: YAML anchors and aliases are not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_message(text: str | bytes, message: str) -> None:
    result = parse_fragment(text, SRC)
    assert isinstance(result, Failure)
    assert str(result.failure()) == message
    assert "\n" not in str(result.failure())


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cidrLimit: 0", Fragment(SRC, cidr_limit=0)),
        ("cidrLimit: 0\nnonMasqueradeCIDRs: []", Fragment(SRC, pvector(), cidr_limit=0)),
        (
            "cidrLimit: 1\nnonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.0.0.0/8]",
            Fragment(SRC, pvector([IPv4Network("10.0.0.0/8")]), pvector([IPv4Network("10.0.0.0/8")]), cidr_limit=1),
        ),
    ],
)  # fmt: skip
def test_cidr_limit_is_met_exactly(text: str, fragment: Fragment) -> None:
    """A file within its own cidrLimit, even exactly at it (0 for no CIDRs; a CIDR in both
    lists counts once), is valid."""
    assert parse_fragment(text, SRC) == Success(fragment)


@pytest.mark.parametrize("text", ["", "   \n", "# only a comment\n", "null", "~", "---\n...\n"])
def test_empty_or_null_document_has_no_opinion(text: str) -> None:
    assert parse_fragment(text, SRC) == Success(Fragment(SRC))


def test_duplicates_within_a_file_are_deduplicated_and_sorted() -> None:
    fragment = parse_fragment(
        "nonMasqueradeCIDRs: [fd00::/8, 192.168.0.0/16, 10.0.0.0/8, 10.0.0.0/8]", SRC
    ).unwrap()
    assert [str(n) for n in fragment.non_masquerade_cidrs or ()] == [
        "10.0.0.0/8",
        "192.168.0.0/16",
        "fd00::/8",
    ]


def test_explicit_empty_list_is_kept_distinct_from_absent() -> None:
    fragment = parse_fragment("nonMasqueradeCIDRs: []", SRC).unwrap()
    assert fragment.non_masquerade_cidrs is not None and len(fragment.non_masquerade_cidrs) == 0
    assert fragment.masquerade_cidrs is None
