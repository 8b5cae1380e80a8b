"""Merging fragments into the effective config, reporting every disagreement.

Every rule here is a set operation (union, OR, minimum) so the result cannot
depend on the order in which the shell happened to list the files; conflicts
are collected as sets of ``(source, value)`` and sorted, for the same reason.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from pyrsistent import pmap, pvector
from pyrsistent.typing import PMap, PVector
from returns.result import Failure, Result, Success

from masq.core.addresses import (
    IPNetwork,
    Span,
    cidr_key,
    edited_cidrs,
    holds,
    inside,
    sorted_cidrs,
    span,
    supernets,
)
from masq.core.config import (
    DEFAULT_CIDR_LIMIT,
    DEFAULT_RESYNC_SECONDS,
    RESERVED_RANGES,
    RFC1918,
    ConfigChange,
    ListChange,
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
    """The effective config and every conflict; ``index`` (never compared) is what a later
    ``merge(..., previous=this)`` starts from."""

    config: MasqConfig
    conflicts: PVector[Conflict]
    index: MergeIndex | None = field(default=None, compare=False, repr=False)


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
        conflicts.append(_covered_conflict(net, given))
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


@dataclass(frozen=True, slots=True)
class _ListKey:
    """One CIDR list key, merged by union over the fragments that set it: how a file
    gives it, and where the effective config holds it."""

    key: str
    get: Callable[[Fragment], PVector[IPNetwork] | None]
    merged: Callable[[MasqConfig], PVector[IPNetwork]]


_NON: Final = _ListKey(
    NON_MASQUERADE_CIDRS, lambda f: f.non_masquerade_cidrs, lambda c: c.non_masquerade_cidrs
)
_MASQ: Final = _ListKey(
    MASQUERADE_CIDRS, lambda f: f.masquerade_cidrs, lambda c: c.masquerade_cidrs
)
_SRC: Final = _ListKey(SOURCE_CIDRS, lambda f: f.source_cidrs, lambda c: c.source_cidrs)
_LISTS: Final = (_NON, _MASQ, _SRC)
"""The CIDR list keys: a new one is an entry here, its field in ``MasqConfig`` and its
value in ``merge``'s ``lists`` (a union needs nothing else; defaults as ``_defaults``)."""


@dataclass(frozen=True, slots=True)
class MergeIndex:
    """What a merge leaves for the next one (``merge(..., previous=)``): the fragments it
    merged, the flags, each list key's union (explicit values only, canonical order), how
    many CIDRs both unions hold, and the covered-CIDR conflicts by CIDR.  Opaque."""

    fragments: tuple[Fragment, ...]
    flags: tuple[bool, bool, float]
    unions: PMap[str, PVector[IPNetwork]]
    shared: int
    covered: PMap[tuple[int, int, int], Conflict]


@dataclass(frozen=True, slots=True)
class _Unions:
    """Each union after an edit, with what changed in each (for conflicts and the table)."""

    unions: dict[str, PVector[IPNetwork]]
    added: dict[str, tuple[IPNetwork, ...]]
    removed: dict[str, tuple[IPNetwork, ...]]
    touched: dict[str, list[IPNetwork]]  # listed or unlisted by some file: provenance moved


def _by_source(frags: Sequence[Fragment]) -> dict[str, Fragment] | None:
    by = {f.source: f for f in frags}
    return by if len(by) == len(frags) else None


def _apart(
    before: Sequence[IPNetwork], after: Sequence[IPNetwork]
) -> tuple[set[IPNetwork], set[IPNetwork]]:
    """The parts of two canonically ordered lists between their common head and tail: a
    one-line edit of a file is then compared, not hashed, CIDR by CIDR (strictly sorted
    lists share no CIDR between a middle and the other's head or tail)."""
    n, m = len(before), len(after)
    head = 0
    while head < n and head < m and before[head] == after[head]:
        head += 1
    tail = 0
    while tail < n - head and tail < m - head and before[n - 1 - tail] == after[m - 1 - tail]:
        tail += 1
    return set(before[head : n - tail]), set(after[head : m - tail])


