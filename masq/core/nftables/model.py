"""The nftables dataplane as data: the one table the agent owns, its sets, chains and ops.

The agent owns its table whole (family ``ip``, or ``inet`` with IPv6), so a plan
never reads or writes anything outside it.  Sets hold the CIDR lists as interval
elements with per-element counters; equality of a set is its elements, never their
counters, so an unchanged config compares equal whatever traffic has flowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

from pyrsistent import pmap, pvector
from pyrsistent.typing import PMap, PVector

from masq.core.addresses import FAMILIES, Family, IPAddress, IPNetwork, cidr_key, family_of
from masq.core.decision import KINDS, Kind
from masq.core.nat import PortRange
from masq.core.traffic import Counters

NftFamily = Literal["ip", "inet"]
POSTROUTING_CHAIN: Final = "postrouting"
SNAT_CHAIN: Final = "snat-to-node"
SRCNAT_PRIORITY: Final = 100
PRIORITY: Final = SRCNAT_PRIORITY + 10
"""``srcnat + 10``: after every NAT chain at ``srcnat`` (kube-proxy's, the iptables nat
table), as our iptables jump is appended after theirs in POSTROUTING."""
ADDRESS_TYPE: Final[dict[Family, str]] = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr"}
PAYLOAD: Final[dict[Family, str]] = {"ipv4": "ip", "ipv6": "ip6"}
"""The payload protocol that matches a family's destination address (``ip daddr``)."""


TABLE_FAMILIES: Final[dict[NftFamily, tuple[Family, ...]]] = {
    "ip": ("ipv4",),
    "inet": ("ipv4", "ipv6"),
}
"""The families a table of each nft family serves (``inet`` only with IPv6 enabled)."""


def set_name(kind: Kind, family: Family) -> str:
    return f"{kind}-v{4 if family == 'ipv4' else 6}"


_SET_KINDS: Final[dict[str, Kind]] = {set_name(k, f): k for k in KINDS for f in FAMILIES}


def set_kind(name: str) -> Kind | None:
    """The list a set of this name holds, for the codec reading a listing (None: a set the
    agent does not write); everything after the codec reads ``NftSet.kind``."""
    return _SET_KINDS.get(name)


def no_counters() -> Mapping[IPNetwork, Counters]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SetIndex:
    """What makes a set's next version cheap to derive and to diff, valid for the
    elements object ``of`` only (compared by identity, so a set rebuilt with other
    elements simply has no index): ``of`` was built by ``desired_table``; ``before``,
    when set, is the elements object ``of`` was derived from by removing ``removed``
    and adding ``added``; ``ordered``, when set, is ``of`` in canonical order, as the
    builder had it (a table rendered or written whole then needs no sort)."""

    of: frozenset[IPNetwork]
    before: frozenset[IPNetwork] | None = None
    added: frozenset[IPNetwork] = frozenset()
    removed: frozenset[IPNetwork] = frozenset()
    ordered: Sequence[IPNetwork] | None = None


@dataclass(frozen=True, slots=True)
class NftSet:
    """An interval set of one address family.

    ``opaque`` holds elements the model cannot express (a range that is no prefix,
    say): their presence makes the set differ from any desired one.  ``flags`` and
    ``counter`` are the set's definition as listed (desired: interval, counter).
    ``kind`` is the CIDR list it holds (None: not a set the agent writes).

    ``elements`` is a frozenset and ``counters`` a read-only dict, not pyrsistent's
    PSet/PMap: those bucket keys by ``hash % 2**k``, and the hashes of a list of /24s
    differ only above bit 8, so a 15,000-element PSet spends seconds in ``__eq__`` on
    every removal; the builtins perturb hashes and stay O(1).
    """

    name: str
    family: Family
    elements: frozenset[IPNetwork] = frozenset()
    flags: tuple[str, ...] = ("interval",)
    counter: bool = True
    opaque: tuple[str, ...] = ()
    kind: Kind | None = None
    counters: Mapping[IPNetwork, Counters] = field(default_factory=no_counters, compare=False)
    index: SetIndex | None = field(default=None, compare=False, repr=False)

    def delta_from(
        self, before: frozenset[IPNetwork]
    ) -> tuple[frozenset[IPNetwork], frozenset[IPNetwork]] | None:
        """(removed, added) turning the elements object ``before`` into ours, when this
        set was derived from exactly that object (else None: compare the elements)."""
        index = self.index
        if index is None or index.of is not self.elements or index.before is not before:
            return None
        return index.removed, index.added

    def ordered(self) -> Sequence[IPNetwork]:
        """The elements in canonical order (the order every batch writes them in): the
        builder's own when it recorded one for these very elements, else sorted."""
        index = self.index
        if index is not None and index.of is self.elements and index.ordered is not None:
            return index.ordered
        return sorted(self.elements, key=cidr_key)


NftVerdict = Literal["return", "jump", "masquerade", "snat"]
"""The statement that ends a rule the agent writes (nft's own word: verdict)."""


