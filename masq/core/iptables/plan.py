"""Minimal ordered ops from observed to desired, and a pure model of applying them.

Our chain is ours alone, so it is edited by position; POSTROUTING is shared,
so there we only ever delete a rule by its spec or append our jump, and
foreign rules keep their order.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from pyrsistent import pvector
from pyrsistent.typing import PMap, PVector

from masq.core.iptables.model import (
    AppendRule,
    Chain,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DeleteRuleAt,
    FlushChain,
    InsertRule,
    Op,
    Rule,
    Ruleset,
)
from masq.core.names import BUILTIN_CHAINS, POSTROUTING


def owned_chain(desired: Ruleset) -> str:
    """The agent's chain: the one non-built-in chain of a desired ruleset."""
    names = sorted(n for n in desired.chains if n not in BUILTIN_CHAINS)
    if len(names) != 1:
        raise ValueError(f"a desired ruleset holds exactly one chain of ours, not {names}")
    return names[0]


def _jumps(ruleset: Ruleset, chain: str) -> list[Rule]:
    post = ruleset.chain(POSTROUTING)
    return [r for r in (post.rules if post else ()) if r.jump_chain == chain]


def _common(index: dict[Rule, int], observed: Sequence[Rule]) -> list[tuple[int, int]]:
    """(observed, desired) index pairs of a longest common subsequence.

    Desired rules are distinct, so this is a longest increasing subsequence of
    the desired indices met along ``observed``: O(n log n) by patience sorting.
    """
    tails: list[int] = []  # tails[k]: smallest desired index ending an increasing run of k+1
    tail_at: list[int] = []  # observed index of that tail
    parent: dict[int, int] = {}  # observed index -> observed index of its predecessor
    match: dict[int, int] = {}  # observed index -> desired index
    for oi, rule in enumerate(observed):
        di = index.get(rule)
        if di is None:
            continue
        k = bisect.bisect_left(tails, di)
        if k == len(tails):
            tails.append(di)
            tail_at.append(oi)
        else:
            tails[k] = di
            tail_at[k] = oi
        parent[oi] = tail_at[k - 1] if k > 0 else -1
        match[oi] = di
    pairs: list[tuple[int, int]] = []
    oi = tail_at[-1] if tail_at else -1
    while oi >= 0:
        pairs.append((oi, match[oi]))
        oi = parent[oi]
    pairs.reverse()
    return pairs


def _chain_ops(
    chain: str, desired: Sequence[Rule], index: dict[Rule, int], observed: Chain | None
) -> list[Op]:
    if observed is None:
        return [CreateChain(chain), *(AppendRule(chain, r) for r in desired)]
    current = list(observed.rules)
    if current == list(desired):
        return []  # the steady state, without hashing a rule
    pairs = _common(index, current)
    kept_observed = {oi for oi, _ in pairs}
    kept_desired = {di for _, di in pairs}
    ops: list[Op] = [
        DeleteRuleAt(chain, oi + 1)
        for oi in reversed(range(len(current)))
        if oi not in kept_observed
    ]
    length = len(pairs)
    for di, rule in enumerate(desired):
        if di in kept_desired:
            continue
        ops.append(AppendRule(chain, rule) if di == length else InsertRule(chain, di + 1, rule))
        length += 1
    return ops


def _jump_ops(desired: Ruleset, observed: Ruleset, chain: str) -> list[Op]:
    wanted = _jumps(desired, chain)
    ours = _jumps(observed, chain)
    keep = wanted[0] if wanted else None
    kept = False
    ops: list[Op] = []
    for rule in ours:
        if rule == keep and not kept:
            kept = True
        else:
            ops.append(DeleteRule(POSTROUTING, rule))
    if keep is not None and not kept:
        ops.append(AppendRule(POSTROUTING, keep))
    return ops


def plan(desired: Ruleset, observed: Ruleset) -> tuple[Op, ...]:
    """Ordered, minimal ops turning what the agent owns in ``observed`` into ``desired``.

    Empty when equal, so a steady-state sync writes nothing and counters survive.
    Deletes go by position from the highest down, inserts ascend by final
    position, so every position is valid when the kernel reaches it.
    """
    chain = owned_chain(desired)
    want = desired.chain(chain)
    rules = list(want.rules) if want else []
    index = {rule: i for i, rule in enumerate(rules)}
    if len(index) != len(rules):
        raise ValueError("desired rules must be distinct")
    return (
        *_chain_ops(chain, rules, index, observed.chain(chain)),
        *_jump_ops(desired, observed, chain),
    )