def _union_edit(index: MergeIndex, frags: Sequence[Fragment]) -> _Unions | None:
    """Each union edited by the files that changed (by source, compared by identity); None
    when the fragments cannot be matched one to one by source."""
    old, new = _by_source(index.fragments), _by_source(frags)
    if old is None or new is None:
        return None
    changed = [s for s in sorted(old.keys() | new.keys()) if old.get(s) is not new.get(s)]
    out = _Unions({}, {}, {}, {})
    for lk in _LISTS:
        union = index.unions[lk.key]
        gone: dict[tuple[int, int, int], IPNetwork] = {}
        came: dict[tuple[int, int, int], IPNetwork] = {}
        touched: list[IPNetwork] = []
        for source in changed:
            before = (lk.get(old[source]) if source in old else None) or pvector()
            after = (lk.get(new[source]) if source in new else None) or pvector()
            if before is after:
                continue
            was, now = _apart(before, after)
            for net in was - now:
                touched.append(net)
                gone[cidr_key(net)] = net
            for net in now - was:
                touched.append(net)
                came[cidr_key(net)] = net
        setters = [v for f in frags if (v := lk.get(f)) is not None]
        removed = [
            n for k, n in gone.items() if k not in came and not any(holds(v, n) for v in setters)
        ]
        added = [n for k, n in came.items() if k not in gone and not holds(union, n)]
        removed.sort(key=cidr_key)
        added.sort(key=cidr_key)
        if len(added) + len(removed) > len(union) // 8 + 64:
            union = sorted_cidrs(n for v in setters for n in v)  # a large edit: one sort
        elif added or removed:
            union = edited_cidrs(union, added, removed)
        out.unions[lk.key] = union
        out.added[lk.key], out.removed[lk.key] = tuple(added), tuple(removed)
        out.touched[lk.key] = touched
    return out


def _shared_after(index: MergeIndex, u: _Unions) -> int:
    """|non-masquerade union & masquerade union| after the edit, from the one before."""
    shared = index.shared
    masq_before = index.unions[MASQUERADE_CIDRS]
    shared -= sum(holds(masq_before, n) for n in u.removed[NON_MASQUERADE_CIDRS])
    shared += sum(holds(masq_before, n) for n in u.added[NON_MASQUERADE_CIDRS])
    non_after = u.unions[NON_MASQUERADE_CIDRS]
    shared -= sum(holds(non_after, n) for n in u.removed[MASQUERADE_CIDRS])
    shared += sum(holds(non_after, n) for n in u.added[MASQUERADE_CIDRS])
    return shared


def _sources(frags: Sequence[Fragment], lk: _ListKey, net: IPNetwork) -> set[str]:
    return {f.source for f in frags if (v := lk.get(f)) is not None and holds(v, net)}


def _covered_one(
    frags: Sequence[Fragment], net: IPNetwork, masq: Sequence[IPNetwork]
) -> Conflict | None:
    """``net``'s covered-CIDR conflict, from lookups around it in the masquerade union."""
    supers = supernets(masq, net)
    within = list(inside(masq, net))
    covered = bool(supers) or any(m == net for m in within)
    if not covered and within:
        _, first, last = span(net)
        reach = first - 1
        for _, lo, hi in sorted(span(m) for m in within):
            if lo > reach + 1:
                break
            reach = max(reach, hi)
        covered = reach >= last
    if not covered:
        return None
    given = {(s, f"{NON_MASQUERADE_CIDRS} {net}") for s in _sources(frags, _NON, net)}
    for m in supers + within:
        given |= {(s, f"{MASQUERADE_CIDRS} {m}") for s in _sources(frags, _MASQ, m)}
    return _covered_conflict(net, given)


def _covered_conflict(net: IPNetwork, given: set[tuple[str, str]]) -> Conflict:
    return _conflict(
        NON_MASQUERADE_CIDRS,
        given,
        f"{net} has no effect: {MASQUERADE_CIDRS} cover it whole (masquerade wins)",
        net,
    )


