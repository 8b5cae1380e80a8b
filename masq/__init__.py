"""ip-masq-agent: decide which pod traffic keeps its source address and which is MASQUERADEd.

The public, typed library API.  Everything here is pure (no I/O): feed it file
text and ``iptables-save`` text, get back decisions, rules and restore scripts.
Anything not re-exported here is private.
"""

from masq.core.decision import should_masquerade
from masq.core.errors import ConfigError
from masq.core.fragment import Fragment, parse_fragment
from masq.core.iptables import parse_save, render_restore
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
from masq.core.plan import apply_ops, plan
from masq.core.ruleset import RulesetOptions, desired_ruleset

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
    "Rule",
    "Ruleset",
    "RulesetOptions",
    "__version__",
    "apply_ops",
    "desired_ruleset",
    "merge",
    "parse_fragment",
    "parse_save",
    "plan",
    "provenance",
    "render_restore",
    "should_masquerade",
]