@dataclass(frozen=True, slots=True)
class NftRule:
    """One rule in the grammar the agent writes; ``verdict`` None is an opaque rule.

    Matches, in the order they are written: ``local`` (``fib daddr type local``),
    ``not_oifname`` (egress selection: ``oifname != { "eth0", "wl*" }``, an anonymous set,
    one lookup whatever its size; config spelling, nft's too), ``nfproto``
    (``meta nfproto ipv4``), ``not_saddr`` (egress selection: ``ip saddr != { CIDR, ... }``,
    its family the elements'), the destination (``ip daddr CIDR`` or
    ``ip daddr @set``, of ``family``), ``protocol`` (``meta l4proto tcp``), ``numgen``
    (``numgen random mod M < N``); then ``counter``; then the verdict (``snat`` goes to
    ``to_address``: ``snat to ADDR``, ``snat ip to ADDR`` in an inet table, where the
    rule carries ``nfproto``).  An opaque
    rule keeps its listing's text in ``text`` so it can never equal a desired rule.
    """

    verdict: NftVerdict | None
    local: bool = False
    not_oifname: tuple[str, ...] = ()
    nfproto: Family | None = None
    not_saddr: tuple[IPNetwork, ...] = ()
    family: Family | None = None
    daddr: IPNetwork | None = None
    daddr_set: str | None = None
    protocol: str | None = None
    numgen: tuple[int, int] | None = None
    counter: bool = False
    target: str | None = None
    to_ports: PortRange | None = None
    fully_random: bool = False
    to_address: IPAddress | None = None
    text: str | None = None
    counters: Counters | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class BaseChain:
    """A base chain's hook: what makes the kernel run it."""

    type: str = "nat"
    hook: str = "postrouting"
    priority: int = PRIORITY
    policy: str = "accept"


@dataclass(frozen=True, slots=True)
class NftChain:
    name: str
    base: BaseChain | None = None
    rules: PVector[NftRule] = field(default_factory=pvector)


@dataclass(frozen=True, slots=True)
class NftTable:
    family: NftFamily
    name: str
    sets: PMap[str, NftSet] = field(default_factory=pmap)
    chains: PMap[str, NftChain] = field(default_factory=pmap)


@dataclass(frozen=True, slots=True)
class NftState:
    """The agent's table as the kernel holds it, per family (none, one, or both mid-switch)."""

    tables: PMap[NftFamily, NftTable] = field(default_factory=pmap)


# --- Ops: the steps of one nft batch, applied in order (see plan.apply_ops) ---


@dataclass(frozen=True, slots=True)
class ReplaceTable:
    """Make the table exactly ``table``, whether or not it exists (add, delete, define)."""

    table: NftTable


@dataclass(frozen=True, slots=True)
class DeleteTable:
    family: NftFamily
    name: str


@dataclass(frozen=True, slots=True)
class AddElements:
    family: NftFamily
    table: str
    set: str
    elements: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class DeleteElements:
    family: NftFamily
    table: str
    set: str
    elements: tuple[IPNetwork, ...]


@dataclass(frozen=True, slots=True)
class ReplaceSet:
    """Empty an existing set and fill it with ``set``'s elements (its counters restart)."""

    family: NftFamily
    table: str
    set: NftSet


@dataclass(frozen=True, slots=True)
class ReplaceChain:
    """Flush an existing chain and add ``chain``'s rules (its hook stays as it is)."""

    family: NftFamily
    table: str
    chain: NftChain


NftOp = ReplaceTable | DeleteTable | AddElements | DeleteElements | ReplaceSet | ReplaceChain

OP_LABELS: dict[type, str] = {
    ReplaceTable: "replace_table",
    DeleteTable: "delete_table",
    AddElements: "add_element",
    DeleteElements: "delete_element",
    ReplaceSet: "replace_set",
    ReplaceChain: "replace_chain",
}
"""How ``rule_writes_total`` names each op (``op`` label)."""


def op_labels(op: NftOp) -> tuple[str, ...]:
    """The ``rule_writes_total`` labels of one op: one per element for element ops (each
    element is one write), else one."""
    label = OP_LABELS[type(op)]
    if isinstance(op, AddElements | DeleteElements):
        return (label,) * len(op.elements)
    return (label,)


def op_families(op: NftOp) -> tuple[Family, ...]:
    """The families an op writes for (the ``family`` label of its writes): its elements',
    its set's, or every family its table serves (table and chain ops)."""
    match op:
        case AddElements(elements=elements) | DeleteElements(elements=elements):
            return tuple(sorted({family_of(e) for e in elements}))
        case ReplaceSet(set=s):
            return (s.family,)
        case ReplaceTable(table=t):
            return TABLE_FAMILIES[t.family]
        case DeleteTable(family=f) | ReplaceChain(family=f):
            return TABLE_FAMILIES[f]
