"""The nftables dataplane's public, pure API: ``from masq import nftables``.

Its own namespace because its planner and codec mirror the iptables ones exported by
``masq`` (``nftables.plan`` beside ``masq.plan``).  Documented in docs/library.md; the
module paths under ``masq.core.nftables`` are internal.
"""

from masq.core.nftables.codec import (
    parse_listing,
    render_batch,
    render_ops_readable,
    render_rule,
    render_table,
    state_of,
)
from masq.core.nftables.evaluate import Match, first_match, masquerades
from masq.core.nftables.explain import explain
from masq.core.nftables.model import (
    AddElements,
    BaseChain,
    DeleteElements,
    DeleteTable,
    NftChain,
    NftOp,
    NftRule,
    NftSet,
    NftState,
    NftTable,
    ReplaceChain,
    ReplaceSet,
    ReplaceTable,
)
from masq.core.nftables.plan import (
    SET_RELOAD_AFTER_EDITS,
    apply_ops,
    cleanup_ops,
    plan,
    replace_ops,
)
from masq.core.nftables.table import TableOptions, desired_table
from masq.core.nftables.traffic import traffic_of

__all__ = [
    "SET_RELOAD_AFTER_EDITS",
    "AddElements",
    "BaseChain",
    "DeleteElements",
    "DeleteTable",
    "Match",
    "NftChain",
    "NftOp",
    "NftRule",
    "NftSet",
    "NftState",
    "NftTable",
    "ReplaceChain",
    "ReplaceSet",
    "ReplaceTable",
    "TableOptions",
    "apply_ops",
    "cleanup_ops",
    "desired_table",
    "explain",
    "first_match",
    "masquerades",
    "parse_listing",
    "plan",
    "render_batch",
    "render_ops_readable",
    "render_rule",
    "render_table",
    "replace_ops",
    "state_of",
    "traffic_of",
]
