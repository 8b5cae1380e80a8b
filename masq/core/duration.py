"""Go ``time.Duration`` strings (``60s``, ``1m30s``, ``1.5h``), as config files carry them.

Parsed exactly (integer nanoseconds, like Go) so ``60s`` and ``1m`` compare equal;
a bare number is rejected, as Go's ``time.ParseDuration`` rejects it.
"""

from __future__ import annotations

import re
from fractions import Fraction

from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError, invalid

_UNIT_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_TERM = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_NS = 2**63 - 1  # Go's Duration is an int64 of nanoseconds


def parse_duration_ns(text: str) -> Result[int, ConfigError]:
    """Nanoseconds of a positive Go duration, or why it is not one."""
    given = text

    def bad(why: str) -> Result[int, ConfigError]:
        return Failure(invalid(why, given))

    if not text:
        return bad("empty duration")
    if text[0] in "+-":
        if text[0] == "-" and text != "-0":
            return bad("duration must be greater than zero")
        text = text[1:]
    if text == "0":
        return bad("duration must be greater than zero")
    if not text:
        return bad("not a Go duration (like 60s, 1m30s, 1.5h, 300ms)")
    pos = 0
    total = Fraction(0)
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None:
            if text[pos:].isdigit() or re.fullmatch(r"[0-9.]+", text[pos:]):
                return bad("missing unit (one of ns, us, ms, s, m, h)")
            return bad("not a Go duration (like 60s, 1m30s, 1.5h, 300ms)")
        integer, frac, unit = m.group(1), m.group(2), m.group(3)
        if not integer and not frac:
            return bad("not a Go duration (like 60s, 1m30s, 1.5h, 300ms)")
        value = Fraction(int(integer or "0"))
        if frac:
            value += Fraction(int(frac), 10 ** len(frac))
        total += value * _UNIT_NS[unit]
        if total > _MAX_NS:
            return bad("duration too long (over Go's limit of about 292 years)")
        pos = m.end()
    ns = int(total)  # Go truncates sub-nanosecond fractions
    if ns <= 0:
        return bad("duration must be greater than zero")
    return Success(ns)


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String()`` spelling, so reports read like the files."""
    ns = round(seconds * 1_000_000_000)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    out = sign
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    return out + _decimal(rest, 1_000_000_000) + "s"


def _decimal(ns: int, size: int) -> str:
    whole, frac = divmod(ns, size)
    if not frac:
        return str(whole)
    digits = len(str(size)) - 1
    return f"{whole}." + f"{frac:0{digits}d}".rstrip("0")
