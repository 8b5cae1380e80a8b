"""Option values parsed once at the edge: the --metrics-bind-address forms and refusals."""

from __future__ import annotations

import pytest

from masq.shell.options import BindAddress, parse_bind

WANT = "want host:port (port 0-65535; 0 picks a free one), :port, or 0 to disable"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0", None),
        ("0.0.0.0:9931", ("0.0.0.0", 9931)),
        (":9931", ("0.0.0.0", 9931)),
        ("[::1]:9931", ("::1", 9931)),
        ("[::]:80", ("::", 80)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_parse_bind(text: str, want: tuple[str, int] | None) -> None:
    assert parse_bind(text) == (BindAddress(*want) if want is not None else None)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("nonsense", WANT),
        ("1.2.3.4:99999", WANT),
        ("host:", WANT),
        ("::1:9931", "bracket an IPv6 host, as [::1]:9931"),
        ("[::1:1", "bracket an IPv6 host, as [::1]:9931"),
        ("[nope]:1", "not an IPv6 address"),
    ],
)
def test_parse_bind_refusals(text: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_bind(text)
    assert str(raised.value) == why
