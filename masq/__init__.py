"""ip-masq-agent: decide which pod traffic keeps its source address and which is MASQUERADEd.

The public, typed library API.  Everything here is pure (no I/O): feed it file
text and ``iptables-save`` text, get back decisions, rules and restore scripts.
Anything not re-exported here is private.
"""

from masq.core.decision import should_masquerade
from masq.core.errors import ConfigError
from masq.core.evaluate import first_match, masquerades
from masq.core.fragment import Fragment, parse_fragment
from masq.core.iptables import parse_save, render_ops_readable, render_restore, render_rule
from masq.core.merge import Conflict, Merged, merge, provenance
from masq.core.model import (
    AppendRule,
    Chain,
    Counters,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DeleteRuleAt,
    FlushChain,
    InsertRule,
    MasqConfig,
    Op,
    Rule,
    Ruleset,
)
from masq.core.plan import apply_ops, cleanup_ops, plan, replace_ops
from masq.core.ports import PortRange, parse_to_ports, valid_chain_name
from masq.core.ruleset import RulesetOptions, desired_ruleset, desired_rulesets

__version__ = "0.1.0"

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
    "FlushChain",
    "Fragment",
    "InsertRule",
    "MasqConfig",
    "Merged",
    "Op",
    "PortRange",
    "Rule",
    "Ruleset",
    "RulesetOptions",
    "__version__",
    "apply_ops",
    "cleanup_ops",
    "desired_ruleset",
    "desired_rulesets",
    "first_match",
    "masquerades",
    "merge",
    "parse_fragment",
    "parse_save",
    "parse_to_ports",
    "plan",
    "provenance",
    "render_ops_readable",
    "render_restore",
    "render_rule",
    "replace_ops",
    "should_masquerade",
    "valid_chain_name",
]
