"""Merging fragments into the effective config, reporting every disagreement.

Every rule here is a set operation (union, OR, minimum) so the result cannot
depend on the order in which the shell happened to list the files; conflicts
are collected as sets of ``(source, value)`` and sorted, for the same reason.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.addresses import IPNetwork, Span, cidr_key, sorted_cidrs, span
from masq.core.config import (
    DEFAULT_CIDR_LIMIT,
    DEFAULT_RESYNC_SECONDS,
    RESERVED_RANGES,
    RFC1918,
    MasqConfig,
)
from masq.core.duration import format_duration
from masq.core.egress import sorted_interfaces
from masq.core.errors import ConfigError
from masq.core.fragment import (
    CIDR_LIMIT,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    MASQUERADE_CIDRS,
    NON_MASQUERADE_CIDRS,
    OUTPUT_ADDRESS,
    OUTPUT_ADDRESS_IPV6,
    RESYNC_INTERVAL,
    SOURCE_CIDRS,
    Fragment,
    counted_keys,
)

T = TypeVar("T", bool, float, int, ipaddress.IPv4Address, ipaddress.IPv6Address)
MERGE_SOURCE = "<merged config>"
"""``ConfigError.source`` when a merge failure has no file to blame (defaults alone)."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two or more sources explicitly disagree on ``key``; ``resolution`` says what won.

    ``cidr`` is set for a non-masquerade CIDR that masquerade CIDRs cover whole
    (it has no effect); ``values`` then holds both sides, each prefixed with its key.
    """

    key: str
    values: PVector[tuple[str, str]]  # (source, value as text), sorted by source
    resolution: str
    cidr: IPNetwork | None = None

    def __str__(self) -> str:
        given = ", ".join(f"{source}={value}" for source, value in self.values)
        return f"conflict on {self.key}: {given}; {self.resolution}"


@dataclass(frozen=True, slots=True)
class Merged:
    config: MasqConfig
    conflicts: PVector[Conflict]


def provenance(
    fragments: Iterable[Fragment],
    network: IPNetwork,
    *,
    masquerade: bool | None = None,
) -> tuple[str, ...]:
    """Sorted sources of the files that list exactly ``network``.

    ``masquerade`` narrows the search to masqueradeCIDRs (True) or nonMasqueradeCIDRs
    (False); by default either key counts.
    """

    def lists(f: Fragment) -> tuple[PVector[IPNetwork] | None, ...]:
        if masquerade is None:
            return (f.non_masquerade_cidrs, f.masquerade_cidrs)
        return (f.masquerade_cidrs if masquerade else f.non_masquerade_cidrs,)

    listing = {f.source for f in fragments if any(network in (v or ()) for v in lists(f))}
    return tuple(sorted(listing))


def _conflict(
    key: str, given: set[tuple[str, str]], resolution: str, cidr: IPNetwork | None = None
) -> Conflict:
    return Conflict(key, pvector(sorted(given)), resolution, cidr)


@dataclass(frozen=True, slots=True)
class _Resolved(Generic[T]):
    value: T
    conflicts: tuple[Conflict, ...]


@dataclass(frozen=True, slots=True)
class _Scalar(Generic[T]):
    """A key merged by picking one value, its rule stated once.

    ``pick`` chooses the merged value among the values the fragments give (the caller's
    default when none gives one), and the same choice words the conflict when they give
    more than one: the value and the message cannot drift apart.
    """

    key: str
    get: Callable[[Fragment], T | None]
    text: Callable[[T], str]
    pick: Callable[[Iterable[T]], T]
    rule: str

    def given(self, fragments: Iterable[Fragment]) -> set[tuple[str, T]]:
        """``(source, value)`` for every fragment that sets the key."""
        return {(f.source, v) for f in fragments if (v := self.get(f)) is not None}

    def resolve(self, fragments: Iterable[Fragment], default: T) -> _Resolved[T]:
        given = self.given(fragments)
        distinct = {value for _, value in given}
        if not distinct:
            return _Resolved(default, ())
        value = self.pick(distinct)
        if len(distinct) == 1:
            return _Resolved(value, ())
        shown = {(source, self.text(v)) for source, v in given}
        return _Resolved(value, (_conflict(self.key, shown, f"{self.rule}: {self.text(value)}"),))

    def resolve_optional(
        self, fragments: Sequence[Fragment]
    ) -> tuple[T | None, tuple[Conflict, ...]]:
        """``resolve`` for a key without a default: None when no fragment sets it."""
        given = self.given(fragments)
        if not given:
            return None, ()
        resolved = self.resolve(fragments, next(iter(given))[1])  # a default never used
        return resolved.value, resolved.conflicts


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


_OR = "OR: true (masquerade) wins"
# The merge rule of every scalar key: merge() reads both the value and the conflict here.
_MASQ_LINK_LOCAL = _Scalar(MASQ_LINK_LOCAL, lambda f: f.masq_link_local, _bool_text, max, _OR)
_MASQ_LINK_LOCAL_IPV6 = _Scalar(
    MASQ_LINK_LOCAL_IPV6, lambda f: f.masq_link_local_ipv6, _bool_text, max, _OR
)
_RESYNC_INTERVAL = _Scalar(
    RESYNC_INTERVAL, lambda f: f.resync_interval, format_duration, min, "the shortest wins"
)
_CIDR_LIMIT = _Scalar(CIDR_LIMIT, lambda f: f.cidr_limit, str, min, "the smallest wins")
_LOWEST = "the lowest address wins"
_OUTPUT_ADDRESS = _Scalar(OUTPUT_ADDRESS, lambda f: f.output_address, str, min, _LOWEST)
_OUTPUT_ADDRESS_IPV6 = _Scalar(
    OUTPUT_ADDRESS_IPV6, lambda f: f.output_address_ipv6, str, min, _LOWEST
)


def _union_spans(spans: Iterable[Span]) -> list[Span]:
    """Disjoint, non-adjacent spans covering exactly the union (adjacent ones joined)."""
    out: list[Span] = []
    for version, first, last in sorted(spans):
        if out and out[-1][0] == version and first <= out[-1][2] + 1:
            if last > out[-1][2]:
                out[-1] = (version, out[-1][1], last)
        else:
            out.append((version, first, last))
    return out


def _covered_conflicts(fragments: Sequence[Fragment]) -> list[Conflict]:
    """Explicit non-masquerade CIDRs that the union of masquerade CIDRs covers whole."""
    masq_sources: dict[IPNetwork, set[str]] = {}
    for f in fragments:
        for net in f.masquerade_cidrs or ():
            masq_sources.setdefault(net, set()).add(f.source)
    if not masq_sources:
        return []
    # The union as maximal integer spans: a range inside the union lies inside
    # exactly one of them, so one bisect per CIDR replaces a pairwise scan.
    union = _union_spans(span(n) for n in masq_sources)
    masq_by_span = sorted((span(n), n) for n in masq_sources)
    spans = [span for span, _ in masq_by_span]
    by_span = dict(masq_by_span)
    non_sources: dict[IPNetwork, set[str]] = {}
    for f in fragments:
        for net in f.non_masquerade_cidrs or ():
            non_sources.setdefault(net, set()).add(f.source)
    conflicts: list[Conflict] = []
    for net in sorted(non_sources, key=cidr_key):
        version, first, last = span(net)
        i = bisect.bisect_right(union, (version, first, 1 << 129)) - 1
        if i < 0 or union[i][0] != version or union[i][2] < last:
            continue
        given = {(s, f"{NON_MASQUERADE_CIDRS} {net}") for s in non_sources[net]}
        for masq in _overlapping(net, spans, masq_by_span, by_span):
            given |= {(s, f"{MASQUERADE_CIDRS} {masq}") for s in masq_sources[masq]}
        conflicts.append(
            _conflict(
                NON_MASQUERADE_CIDRS,
                given,
                f"{net} has no effect: {MASQUERADE_CIDRS} cover it whole (masquerade wins)",
                net,
            )
        )
    return conflicts


def _overlapping(
    net: IPNetwork,
    spans: list[Span],
    masq_by_span: list[tuple[Span, IPNetwork]],
    by_span: dict[Span, IPNetwork],
) -> list[IPNetwork]:
    """Masquerade CIDRs overlapping ``net``.

    CIDRs nest or are disjoint, so an overlapping one either starts inside
    ``net`` (a bisect range) or is one of its supernets (one lookup per prefix).
    """
    version, first, last = span(net)
    lo = bisect.bisect_left(spans, (version, first, 0))
    hi = bisect.bisect_right(spans, (version, last, 1 << 129))
    found = [masq for _, masq in masq_by_span[lo:hi]]
    bits = net.max_prefixlen
    for prefix in range(net.prefixlen):
        size = 1 << (bits - prefix)
        start = first - first % size
        supernet = by_span.get((version, start, start + size - 1))
        if supernet is not None and start < first:  # same start: already in the range
            found.append(supernet)
    return sorted(found, key=cidr_key)


def _ipv6_refused(fragments: Sequence[Fragment]) -> Result[None, ConfigError]:
    """Without IPv6 enabled, an IPv6 CIDR or ``outputAddressIPv6`` in any file fails the merge
    (naming every file)."""
    v6 = sorted(
        {
            (f.source, key, net)
            for f in fragments
            for key, nets in (
                (NON_MASQUERADE_CIDRS, f.non_masquerade_cidrs),
                (MASQUERADE_CIDRS, f.masquerade_cidrs),
                (SOURCE_CIDRS, f.source_cidrs),
            )
            for net in nets or ()
            if net.version == 6
        },
        key=lambda t: (t[0], t[1], cidr_key(t[2])),
    )
    if v6:
        _, key, first = v6[0]
        return Failure(
            ConfigError(
                ", ".join(sorted({source for source, _, _ in v6})),
                "IPv6 CIDR given but IPv6 is not enabled (--enable-ipv6=false)",
                key=key,
                value=str(first),
            )
        )
    addresses = sorted(
        (f.source, str(f.output_address_ipv6)) for f in fragments if f.output_address_ipv6
    )
    if not addresses:
        return Success(None)
    return Failure(
        ConfigError(
            ", ".join(source for source, _ in addresses),
            "IPv6 address given but IPv6 is not enabled (--enable-ipv6=false)",
            key=OUTPUT_ADDRESS_IPV6,
            value=addresses[0][1],
        )
    )


def _within_limit(
    fragments: Sequence[Fragment], count: int, limits: set[tuple[str, int]], limit: int
) -> Result[None, ConfigError]:
    """The merged CIDR count against the smallest ``cidrLimit`` (or the default)."""
    if count <= limit:
        return Success(None)
    listing = sorted(
        {
            f.source
            for f in fragments
            if f.non_masquerade_cidrs or f.masquerade_cidrs or f.source_cidrs
        }
    )
    limit_sources = sorted(s for s, v in limits if v == limit)
    origin = (
        f"{CIDR_LIMIT} {limit} set by " + ", ".join(limit_sources)
        if limit_sources
        else f"default {CIDR_LIMIT} {limit}"
    )
    return Failure(
        ConfigError(
            ", ".join(listing or limit_sources) or MERGE_SOURCE,
            f"merged config has {count} distinct CIDRs"
            f" ({counted_keys(any(f.source_cidrs for f in fragments))}), over the {origin}",
            key=CIDR_LIMIT,
            value=str(limit),
        )
    )


def merge(
    fragments: Iterable[Fragment],
    *,
    reserved_ranges: bool = False,
    enable_ipv6: bool = False,
    default_resync_interval: float = DEFAULT_RESYNC_SECONDS,
) -> Result[Merged, ConfigError]:
    """Order-independent merge with per-key defaults.

    A key no fragment sets takes its default; a key some fragments set is merged
    over those only (an explicit empty ``nonMasqueradeCIDRs`` is a choice, not an
    absence): CIDR lists by union, booleans by OR, ``resyncInterval`` and
    ``cidrLimit`` by minimum; egress selection's ``outputInterfaces`` and ``sourceCIDRs``
    by union, ``outputAddress*`` by the lowest address (a conflict when files disagree).
    Disagreements are resolved and returned as
    ``conflicts``; only IPv6 without ``enable_ipv6`` and a CIDR count over
    ``cidrLimit`` fail.
    """
    frags = list(fragments)
    setters = [f.non_masquerade_cidrs for f in frags if f.non_masquerade_cidrs is not None]
    default = RESERVED_RANGES if reserved_ranges else RFC1918
    non_masq = (
        sorted_cidrs(n for nets in setters for n in nets) if setters else sorted_cidrs(default)
    )
    masq = sorted_cidrs(n for f in frags for n in f.masquerade_cidrs or ())
    sources = sorted_cidrs(n for f in frags for n in f.source_cidrs or ())
    output_address, address_conflicts = _OUTPUT_ADDRESS.resolve_optional(frags)
    output_address_ipv6, address_ipv6_conflicts = _OUTPUT_ADDRESS_IPV6.resolve_optional(frags)
    link_local = _MASQ_LINK_LOCAL.resolve(frags, False)
    link_local_ipv6 = _MASQ_LINK_LOCAL_IPV6.resolve(frags, False)
    resync = _RESYNC_INTERVAL.resolve(frags, default_resync_interval)
    limit = _CIDR_LIMIT.resolve(frags, DEFAULT_CIDR_LIMIT)
    checked = (Success(None) if enable_ipv6 else _ipv6_refused(frags)).bind(
        lambda _: _within_limit(
            frags,
            len(set(non_masq) | set(masq) | set(sources)),
            _CIDR_LIMIT.given(frags),
            limit.value,
        )
    )
    config = MasqConfig(
        non_masquerade_cidrs=non_masq,
        masquerade_cidrs=masq,
        masq_link_local=link_local.value,
        masq_link_local_ipv6=link_local_ipv6.value,
        resync_interval=resync.value,
        cidr_limit=limit.value,
        output_interfaces=sorted_interfaces(i for f in frags for i in f.output_interfaces or ()),
        source_cidrs=sources,
        output_address=output_address,
        output_address_ipv6=output_address_ipv6,
    )
    conflicts = [
        *link_local.conflicts,
        *link_local_ipv6.conflicts,
        *resync.conflicts,
        *limit.conflicts,
        *address_conflicts,
        *address_ipv6_conflicts,
    ]
    conflicts += _covered_conflicts(frags)
    conflicts.sort(key=_conflict_order)
    return checked.map(lambda _: Merged(config, pvector(conflicts)))


def _conflict_order(c: Conflict) -> tuple[str, tuple[int, int, int], tuple[tuple[str, str], ...]]:
    return (c.key, cidr_key(c.cidr) if c.cidr is not None else (0, 0, 0), tuple(c.values))
