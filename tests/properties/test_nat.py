"""v1's ``--to-ports`` syntax: what parses, how it is spelled back, and why the rest is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from masq.core.nat import parse_to_ports


@given(st.lists(st.tuples(st.integers(1, 65535), st.integers(0, 2000)), min_size=1, max_size=4))
def test_to_ports_round_trip(ranges: list[tuple[int, int]]) -> None:
    """Any comma-separated list of ports ``a`` and intervals ``a-b`` (1 <= a < b <= 65535)
    parses, and the parsed ranges print back as the same text, in the same order: a single
    port stays ``a`` (never ``a-a``) and the order of the ranges is kept (it shapes the rules).
    """
    text = ",".join(str(a) if b == 0 or a + b > 65535 else f"{a}-{a + b}" for a, b in ranges)
    parsed = parse_to_ports(text).unwrap()
    assert ",".join(str(r) for r in parsed) == text


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "'' is not a port number"),
        ("0", "port 0 is outside 1..65535"),
        ("65536", "port 65536 is outside 1..65535"),
        ("10-5", "first is greater than last in '10-5'"),
        ("1-2-3", "invalid interval '1-2-3'"),
        ("a", "'a' is not a port number"),
        ("1,,2", "'' is not a port number"),
        (" 80", "' 80' is not a port number"),
        ("-5", "'' is not a port number"),
        ("1024-29999,70000", "port 70000 is outside 1..65535"),
        ("80,x-90", "'x' is not a port number"),
    ],
)
def test_to_ports_rejects_v1_invalid_input(text: str, why: str) -> None:
    """What v1 refuses is refused, and the one-line message quotes the whole flag value and
    then names the offending part (the empty or non-numeric word, the port out of range, the
    reversed or three-part interval), so the user sees which range to fix."""
    result = parse_to_ports(text)
    assert isinstance(result, Failure)
    assert str(result.failure()) == f"--to-ports: {text!r}: {why}"
