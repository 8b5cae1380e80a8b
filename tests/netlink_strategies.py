"""Hypothesis strategies for interval-set contents: disjoint CIDRs as an interval set holds
them, with the shapes the kernel encoding treats specially (``/0``, host routes, the top of
the address space, ranges that touch their neighbour)."""

from __future__ import annotations

from hypothesis import strategies as st
from strategies import BITS, cidrs, network

from masq.core.addresses import Family, IPNetwork, uncovered
from masq.core.traffic import Counters


@st.composite
def top_cidrs(draw: st.DrawFn, family: Family) -> IPNetwork:
    """A CIDR that ends at the last address of the family (``255.255.255.255/32`` etc.)."""
    bits = BITS[family]
    return network(
        family, (1 << bits) - 1, draw(st.sampled_from([0, 1, bits // 2, bits - 1, bits]))
    )


def _neighbour(net: IPNetwork, after: bool) -> IPNetwork | None:
    """The CIDR of the same size right after (or right before) ``net``, if there is one."""
    family: Family = "ipv4" if net.version == 4 else "ipv6"
    size = net.num_addresses
    first = int(net.network_address) + (size if after else -size)
    if net.prefixlen == 0 or first < 0 or first >= 1 << BITS[family]:
        return None
    return network(family, first, net.prefixlen)


@st.composite
def disjoint_cidrs(draw: st.DrawFn, family: Family, max_size: int = 12) -> list[IPNetwork]:
    """CIDRs no other of the list covers, often adjacent to one another."""
    base = draw(st.lists(st.one_of(cidrs(family), top_cidrs(family)), max_size=max_size))
    extra = [
        n
        for net in base
        for n in (_neighbour(net, draw(st.booleans())),)
        if n is not None and draw(st.booleans())
    ]
    return list(uncovered(base + extra))


def counters(top: int = 2**64 - 1) -> st.SearchStrategy[Counters]:
    """Counter values up to ``top`` (the kernel's are unsigned 64-bit; ``nft -j`` prints
    them as signed, so a test with nft as the oracle stays below 2**63)."""
    values = st.one_of(st.integers(0, 1000), st.integers(0, top))
    return st.builds(Counters, packets=values, bytes=values)
