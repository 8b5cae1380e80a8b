"""A plan that would rewrite most of a long chain rebuilds it whole, in the same transaction."""

from __future__ import annotations

import ipaddress

from masq.core.addresses import sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save
from masq.core.iptables.model import AppendRule, CreateChain, InsertRule
from masq.core.iptables.plan import REBUILD_AFTER_EDITS, apply_ops, choose_ops, plan
from masq.core.iptables.rules import RulesetOptions, desired_ruleset

EMPTY = parse_save("", "IP-MASQ-AGENT", "ipv4").unwrap()


def config(count: int, start: int = 0) -> MasqConfig:
    nets = [ipaddress.IPv4Network((0x0B000000 + (start + i) * 256, 24)) for i in range(count)]
    return MasqConfig(non_masquerade_cidrs=sorted_cidrs(nets), cidr_limit=10**6)


def test_one_added_cidr_stays_one_edit_on_a_long_chain() -> None:
    """Counters survive a small change: one insert, whatever the chain's length."""
    observed = desired_ruleset(config(5000, 1), "ipv4", RulesetOptions())
    desired = desired_ruleset(config(5001), "ipv4", RulesetOptions())
    ops = choose_ops(desired, observed)
    assert ops == plan(desired, observed)
    assert [type(op) for op in ops] == [InsertRule]
    assert apply_ops(observed, ops) == desired


def test_past_the_switch_point_the_chain_is_rebuilt_whole() -> None:
    """More than REBUILD_AFTER_EDITS edits: flush (create) and append every rule, one
    transaction that reaches the same chain."""
    small = desired_ruleset(config(1), "ipv4", RulesetOptions())
    observed = apply_ops(EMPTY, plan(small, EMPTY))
    desired = desired_ruleset(config(REBUILD_AFTER_EDITS + 10), "ipv4", RulesetOptions())
    assert len(plan(desired, observed)) > REBUILD_AFTER_EDITS
    ops = choose_ops(desired, observed)
    assert isinstance(ops[0], CreateChain)
    assert all(isinstance(op, AppendRule) for op in ops[1:])
    assert apply_ops(observed, ops) == desired
    just_below = desired_ruleset(config(REBUILD_AFTER_EDITS - 10), "ipv4", RulesetOptions())
    assert choose_ops(just_below, observed) == plan(just_below, observed)
