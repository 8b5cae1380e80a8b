"""ip-masq-agent: decide which pod traffic keeps its source address and which is MASQUERADEd.

The public, typed library API is exactly ``__all__`` below, documented in
docs/library.md.  Everything here is pure (no I/O): feed it file text and kernel
listings, get back decisions, rules and transaction scripts.  Expected input errors
come back as ``returns`` ``Failure`` values carrying a ``ConfigError``; nothing here
raises for bad input.  ``masq.core`` and ``masq.shell`` are internal: their module
paths may change between releases, the names below will not.

Names are imported on first use (PEP 562), so the agent's start-up pays only for the
modules its mode needs; ``from masq import merge`` and type checkers see no difference.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from masq.core.addresses import parse_cidr, parse_ip
    from masq.core.config import MasqConfig
    from masq.core.decision import (
        FamilyDecision,
        Flow,
        decide,
        should_masquerade,
        should_masquerade_flow,
    )
    from masq.core.egress import Packet
    from masq.core.errors import ConfigError
    from masq.core.explain import Explanation, Origin, render_explanation
    from masq.core.fragment import Fragment, parse_fragment
    from masq.core.iptables.codec import (
        parse_save,
        render_ops_readable,
        render_restore,
        render_rule,
    )
    from masq.core.iptables.evaluate import first_match, masquerades
    from masq.core.iptables.explain import explain
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
    from masq.core.iptables.rules import RulesetOptions, desired_ruleset, desired_rulesets
    from masq.core.merge import Conflict, Merged, merge, provenance
    from masq.core.names import valid_chain_name
    from masq.core.nat import NatOptions, PortRange, parse_to_ports
    from masq.core.traffic import Counters

__version__ = "0.1.0"

_HOMES: dict[str, str] = {
    "AppendRule": "masq.core.iptables.model",
    "Chain": "masq.core.iptables.model",
    "ConfigError": "masq.core.errors",
    "Conflict": "masq.core.merge",
    "Counters": "masq.core.traffic",
    "CreateChain": "masq.core.iptables.model",
    "DeleteChain": "masq.core.iptables.model",
    "DeleteRule": "masq.core.iptables.model",
    "DeleteRuleAt": "masq.core.iptables.model",
    "Explanation": "masq.core.explain",
    "FamilyDecision": "masq.core.decision",
    "Flow": "masq.core.decision",
    "FlushChain": "masq.core.iptables.model",
    "Fragment": "masq.core.fragment",
    "InsertRule": "masq.core.iptables.model",
    "MasqConfig": "masq.core.config",
    "Merged": "masq.core.merge",
    "NatOptions": "masq.core.nat",
    "Op": "masq.core.iptables.model",
    "Origin": "masq.core.explain",
    "Packet": "masq.core.egress",
    "PortRange": "masq.core.nat",
    "Rule": "masq.core.iptables.model",
    "Ruleset": "masq.core.iptables.model",
    "RulesetOptions": "masq.core.iptables.rules",
    "apply_ops": "masq.core.iptables.plan",
    "cleanup_ops": "masq.core.iptables.plan",
    "decide": "masq.core.decision",
    "desired_ruleset": "masq.core.iptables.rules",
    "desired_rulesets": "masq.core.iptables.rules",
    "explain": "masq.core.iptables.explain",
    "first_match": "masq.core.iptables.evaluate",
    "masquerades": "masq.core.iptables.evaluate",
    "merge": "masq.core.merge",
    "parse_cidr": "masq.core.addresses",
    "parse_fragment": "masq.core.fragment",
    "parse_ip": "masq.core.addresses",
    "parse_save": "masq.core.iptables.codec",
    "parse_to_ports": "masq.core.nat",
    "plan": "masq.core.iptables.plan",
    "provenance": "masq.core.merge",
    "render_explanation": "masq.core.explain",
    "render_ops_readable": "masq.core.iptables.codec",
    "render_restore": "masq.core.iptables.codec",
    "render_rule": "masq.core.iptables.codec",
    "replace_ops": "masq.core.iptables.plan",
    "should_masquerade": "masq.core.decision",
    "should_masquerade_flow": "masq.core.decision",
    "valid_chain_name": "masq.core.names",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'masq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AppendRule",
    "Chain",
    "ConfigError",
    "Conflict",
    "Counters",
    "CreateChain",
    "DeleteChain",
    "DeleteRule",
    "DeleteRuleAt",
    "Explanation",
    "FamilyDecision",
    "Flow",
    "FlushChain",
    "Fragment",
    "InsertRule",
    "MasqConfig",
    "Merged",
    "NatOptions",
    "Op",
    "Origin",
    "Packet",
    "PortRange",
    "Rule",
    "Ruleset",
    "RulesetOptions",
    "__version__",
    "apply_ops",
    "cleanup_ops",
    "decide",
    "desired_ruleset",
    "desired_rulesets",
    "explain",
    "first_match",
    "masquerades",
    "merge",
    "parse_cidr",
    "parse_fragment",
    "parse_ip",
    "parse_save",
    "parse_to_ports",
    "plan",
    "provenance",
    "render_explanation",
    "render_ops_readable",
    "render_restore",
    "render_rule",
    "replace_ops",
    "should_masquerade",
    "should_masquerade_flow",
    "valid_chain_name",
]
