"""plan: it reaches the desired ruleset with a minimal edit and leaves foreign rules alone."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap, pvector
from strategies import interface_entries

from masq.core.addresses import sorted_cidrs
from masq.core.config import MasqConfig
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
from masq.core.iptables.plan import apply_ops, cleanup_ops, plan, replace_ops
from masq.core.iptables.rules import RETURN_COMMENT, RulesetOptions, desired_ruleset, jump_comment
from masq.core.names import POSTROUTING
from masq.core.nat import NatOptions, parse_to_ports

CHAIN = "IP-MASQ-AGENT"
OPTIONS = RulesetOptions(chain=CHAIN)

v4_cidrs = st.builds(
    lambda value, prefix: ipaddress.IPv4Network((value, prefix), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(8, 32) | st.just(0),
)


@st.composite
def configs(draw: st.DrawFn) -> MasqConfig:
    return MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(draw(st.lists(v4_cidrs, max_size=12))),
        masquerade_cidrs=sorted_cidrs(draw(st.lists(v4_cidrs, max_size=3))),
        masq_link_local=draw(st.booleans()),
    )


@st.composite
def egress_configs(draw: st.DrawFn) -> MasqConfig:
    """``configs`` with egress selection (rules copied per source and interface, SNAT)."""
    return replace(
        draw(configs()),
        output_interfaces=pvector(sorted(set(draw(st.lists(interface_entries, max_size=3))))),
        source_cidrs=sorted_cidrs(draw(st.lists(v4_cidrs, max_size=3))),
        output_address=draw(st.none() | st.just(ipaddress.IPv4Address("192.0.2.10"))),
    )


def desired_for(config: MasqConfig, to_ports: str | None = None) -> Ruleset:
    ports = parse_to_ports(to_ports).unwrap() if to_ports else ()
    options = RulesetOptions(chain=CHAIN, nat=NatOptions(to_ports=ports))
    return desired_ruleset(config, "ipv4", options)


# Rules an observed kernel may hold that the desired ruleset never does.
stray_rules = st.one_of(
    st.builds(lambda n: Rule(action="RETURN", comment=RETURN_COMMENT, destination=n), v4_cidrs),
    st.builds(
        lambda n: Rule(action="OTHER", comment="", spec=f"-s {n} -j ACCEPT"),
        v4_cidrs,
    ),
)
jump_variants = st.sampled_from(
    [
        Rule(action="JUMP", comment=jump_comment(CHAIN), not_local=True, jump_chain=CHAIN),
        Rule(action="JUMP", comment=f'"{jump_comment(CHAIN)}"', not_local=True, jump_chain=CHAIN),
        Rule(
            action="OTHER",
            comment="",
            jump_chain=CHAIN,
            spec=f"-s 10.0.0.0/8 -j {CHAIN}",
        ),
    ]
)
foreign_rules = st.sampled_from(
    [
        Rule(action="OTHER", comment="", jump_chain="KUBE-POSTROUTING", spec="-j KUBE-POSTROUTING"),
        Rule(action="MASQUERADE", comment="cni", destination=ipaddress.IPv4Network("10.1.0.0/16")),
        Rule(action="OTHER", comment="", spec="-o eth9 -j MASQUERADE"),
    ]
)


@st.composite
def observed_for(draw: st.DrawFn, desired: Ruleset) -> Ruleset:
    wanted = desired.chains[CHAIN].rules
    chains: dict[str, Chain] = {}
    if draw(st.booleans()) or not wanted:
        kept = draw(st.lists(st.sampled_from(list(wanted)), max_size=len(wanted) + 2))
        noise = draw(st.lists(stray_rules, max_size=4))
        mixed = draw(st.permutations([*kept, *noise]))
        chains[CHAIN] = Chain(CHAIN, pvector(mixed))
    post = draw(
        st.permutations(
            [
                *draw(st.lists(jump_variants, max_size=4)),
                *draw(st.lists(foreign_rules, max_size=3, unique=True)),
            ]
        )
    )
    chains[POSTROUTING] = Chain(POSTROUTING, pvector(post))
    return Ruleset(family="ipv4", chains=pmap(chains))


def owned(ruleset: Ruleset) -> Ruleset:
    """Our chain and our jumps only: what the agent is answerable for."""
    post = ruleset.chains[POSTROUTING].rules
    chains = {POSTROUTING: Chain(POSTROUTING, pvector(r for r in post if r.jump_chain == CHAIN))}
    if CHAIN in ruleset.chains:
        chains[CHAIN] = ruleset.chains[CHAIN]
    return Ruleset(family=ruleset.family, chains=pmap(chains))


def foreign(ruleset: Ruleset) -> list[Rule]:
    return [r for r in ruleset.chains[POSTROUTING].rules if r.jump_chain != CHAIN]


def lcs(a: list[Rule], b: list[Rule]) -> int:
    """Quadratic oracle for the minimal edit size."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            cur = row[j + 1]
            row[j + 1] = prev + 1 if x == y else max(row[j + 1], row[j])
            prev = cur
    return row[-1]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Ruleset, Ruleset]:
    config = draw(configs() | egress_configs())
    desired = desired_for(config, draw(st.sampled_from([None, "1024-65535", "1-2,5"])))
    return desired, draw(observed_for(desired))