def _covered_after(
    index: MergeIndex, frags: Sequence[Fragment], u: _Unions
) -> PMap[tuple[int, int, int], Conflict]:
    """The covered-CIDR conflicts, recomputed for the non-masquerade CIDRs an edit can
    concern: those listed or unlisted, and those overlapping a masquerade CIDR that was."""
    non, masq = u.unions[NON_MASQUERADE_CIDRS], u.unions[MASQUERADE_CIDRS]
    affected = {cidr_key(n): n for n in u.touched[NON_MASQUERADE_CIDRS]}
    for m in u.touched[MASQUERADE_CIDRS]:
        for n in [*inside(non, m), *supernets(non, m)]:
            affected[cidr_key(n)] = n
    covered = index.covered.evolver()
    for key, net in affected.items():
        found = _covered_one(frags, net, masq) if masq and holds(non, net) else None
        if found is not None:
            covered[key] = found
        elif key in index.covered:  # each key once: only an earlier conflict can go
            covered.remove(key)
    return covered.persistent()


def _union_of_ordered(lists: Iterable[Sequence[IPNetwork] | None]) -> PVector[IPNetwork]:
    """The union of canonically ordered, deduplicated lists (as a fragment holds them).

    Lists whose key ranges (first to last CIDR) overlap no other list's are already in
    place: they are laid end to end, and only lists whose ranges overlap are merged by a
    sort; so ten files of distinct ranges (say one per region) cost a look at each
    list's ends, not a sort key for each of 100,000 CIDRs (0.1 s).
    """
    runs = sorted(((cidr_key(v[0]), cidr_key(v[-1]), v) for v in lists if v), key=_ends)
    out: list[IPNetwork] = []
    group: list[Sequence[IPNetwork]] = []
    reach = (0, 0, 0)  # the greatest last key of the group
    for first, last, run in runs:
        if group and first > reach:
            out += _group_union(group)
            group = []
        reach = max(reach, last) if group else last
        group.append(run)
    out += _group_union(group)
    return pvector(out)


_Key = tuple[int, int, int]
"""A CIDR's sort key (``cidr_key``)."""


def _ends(run: tuple[_Key, _Key, Sequence[IPNetwork]]) -> tuple[_Key, _Key]:
    return run[0], run[1]


def _group_union(group: list[Sequence[IPNetwork]]) -> Sequence[IPNetwork]:
    """Lists whose ranges overlap, merged (one list: itself)."""
    if len(group) == 1:
        return group[0]
    return sorted_cidrs(n for run in group for n in run)


def _full_index(frags: Sequence[Fragment], flags: tuple[bool, bool, float]) -> MergeIndex:
    unions = {lk.key: _union_of_ordered([lk.get(f) for f in frags]) for lk in _LISTS}
    non, masq = unions[NON_MASQUERADE_CIDRS], unions[MASQUERADE_CIDRS]
    shared = len(set(non) & set(masq)) if non and masq else 0
    covered = {cidr_key(c.cidr): c for c in _covered_conflicts(frags) if c.cidr is not None}
    return MergeIndex(tuple(frags), flags, pmap(unions), shared, pmap(covered))


def _incremental_index(
    previous: Merged | None, frags: Sequence[Fragment], flags: tuple[bool, bool, float]
) -> tuple[MergeIndex, _Unions | None]:
    index = previous.index if previous is not None else None
    if index is None or index.flags != flags:
        return _full_index(frags, flags), None
    u = _union_edit(index, frags)
    if u is None:
        return _full_index(frags, flags), None
    shared = _shared_after(index, u)
    covered = _covered_after(index, frags, u)
    return MergeIndex(tuple(frags), flags, pmap(u.unions), shared, covered), u


def _has_ipv6(frags: Sequence[Fragment]) -> bool:
    """In canonical order IPv6 comes last: one look at each list's end (and at
    ``outputAddressIPv6``)."""
    return any(f.output_address_ipv6 is not None for f in frags) or any(
        (v := lk.get(f)) and v[-1].version == 6 for f in frags for lk in _LISTS
    )


