"""Minimal ops from the observed table to the desired one, and a model of the kernel.

Sets are edited element by element: deletes first, then adds (an interval set
refuses an element overlapping one still present), so one changed CIDR is one
element op and every other element keeps its counter.  A chain whose rules differ
is flushed and refilled in the same batch.  Anything the element and chain edits
cannot express (a set or chain missing or foreign, another definition, a base hook
moved) replaces the table whole, still in the one batch.  The table of the other
family (after ``--enable-ipv6`` changed) is deleted in the batch that makes ours.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from types import MappingProxyType

from pyrsistent import pmap, pvector

from masq.core.addresses import IPNetwork, cidr_key, span
from masq.core.nftables.model import (
    AddElements,
    DeleteElements,
    DeleteTable,
    NftChain,
    NftFamily,
    NftOp,
    NftRule,
    NftSet,
    NftState,
    NftTable,
    ReplaceChain,
    ReplaceSet,
    ReplaceTable,
    no_counters,
)
from masq.core.traffic import Counters


def _same_shape(desired: NftTable, observed: NftTable) -> bool:
    """Whether element and chain edits can turn ``observed`` into ``desired``."""
    if set(desired.sets) != set(observed.sets) or set(desired.chains) != set(observed.chains):
        return False
    for name, want in desired.sets.items():
        have = observed.sets[name]
        if (want.family, want.flags, want.counter) != (have.family, have.flags, have.counter):
            return False
        if have.opaque:
            return False
    return all(want.base == observed.chains[n].base for n, want in desired.chains.items())


def _ordered(nets: Iterable[IPNetwork]) -> tuple[IPNetwork, ...]:
    return tuple(sorted(nets, key=cidr_key))


SET_RELOAD_AFTER_EDITS = 8
"""Past this many element edits of one set, reloading the set whole is faster.

nft 1.0.6 pays for each element added to or deleted from an interval set in proportion
to the set's size (15,000 elements: 100 edits 1.5 s, a reload 0.17 s; 50,000: one edit
0.37 s, 1,000 edits 71 s, a reload 0.8 s), a reload in proportion to the set alone, so
the two cross at about ten edits whatever the size.  Up to here, edits keep every other
element's counter.
"""


def _element_diff(want: NftSet, have: NftSet) -> tuple[frozenset[IPNetwork], frozenset[IPNetwork]]:
    """(stale, missing): the same elements object differs in nothing, a set derived from
    the observed elements object by what it records (``desired_table(previous=)``) in
    that; anything else is compared element by element."""
    if want.elements is have.elements:
        return frozenset(), frozenset()
    delta = want.delta_from(have.elements)
    if delta is not None:
        return delta
    return have.elements - want.elements, want.elements - have.elements


def _edits(desired: NftTable, observed: NftTable) -> list[NftOp]:
    deletes: list[NftOp] = []
    adds: list[NftOp] = []
    for name in sorted(desired.sets):
        stale, missing = _element_diff(desired.sets[name], observed.sets[name])
        if len(stale) + len(missing) > SET_RELOAD_AFTER_EDITS:
            deletes.append(ReplaceSet(desired.family, desired.name, desired.sets[name]))
            continue
        if stale:
            deletes.append(DeleteElements(desired.family, desired.name, name, _ordered(stale)))
        if missing:
            adds.append(AddElements(desired.family, desired.name, name, _ordered(missing)))
    chains: list[NftOp] = [
        ReplaceChain(desired.family, desired.name, chain)
        for name, chain in sorted(desired.chains.items())
        if chain.rules != observed.chains[name].rules
    ]
    return deletes + adds + chains


def plan(desired: NftTable, observed: NftState) -> tuple[NftOp, ...]:
    """Ordered, minimal ops turning the observed table(s) into ``desired``; () when equal."""
    current = observed.tables.get(desired.family)
    if current is None or not _same_shape(desired, current):
        ops: list[NftOp] = [ReplaceTable(desired)]
    else:
        ops = _edits(desired, current)
    ops += [
        DeleteTable(family, table.name)
        for family, table in sorted(observed.tables.items())
        if family != desired.family
    ]
    return tuple(ops)


def replace_ops(desired: NftTable, observed: NftState) -> tuple[NftOp, ...]:
    """Full-sync fallback: the whole table in one batch, and the other family's gone."""
    others = [
        DeleteTable(family, table.name)
        for family, table in sorted(observed.tables.items())
        if family != desired.family
    ]
    return (ReplaceTable(desired), *others)


def load_stages(
    desired: NftTable,
) -> tuple[tuple[ReplaceTable], tuple[AddElements, ...], tuple[ReplaceChain, ...]]:
    """``ReplaceTable(desired)`` on a node that holds no table of ours, as three commits
    of which none decides a packet wrongly: (1) the table with its sets empty and its base
    chain without rules (hooked, it lets every packet pass as if the agent were absent:
    nothing is masqueraded yet, nothing that must not be), (2) every element, (3) the
    base chain's rules, which find every element in place.  Applied in turn they make
    what ``ReplaceTable(desired)`` makes; the elements go in canonical order."""
    bare = replace(
        desired,
        sets=pmap(
            {
                name: replace(s, elements=frozenset(), counters=no_counters(), index=None)
                for name, s in desired.sets.items()
            }
        ),
        chains=pmap(
            {
                name: c if c.base is None else replace(c, rules=pvector())
                for name, c in desired.chains.items()
            }
        ),
    )
    elements = tuple(
        AddElements(desired.family, desired.name, name, tuple(s.ordered()))
        for name, s in sorted(desired.sets.items())
        if s.elements
    )
    rules = tuple(
        ReplaceChain(desired.family, desired.name, c)
        for _, c in sorted(desired.chains.items())
        if c.base is not None
    )
    return (ReplaceTable(bare),), elements, rules