@given(scenarios())
def test_plan_reaches_desired_and_spares_foreign_rules(scenario: tuple[Ruleset, Ruleset]) -> None:
    """For any desired ruleset and any observed one (our chain absent, or holding some desired rules
    and strays in any order; any number of jumps to our chain, in any comment quoting, among foreign
    POSTROUTING rules), applying plan(desired, observed) to observed gives exactly the desired chain
    and a single jump, and leaves the foreign POSTROUTING rules as they were, in order."""
    # Fails if deletes run low-to-high (positions shift), if inserts use the
    # observed position, or if the jump fix-up deletes a foreign POSTROUTING rule.
    desired, observed = scenario
    result = apply_ops(observed, plan(desired, observed))
    assert owned(result) == desired
    assert foreign(result) == foreign(observed)


@given(scenarios())
def test_plan_edits_our_chain_minimally(scenario: tuple[Ruleset, Ruleset]) -> None:
    """The plan touches our chain as little as possible: one delete per observed rule and one insert
    per desired rule outside a longest common subsequence of the two (or, when the chain is absent,
    creating it and appending each rule); on POSTROUTING it deletes every jump to our chain except
    one equal to the desired jump, and adds the desired jump only if no such one is there."""
    # Fails if the diff keeps a common subsequence shorter than the longest one
    # (e.g. a greedy match), or touches POSTROUTING more than the stale jumps need.
    desired, observed = scenario
    ops = plan(desired, observed)
    chain_ops = [op for op in ops if getattr(op, "chain", None) == CHAIN]
    want = list(desired.chains[CHAIN].rules)
    if CHAIN in observed.chains:
        have = list(observed.chains[CHAIN].rules)
        assert len(chain_ops) == len(have) + len(want) - 2 * lcs(have, want)
    else:
        assert chain_ops == [CreateChain(CHAIN), *(AppendRule(CHAIN, r) for r in want)]
    jumps = [r for r in observed.chains[POSTROUTING].rules if r.jump_chain == CHAIN]
    keeps = desired.chains[POSTROUTING].rules[0] in jumps
    post_ops = [op for op in ops if getattr(op, "chain", None) == POSTROUTING]
    assert len(post_ops) == len(jumps) - (1 if keeps else 0) + (0 if keeps else 1)


@given(configs())
def test_plan_of_equal_rulesets_is_empty(config: MasqConfig) -> None:
    """plan(d, d) is empty for every desired ruleset d: a sync that finds the chain right writes
    nothing."""
    # Fails if plan always re-appends the jump or rewrites the chain (every sync would write).
    desired = desired_for(config)
    assert plan(desired, desired) == ()


@given(configs(), v4_cidrs)
def test_one_added_cidr_is_one_insert(config: MasqConfig, extra: ipaddress.IPv4Network) -> None:
    """Adding one CIDR to nonMasqueradeCIDRs plans exactly one InsertRule (nothing if the chain
    already had that rule), and applying it gives the new desired ruleset."""
    # Fails if the diff rewrites the tail after the new rule instead of inserting once.
    before = desired_for(config)
    after = desired_for(
        MasqConfig(
            non_masquerade_cidrs=sorted_cidrs([*config.non_masquerade_cidrs, extra]),
            masquerade_cidrs=config.masquerade_cidrs,
            masq_link_local=config.masq_link_local,
        )
    )
    ops = plan(after, before)
    if after == before:
        assert ops == ()
    else:
        assert len(ops) == 1
        assert isinstance(ops[0], InsertRule)
        assert apply_ops(before, ops) == after