def _change(
    previous: Merged | None, u: _Unions | None, lists: dict[str, PVector[IPNetwork]]
) -> ConfigChange | None:
    if previous is None or u is None:
        return None
    olds = {lk.key: lk.merged(previous.config) for lk in _LISTS}
    changes: dict[str, ListChange] = {}
    for key, after in lists.items():
        if after is olds[key]:
            changes[key] = ListChange(after, after, (), ())
        elif (
            after is u.unions[key]
            and previous.index is not None
            and olds[key] is previous.index.unions[key]
        ):
            changes[key] = ListChange(olds[key], after, u.added[key], u.removed[key])
        else:
            return None  # the defaults came or went: no edit to speak of
    return ConfigChange(pmap(changes))


def _defaults(
    previous: Merged | None, flags: tuple[bool, bool, float], default: Iterable[IPNetwork]
) -> PVector[IPNetwork]:
    """The default list, the previous config's object when that held the same defaults."""
    index = previous.index if previous is not None else None
    if (
        previous is not None
        and index is not None
        and index.flags == flags
        and all(f.non_masquerade_cidrs is None for f in index.fragments)
    ):
        return previous.config.non_masquerade_cidrs
    return sorted_cidrs(default)


def merge(
    fragments: Iterable[Fragment],
    *,
    reserved_ranges: bool = False,
    enable_ipv6: bool = False,
    default_resync_interval: float = DEFAULT_RESYNC_SECONDS,
    previous: Merged | None = None,
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

    ``previous``, the result of an earlier merge with the same flags, makes the CIDR
    lists' work follow what changed: the fragments are matched to its fragments by
    source, only those that are not the same objects are compared, and each union is
    edited with a bisect per changed CIDR.  The result is equal to a merge from
    scratch; its config's ``change`` says how its lists follow from the previous ones.
    """
    frags = list(fragments)
    flags = (reserved_ranges, enable_ipv6, default_resync_interval)
    index, edit = _incremental_index(previous, frags, flags)
    has_setters = any(f.non_masquerade_cidrs is not None for f in frags)
    default = RESERVED_RANGES if reserved_ranges else RFC1918
    masq = index.unions[MASQUERADE_CIDRS]
    sources = index.unions[SOURCE_CIDRS]
    if has_setters:
        non_masq = index.unions[NON_MASQUERADE_CIDRS]
        count = len(non_masq) + len(masq) - index.shared
    else:
        non_masq = _defaults(previous, flags, default)
        count = len(non_masq) + len(masq) - sum(holds(masq, n) for n in non_masq)
    count += sum(not holds(non_masq, n) and not holds(masq, n) for n in sources)
    output_address, address_conflicts = _OUTPUT_ADDRESS.resolve_optional(frags)
    output_address_ipv6, address_ipv6_conflicts = _OUTPUT_ADDRESS_IPV6.resolve_optional(frags)
    link_local = _MASQ_LINK_LOCAL.resolve(frags, False)
    link_local_ipv6 = _MASQ_LINK_LOCAL_IPV6.resolve(frags, False)
    resync = _RESYNC_INTERVAL.resolve(frags, default_resync_interval)
    limit = _CIDR_LIMIT.resolve(frags, DEFAULT_CIDR_LIMIT)
    refused = _ipv6_refused(frags) if not enable_ipv6 and _has_ipv6(frags) else Success(None)
    checked = refused.bind(
        lambda _: _within_limit(frags, count, _CIDR_LIMIT.given(frags), limit.value)
    )
    lists = {NON_MASQUERADE_CIDRS: non_masq, MASQUERADE_CIDRS: masq, SOURCE_CIDRS: sources}
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
        change=_change(previous, edit, lists),
    )
    conflicts = [
        *link_local.conflicts,
        *link_local_ipv6.conflicts,
        *resync.conflicts,
        *limit.conflicts,
        *address_conflicts,
        *address_ipv6_conflicts,
    ]
    conflicts += index.covered.values()
    conflicts.sort(key=_conflict_order)
    return checked.map(lambda _: Merged(config, pvector(conflicts), index))


def _conflict_order(c: Conflict) -> tuple[str, tuple[int, int, int], tuple[tuple[str, str], ...]]:
    return (c.key, cidr_key(c.cidr) if c.cidr is not None else (0, 0, 0), tuple(c.values))