REBUILD_BUDGET = 15_000_000
"""Rebuild our chain whole when edits x the chain's length exceed this.

iptables-nft pays for each positional insert or delete in proportion to the chain's
length, a rebuild in proportion to the rules written, so the break-even number of
edits falls as the chain grows: about 1,800 at 10,000 rules (1,000 inserts 0.13 s,
2,500 0.24 s, a rebuild 0.18 s) and about 300 at 50,000 (250 inserts 0.70 s, 500
1.87 s, a rebuild 0.9 s): 1.5e7 to 1.8e7 rule-edits (benchmarks/bench_rebuild.py,
results/iptables-rebuild.txt).  Legacy iptables costs the same either way.  Below
it, edits keep the other rules' counters; a one-CIDR change is one edit at any length.
"""


def choose_ops(desired: Ruleset, observed: Ruleset) -> tuple[Op, ...]:
    """``plan``'s edits, or one rebuild of the chain when that many edits would be slower.

    Either way one transaction; a one-CIDR change stays one edit.
    """
    ops = plan(desired, observed)
    edits = sum(1 for op in ops if op.chain != POSTROUTING)
    if edits * _length(desired, observed) > REBUILD_BUDGET:
        return replace_ops(desired, observed)
    return ops


def _length(desired: Ruleset, observed: Ruleset) -> int:
    """The longer of our chain now and after the plan: what each edit walks."""
    chain = owned_chain(desired)
    chains = (r.chain(chain) for r in (desired, observed))
    return max((len(c.rules) for c in chains if c is not None), default=0)


def replace_ops(desired: Ruleset, observed: Ruleset) -> tuple[Op, ...]:
    """Full-sync fallback: flush (or create) our chain, append every rule, fix the jump."""
    chain = owned_chain(desired)
    want = desired.chain(chain)
    return (
        CreateChain(chain),
        *(AppendRule(chain, r) for r in (want.rules if want else ())),
        *_jump_ops(desired, observed, chain),
    )


def cleanup_ops(observed: Ruleset, chain: str) -> tuple[Op, ...]:
    """Remove every trace of the agent: its jumps, then its chain (empty if none is there)."""
    ops: list[Op] = [DeleteRule(POSTROUTING, r) for r in _jumps(observed, chain)]
    if observed.chain(chain) is not None:
        ops += [FlushChain(chain), DeleteChain(chain)]
    return tuple(ops)


# --- the kernel, modelled --------------------------------------------------


def _rules(chains: PMap[str, Chain], name: str, op: Op) -> PVector[Rule]:
    chain = chains.get(name)
    if chain is None:
        raise ValueError(f"{op!r}: no chain {name}")
    return chain.rules


def _check_target(chains: PMap[str, Chain], rule: Rule, op: Op) -> None:
    """A rule may jump to an existing chain only (an opaque rule's ``-j``/``-g`` too)."""
    if rule.jump_chain is not None and rule.jump_chain not in chains:
        raise ValueError(f"{op!r}: jump to missing chain {rule.jump_chain}")


def _apply(chains: PMap[str, Chain], op: Op) -> PMap[str, Chain]:
    """The chains after one op; ValueError where iptables-restore would refuse it."""

    def put(name: str, rules: PVector[Rule]) -> PMap[str, Chain]:
        return chains.set(name, Chain(name, rules))

    match op:
        case CreateChain(chain=c):
            if c in BUILTIN_CHAINS:
                raise ValueError(f"{op!r}: built-in chain")
            return put(c, pvector())
        case FlushChain(chain=c):
            _rules(chains, c, op)
            return put(c, pvector())
        case DeleteChain(chain=c):
            if c in BUILTIN_CHAINS or _rules(chains, c, op):
                raise ValueError(f"{op!r}: built-in or not empty")
            if any(r.jump_chain == c for chain in chains.values() for r in chain.rules):
                raise ValueError(f"{op!r}: still referenced")
            return chains.remove(c)
        case AppendRule(chain=c, rule=r):
            rules = _rules(chains, c, op)
            _check_target(chains, r, op)
            return put(c, rules.append(r))
        case InsertRule(chain=c, position=p, rule=r):
            rules = _rules(chains, c, op)
            _check_target(chains, r, op)
            if not 1 <= p <= len(rules) + 1:
                raise ValueError(f"{op!r}: position out of range")
            return put(c, rules[: p - 1] + pvector([r]) + rules[p - 1 :])
        case DeleteRuleAt(chain=c, position=p):
            rules = _rules(chains, c, op)
            if not 1 <= p <= len(rules):
                raise ValueError(f"{op!r}: position out of range")
            return put(c, rules.delete(p - 1))
        case DeleteRule(chain=c, rule=r):
            rules = _rules(chains, c, op)
            if r not in rules:
                raise ValueError(f"{op!r}: no such rule")
            return put(c, rules.remove(r))
        case _:
            raise TypeError(f"not an op: {op!r}")


def apply_ops(observed: Ruleset, ops: Sequence[Op]) -> Ruleset:
    """What the kernel makes of ``ops`` (iptables-restore --noflush); ValueError if refused.

    Chains are persistent vectors, so every op shares the untouched rules.
    """
    chains = observed.chains
    for op in ops:
        chains = _apply(chains, op)
    return Ruleset(family=observed.family, chains=chains)