@given(configs(), st.data())
def test_one_removed_cidr_is_one_delete(config: MasqConfig, data: st.DataObject) -> None:
    """Removing one CIDR from nonMasqueradeCIDRs plans exactly one DeleteRuleAt (nothing if the rule
    stays, as the link-local RETURN does while masqLinkLocal is false), and applying it gives the
    new desired ruleset."""
    # Fails if deletes are planned by spec for our chain or a removal triggers a rewrite.
    if not config.non_masquerade_cidrs:
        return
    gone = data.draw(st.sampled_from(list(config.non_masquerade_cidrs)))
    before = desired_for(config)
    after = desired_for(
        MasqConfig(
            non_masquerade_cidrs=config.non_masquerade_cidrs.remove(gone),
            masquerade_cidrs=config.masquerade_cidrs,
            masq_link_local=config.masq_link_local,
        )
    )
    ops = plan(after, before)
    if after == before:  # the link-local RETURN stays when masqLinkLocal is false
        assert ops == ()
    else:
        assert len(ops) == 1
        assert isinstance(ops[0], DeleteRuleAt)
        assert apply_ops(before, ops) == after


@given(scenarios())
def test_replace_ops_also_reach_desired(scenario: tuple[Ruleset, Ruleset]) -> None:
    """The full-sync fallback, replace_ops(desired, observed), applied to observed, also gives
    exactly the desired chain and a single jump, and leaves the foreign POSTROUTING rules as they
    were."""
    # Fails if the full-sync fallback forgets the jump fix-up or appends before creating.
    desired, observed = scenario
    result = apply_ops(observed, replace_ops(desired, observed))
    assert owned(result) == desired
    assert foreign(result) == foreign(observed)


@given(scenarios())
def test_cleanup_removes_every_trace(scenario: tuple[Ruleset, Ruleset]) -> None:
    """cleanup_ops removes our chain and every jump to it (whatever its comment), keeps every
    foreign POSTROUTING rule, and after it a second cleanup has nothing left to do."""
    # Fails if cleanup deletes the chain before the jumps (the kernel refuses) or
    # leaves a v2-quoted jump behind.
    _, observed = scenario
    ops = cleanup_ops(observed, CHAIN)
    result = apply_ops(observed, ops)
    assert CHAIN not in result.chains
    assert foreign(result) == foreign(observed)
    assert len(result.chains[POSTROUTING].rules) == len(foreign(observed))
    assert cleanup_ops(result, CHAIN) == ()


DESIRED = desired_for(MasqConfig())
JUMP = DESIRED.chains[POSTROUTING].rules[0]
EMPTY = Ruleset(family="ipv4", chains=pmap({POSTROUTING: Chain(POSTROUTING)}))


@pytest.mark.parametrize(
    ("observed", "ops", "why"),
    [
        (EMPTY, [AppendRule(POSTROUTING, JUMP)], f"jump to missing chain {CHAIN}"),
        # A rule the model cannot express still needs its target (iptables: no such target).
        (
            EMPTY,
            [AppendRule(POSTROUTING, Rule("OTHER", "", jump_chain="KUBE-X", spec="-j KUBE-X"))],
            "jump to missing chain KUBE-X",
        ),
        (EMPTY, [CreateChain(CHAIN), DeleteRuleAt(CHAIN, 1)], "position out of range"),
        (
            EMPTY,
            [CreateChain(CHAIN), InsertRule(CHAIN, 2, DESIRED.chains[CHAIN].rules[0])],
            "position out of range",
        ),
        (EMPTY, [DeleteRule(POSTROUTING, JUMP)], "no such rule"),
        (EMPTY, [FlushChain(CHAIN)], f"no chain {CHAIN}"),
        (EMPTY, [CreateChain(POSTROUTING)], "built-in chain"),
        (EMPTY, [DeleteChain(POSTROUTING)], "built-in or not empty"),
        (apply_ops(EMPTY, plan(DESIRED, EMPTY)), [DeleteChain(CHAIN)], "built-in or not empty"),
        # A chain a rule still jumps to cannot be deleted, even when empty.
        (
            apply_ops(EMPTY, plan(DESIRED, EMPTY)),
            [FlushChain(CHAIN), DeleteChain(CHAIN)],
            "still referenced",
        ),
    ],
)
def test_apply_ops_refuses_what_the_kernel_refuses(
    observed: Ruleset, ops: list[Op], why: str
) -> None:
    """The kernel model refuses, as iptables-restore does, an op on a chain that does not
    exist, a jump to a missing chain, a position outside the chain, deleting a rule that is
    not there, creating a built-in chain, and deleting a built-in, non-empty or referenced
    chain; the message names the refused op and the reason."""
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(ops[-1]))}: {re.escape(why)}$"):
        apply_ops(observed, ops)
