"""The public library API, listed once: ``masq`` re-exports every name imported here.

Each import is written ``name as name``, the spelling type checkers read as an explicit
re-export, so ``from masq import merge`` is typed for users under ``mypy --strict``;
``masq.__init__`` derives ``__all__`` and its lazy loading from this module's names.
Adding a public name is one line here (and its entry in docs/library.md).
"""

# ruff: noqa: PLC0414  (``x as x`` is the explicit re-export, not a useless alias)

from masq.core.addresses import parse_cidr as parse_cidr
from masq.core.addresses import parse_ip as parse_ip
from masq.core.config import MasqConfig as MasqConfig
from masq.core.decision import FamilyDecision as FamilyDecision
from masq.core.decision import Flow as Flow
from masq.core.decision import decide as decide
from masq.core.decision import should_masquerade as should_masquerade
from masq.core.decision import should_masquerade_flow as should_masquerade_flow
from masq.core.egress import Packet as Packet
from masq.core.errors import ConfigError as ConfigError
from masq.core.explain import Explanation as Explanation
from masq.core.explain import Origin as Origin
from masq.core.explain import render_explanation as render_explanation
from masq.core.fragment import Fragment as Fragment
from masq.core.fragment import parse_fragment as parse_fragment
from masq.core.iptables.codec import parse_save as parse_save
from masq.core.iptables.codec import render_ops_readable as render_ops_readable
from masq.core.iptables.codec import render_restore as render_restore
from masq.core.iptables.codec import render_rule as render_rule
from masq.core.iptables.evaluate import first_match as first_match
from masq.core.iptables.evaluate import masquerades as masquerades
from masq.core.iptables.explain import explain as explain
from masq.core.iptables.model import AppendRule as AppendRule
from masq.core.iptables.model import Chain as Chain
from masq.core.iptables.model import CreateChain as CreateChain
from masq.core.iptables.model import DeleteChain as DeleteChain
from masq.core.iptables.model import DeleteRule as DeleteRule
from masq.core.iptables.model import DeleteRuleAt as DeleteRuleAt
from masq.core.iptables.model import FlushChain as FlushChain
from masq.core.iptables.model import InsertRule as InsertRule
from masq.core.iptables.model import Op as Op
from masq.core.iptables.model import Rule as Rule
from masq.core.iptables.model import Ruleset as Ruleset
from masq.core.iptables.plan import apply_ops as apply_ops
from masq.core.iptables.plan import cleanup_ops as cleanup_ops
from masq.core.iptables.plan import plan as plan
from masq.core.iptables.plan import replace_ops as replace_ops
from masq.core.iptables.rules import RulesetOptions as RulesetOptions
from masq.core.iptables.rules import desired_ruleset as desired_ruleset
from masq.core.iptables.rules import desired_rulesets as desired_rulesets
from masq.core.merge import Conflict as Conflict
from masq.core.merge import Merged as Merged
from masq.core.merge import merge as merge
from masq.core.merge import provenance as provenance
from masq.core.names import valid_chain_name as valid_chain_name
from masq.core.nat import NatOptions as NatOptions
from masq.core.nat import PortRange as PortRange
from masq.core.nat import parse_to_ports as parse_to_ports
from masq.core.traffic import Counters as Counters
