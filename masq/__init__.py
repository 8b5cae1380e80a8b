"""ip-masq-agent: decide which pod traffic keeps its source address and which is MASQUERADEd.

The public, typed library API is exactly ``__all__`` below, documented in
docs/library.md.  Everything here is pure (no I/O): feed it file text and kernel
listings, get back decisions, rules and transaction scripts.  Expected input errors
come back as ``returns`` ``Failure`` values carrying a ``ConfigError``; nothing here
raises for bad input.  ``masq.core`` and ``masq.shell`` are internal: their module
paths may change between releases, the names below will not.
"""

from masq.core.addresses import parse_cidr, parse_ip
from masq.core.config import MasqConfig
from masq.core.decision import FamilyDecision, decide, should_masquerade
from masq.core.errors import ConfigError
from masq.core.explain import Explanation, Origin, explain, render_explanation
from masq.core.fragment import Fragment, parse_fragment
from masq.core.iptables.codec import (
    parse_save,
    render_ops_readable,
    render_restore,
    render_rule,
)
from masq.core.iptables.evaluate import first_match, masquerades
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
    "FlushChain",
    "Fragment",
    "InsertRule",
    "MasqConfig",
    "Merged",
    "NatOptions",
    "Op",
    "Origin",
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
    "valid_chain_name",
]