def cleanup_ops(observed: NftState) -> tuple[NftOp, ...]:
    """``--cleanup``: every table of ours, whichever family."""
    return tuple(DeleteTable(f, t.name) for f, t in sorted(observed.tables.items()))


# --- the kernel, modelled --------------------------------------------------


def _table(state: NftState, family: NftFamily, name: str, op: NftOp) -> NftTable:
    table = state.tables.get(family)
    if table is None or table.name != name:
        raise ValueError(f"{op!r}: no table {family} {name}")
    return table


def _set(table: NftTable, name: str, op: NftOp) -> NftSet:
    found = table.sets.get(name)
    if found is None:
        raise ValueError(f"{op!r}: no set {name}")
    return found


def _check_disjoint(elements: Iterable[IPNetwork], op: object) -> None:
    """An interval set holds disjoint elements: overlapping ones are refused."""
    spans = sorted(span(e) for e in elements)
    for (v1, _, last), (v2, first, _) in itertools.pairwise(spans):
        if v1 == v2 and first <= last:
            raise ValueError(f"{op!r}: interval overlaps with an existing one")


def _check_chain(table: NftTable, chain: NftChain, op: object) -> None:
    for rule in chain.rules:
        if rule.daddr_set is not None and rule.daddr_set not in table.sets:
            raise ValueError(f"{op!r}: no set {rule.daddr_set}")
        if rule.verdict == "jump" and rule.target not in table.chains:
            raise ValueError(f"{op!r}: jump to missing chain {rule.target}")
        _check_protocols(table, rule, op)


def _check_protocols(table: NftTable, rule: NftRule, op: object) -> None:
    """nft refuses ``meta nfproto`` outside an ``inet`` table, a payload of the other
    family than the table's or the rule's nfproto (``ip6 daddr`` in an ``ip`` table:
    conflicting protocols), and a set of the other family (datatype mismatch)."""
    if rule.nfproto is not None and table.family != "inet":
        raise ValueError(f"{op!r}: meta nfproto is only useful in the inet family")
    if rule.family is None:
        return
    if rule.family != (rule.nfproto or ("ipv4" if table.family == "ip" else rule.family)):
        raise ValueError(f"{op!r}: conflicting protocols specified")
    matched = table.sets.get(rule.daddr_set) if rule.daddr_set is not None else None
    if matched is not None and matched.family != rule.family:
        raise ValueError(f"{op!r}: datatype mismatch, set {matched.name}")


def _check_table(table: NftTable, op: object) -> None:
    for s in table.sets.values():
        _check_disjoint(s.elements, op)
    for chain in table.chains.values():
        _check_chain(table, chain, op)


def _apply(state: NftState, op: NftOp) -> NftState:
    match op:
        case ReplaceTable(table=t):
            _check_table(t, op)
            return NftState(state.tables.set(t.family, t))
        case DeleteTable(family=f, name=n):
            _table(state, f, n, op)
            return NftState(state.tables.remove(f))
        case AddElements(family=f, table=tn, set=sn, elements=new):
            table = _table(state, f, tn, op)
            s = _set(table, sn, op)
            # An element equal to one present (or repeated in the op) is no change, as in nft.
            fresh = [e for e in dict.fromkeys(new) if e not in s.elements]
            _check_disjoint([*s.elements, *fresh], op)
            counters = MappingProxyType({**s.counters, **{e: Counters(0, 0) for e in fresh}})
            return _with_set(
                state, table, replace(s, elements=s.elements | set(fresh), counters=counters)
            )
        case DeleteElements(family=f, table=tn, set=sn, elements=gone):
            table = _table(state, f, tn, op)
            s = _set(table, sn, op)
            if missing := [e for e in gone if e not in s.elements]:
                raise ValueError(f"{op!r}: element does not exist: {missing[0]}")
            kept = s.elements - set(gone)
            counted = MappingProxyType({e: c for e, c in s.counters.items() if e in kept})
            return _with_set(state, table, replace(s, elements=kept, counters=counted))
        case ReplaceSet(family=f, table=tn, set=fresh_set):
            table = _table(state, f, tn, op)
            current = _set(table, fresh_set.name, op)
            _check_disjoint(fresh_set.elements, op)
            zeros = MappingProxyType({e: Counters(0, 0) for e in fresh_set.elements})
            reloaded = replace(current, elements=fresh_set.elements, counters=zeros)
            return _with_set(state, table, reloaded)
        case ReplaceChain(family=f, table=tn, chain=c):
            table = _table(state, f, tn, op)
            old = table.chains.get(c.name)
            if old is None:
                raise ValueError(f"{op!r}: no chain {c.name}")
            _check_chain(table, c, op)
            chains = table.chains.set(c.name, NftChain(c.name, old.base, c.rules))
            return NftState(state.tables.set(f, replace(table, chains=chains)))
    raise TypeError(f"not an op: {op!r}")


def _with_set(state: NftState, table: NftTable, s: NftSet) -> NftState:
    updated = replace(table, sets=table.sets.set(s.name, s))
    return NftState(state.tables.set(table.family, updated))


def apply_ops(observed: NftState, ops: Sequence[NftOp]) -> NftState:
    """What the kernel makes of one batch; ValueError where nft would refuse it.

    The batch is all or nothing in the kernel; here a refusal is the ValueError
    and the caller keeps ``observed``.  Persistent maps share every untouched set.
    """
    state = observed
    for op in ops:
        state = _apply(state, op)
    return state
