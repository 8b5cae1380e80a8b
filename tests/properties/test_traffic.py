"""``summed``: one row per (family, CIDR, action), each the sum of its counters."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from masq.core.traffic import Counted, Counters, summed

counted = st.lists(
    st.tuples(
        st.sampled_from(["ipv4", "ipv6"]),
        st.sampled_from(["10.0.0.0/8", "0.0.0.0/0", "::/0", "other"]),
        st.sampled_from(["RETURN", "MASQUERADE"]),
        st.none() | st.builds(Counters, st.integers(0, 2**40), st.integers(0, 2**50)),
    ),
    max_size=30,
)


@given(counted)
def test_each_series_once_with_its_counters_summed(rows: list[Counted]) -> None:
    """Every (family, CIDR, action) given appears exactly once, under its family, in the
    order first given, holding the sum of its counters (a None adds nothing but still
    makes the series)."""
    # Mutation: keeping the last counter instead of adding, or dropping a series whose
    # counters are all None, changes a row.
    out = summed(rows)
    packets: Counter[tuple[str, str, str]] = Counter()
    nbytes: Counter[tuple[str, str, str]] = Counter()
    for family, cidr, action, c in rows:
        packets[(family, cidr, action)] += c.packets if c else 0
        nbytes[(family, cidr, action)] += c.bytes if c else 0
    keys = list(dict.fromkeys((f, c, a) for f, c, a, _ in rows))
    for family in ("ipv4", "ipv6"):
        got = out.get(family, ())
        assert [(t.family, t.cidr, t.action) for t in got] == [k for k in keys if k[0] == family]
        for t in got:
            assert (t.packets, t.bytes) == (
                packets[(family, t.cidr, t.action)],
                nbytes[(family, t.cidr, t.action)],
            )
