"""The iptables dataplane as data: rules, chains, the nat table part the agent owns, and ops.

A ``Ruleset`` is what ``iptables-save`` would show of the agent's chain and its
POSTROUTING jump; ``Op`` values are the steps of one ``iptables-restore --noflush``
transaction.  The codec spells both; the planner computes ops; ``plan.apply_ops``
models what the kernel does with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pyrsistent import pmap, pvector
from pyrsistent.typing import PMap, PVector

from masq.core.addresses import Family, IPAddress, IPNetwork
from masq.core.decision import Step
from masq.core.nat import PortRange
from masq.core.traffic import Counters

Action = Literal["RETURN", "MASQUERADE", "SNAT", "JUMP", "OTHER"]
Role = Step | Literal["jump", "foreign"]
"""Why a rule exists: the decision step it carries out (``decision.Step``: a
masqueradeCIDRs exception, the link-local or a nonMasqueradeCIDRs RETURN, the final
``default`` MASQUERADE with v1's --to-ports rules), the POSTROUTING ``jump`` to our
chain, or ``foreign`` (not written by the agent, or not recognised as its own)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, as data.

    ``action`` JUMP goes to ``jump_chain``.  ``not_local`` matches packets whose
    destination address is not a local one (``-m addrtype ! --dst-type LOCAL``).
    ``protocol``/``probability``/``to_ports`` carry v1's ``--to-ports`` rules;
    ``probability`` is kept in the kernel's own resolution (``nat.kernel_probability``)
    so what we ask for equals what we read back.

    Egress selection adds ``source`` (``-s``) and ``out_interface`` (``-o``, spelled as
    in the config: a trailing ``*`` is iptables' ``+``), and ``action`` SNAT sends to
    ``to_source`` (``-j SNAT --to-source ADDR[:PORTS]``, ``to_ports`` its port range).

    ``action`` OTHER is a rule read from the kernel that the model cannot express
    (someone added ``-s 1.2.3.4 -j ACCEPT`` to our chain, or a jump with extra
    matches): ``spec`` holds its text verbatim so a plan can delete it, and
    ``jump_chain`` its target, so a foreign-looking jump to our chain is still
    recognised as ours.  ``spec`` is None for every modelled rule.

    ``role`` says why the rule is there (set by whoever builds the rule: the
    desired ruleset, or the codec from the comment it reads); like ``counters`` it
    takes no part in equality, which the rule's text alone decides.
    """

    action: Action
    comment: str
    destination: IPNetwork | None = None
    source: IPNetwork | None = None
    out_interface: str | None = None
    not_local: bool = False
    jump_chain: str | None = None
    protocol: str | None = None
    probability: float | None = None
    to_ports: PortRange | None = None
    random_fully: bool = False
    to_source: IPAddress | None = None
    spec: str | None = None
    role: Role = field(default="foreign", compare=False)
    counters: Counters | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain's rules in kernel order (first match wins)."""

    name: str
    rules: PVector[Rule] = field(default_factory=pvector)


@dataclass(frozen=True, slots=True)
class Ruleset:
    """What the agent owns (or wants) in one family's nat table.

    ``chains`` maps chain name to chain; a chain absent from the map does not
    exist.  Built-in ``POSTROUTING`` holds only rules the agent cares about when
    parsed from the kernel (jumps to its chain); a ruleset built by hand may also
    carry foreign rules there, which plans never touch.
    """

    family: Family
    chains: PMap[str, Chain] = field(default_factory=pmap)

    def chain(self, name: str) -> Chain | None:
        return self.chains.get(name)


# --- Ops: one step of a transaction, applied in order (see plan.apply_ops) ---


@dataclass(frozen=True, slots=True)
class CreateChain:
    """Create the chain, or empty it if it exists (iptables-restore's ``:CHAIN`` line)."""

    chain: str


@dataclass(frozen=True, slots=True)
class FlushChain:
    chain: str


@dataclass(frozen=True, slots=True)
class DeleteChain:
    """Delete an empty, unreferenced chain."""

    chain: str


@dataclass(frozen=True, slots=True)
class AppendRule:
    chain: str
    rule: Rule


@dataclass(frozen=True, slots=True)
class InsertRule:
    """Insert so that the rule ends up at ``position`` (1-based, as iptables counts)."""

    chain: str
    position: int
    rule: Rule


@dataclass(frozen=True, slots=True)
class DeleteRuleAt:
    """Delete the rule at ``position`` (1-based) of a chain the agent owns whole."""

    chain: str
    position: int


@dataclass(frozen=True, slots=True)
class DeleteRule:
    """Delete the first rule equal to ``rule`` (by spec), for shared chains like POSTROUTING."""

    chain: str
    rule: Rule


Op = CreateChain | FlushChain | DeleteChain | AppendRule | InsertRule | DeleteRuleAt | DeleteRule


OP_LABELS: dict[type, str] = {
    CreateChain: "create_chain",
    FlushChain: "flush_chain",
    DeleteChain: "delete_chain",
    AppendRule: "append",
    InsertRule: "insert",
    DeleteRuleAt: "delete",
    DeleteRule: "delete",
}
"""How ``rule_writes_total`` names each op (``op`` label)."""


def op_labels(op: Op) -> tuple[str, ...]:
    """The ``rule_writes_total`` labels of one op: one per write (an op is one rule)."""
    return (OP_LABELS[type(op)],)
