"""Go duration strings (``resyncInterval``): exact nanoseconds, truncated as Go truncates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from masq.core.duration import format_duration, parse_duration_ns

UNITS = {"ns": 1, "us": 10**3, "\u00b5s": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9}


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("60s", 60 * 10**9),
        ("1m30s", 90 * 10**9),
        ("1.5h", 5400 * 10**9),
        ("300ms", 300 * 10**6),
        ("2h45m", 9900 * 10**9),
        ("1500us", 1_500_000),
        ("1500\u00b5s", 1_500_000),  # micro sign
        ("1500\u03bcs", 1_500_000),  # Greek mu
        ("10ns", 10),
        (".5s", 500_000_000),
        ("+5s", 5 * 10**9),
        ("1h1h", 7200 * 10**9),  # a unit may repeat: the terms add up
        ("1.9ns", 1),  # a fraction of a nanosecond is cut off, never rounded up
        ("1.0000000009ms", 1_000_000),
        ("1.999999999s", 1_999_999_999),
        ("9223372036854775807ns", 2**63 - 1),  # Go's largest Duration
    ],
)
def test_go_durations(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == Success(ns)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty duration"),
        ("5", "missing unit (one of ns, us, ms, s, m, h)"),
        ("5.", "missing unit (one of ns, us, ms, s, m, h)"),
        ("1d", "not a Go duration (like 60s, 1m30s, 1.5h, 300ms)"),
        ("0s", "duration must be greater than zero"),
        ("-0", "duration must be greater than zero"),
        ("-1s", "duration must be greater than zero"),
        ("0.9ns", "duration must be greater than zero"),  # truncated to 0
        ("9223372036854775808ns", "duration too long (over Go's limit of about 292 years)"),
    ],
)
def test_refused_durations(text: str, why: str) -> None:
    result = parse_duration_ns(text)
    assert isinstance(result, Failure)
    assert str(result.failure()) == f"{text!r}: {why}"


@given(
    st.integers(1, 10**6),  # a million minutes stays below Go's limit
    st.text(alphabet="0123456789", min_size=1, max_size=12),
    st.sampled_from(sorted(UNITS)),
)
def test_fractions_below_a_nanosecond_are_truncated(whole: int, digits: str, unit: str) -> None:
    """``W.Dunit`` is exactly the nanoseconds of W units plus the fraction 0.D of a unit, with
    whatever is left below one nanosecond cut off (as Go's time.ParseDuration does), never
    rounded up: 1.9ns is 1ns, 1.0000000009ms is 1000000ns."""
    size = UNITS[unit]
    scaled = whole * size * 10 ** len(digits) + int(digits) * size
    assert parse_duration_ns(f"{whole}.{digits}{unit}") == Success(scaled // 10 ** len(digits))


@given(st.integers(1, 10**12))
def test_formatted_durations_parse_back(ns: int) -> None:
    """Every positive duration up to 1000 s, printed in Go's Duration.String() spelling,
    parses back to the same number of nanoseconds."""
    assert parse_duration_ns(format_duration(ns / 10**9)) == Success(ns)


# Fails if a zero minutes field is dropped between hours and seconds (1h5s), which Go never
# prints: the round trip above still passes for it, since 1h5s parses to the same duration.
@pytest.mark.parametrize(
    ("seconds", "spelled"),
    [
        (3605, "1h0m5s"),
        (3600, "1h0m0s"),
        (3660, "1h1m0s"),
        (60, "1m0s"),
        (90, "1m30s"),
        (59, "59s"),
        (1.5, "1.5s"),
        (0.3, "300ms"),
        (0, "0s"),
    ],
)
def test_durations_are_spelled_as_go_spells_them(seconds: float, spelled: str) -> None:
    """format_duration writes Go's Duration.String(): every unit from the largest non-zero one
    down to seconds, zeros included (1h0m5s), and below a second the largest fitting unit."""
    assert format_duration(seconds) == spelled
