"""A plan that would rewrite most of a long chain rebuilds it whole, in the same transaction."""

from __future__ import annotations

import ipaddress

from masq.core.addresses import sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save
from masq.core.iptables.model import AppendRule, CreateChain, InsertRule
from masq.core.iptables.plan import REBUILD_BUDGET, apply_ops, choose_ops, plan
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
    """Edits x chain length over REBUILD_BUDGET: flush (create) and append every rule, one
    transaction that reaches the same chain; just under it, edits."""
    small = desired_ruleset(config(1), "ipv4", RulesetOptions())
    observed = apply_ops(EMPTY, plan(small, EMPTY))
    # 1 CIDR -> n: n - 1 inserts into a chain that ends n + 2 rules long (link-local, catch-all)
    over = next(n for n in range(3000, 5000) if (n - 1) * (n + 2) > REBUILD_BUDGET)
    desired = desired_ruleset(config(over), "ipv4", RulesetOptions())
    ops = choose_ops(desired, observed)
    assert isinstance(ops[0], CreateChain)
    assert all(isinstance(op, AppendRule) for op in ops[1:])
    assert apply_ops(observed, ops) == desired
    just_below = desired_ruleset(config(over - 1), "ipv4", RulesetOptions())
    assert choose_ops(just_below, observed) == plan(just_below, observed)


def test_the_switch_point_falls_as_the_chain_grows() -> None:
    """On a 20,000-rule chain, 1,000 added CIDRs rebuild (1,000 edits would walk it 1,000
    times); on a 1,000-rule chain the same 1,000 stay edits."""
    long_before = desired_ruleset(config(20_000, 1_000), "ipv4", RulesetOptions())
    long_after = desired_ruleset(config(21_000), "ipv4", RulesetOptions())
    assert isinstance(choose_ops(long_after, long_before)[0], CreateChain)
    short_before = desired_ruleset(config(1_000, 1_000), "ipv4", RulesetOptions())
    short_after = desired_ruleset(config(2_000), "ipv4", RulesetOptions())
    assert choose_ops(short_after, short_before) == plan(short_after, short_before)
