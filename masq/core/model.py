"""Immutable data shared by every stage of the core: effective config, rules, ops.

Everything here is backend-neutral: a rule says *what* it matches and does, the
iptables module (and later an nftables one) says how that is spelled.
Collections are pyrsistent so values can be shared, hashed and compared cheaply.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from pyrsistent import pmap, pvector
from pyrsistent.typing import PMap, PVector

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LINK_LOCAL_V4 = ipaddress.IPv4Network("169.254.0.0/16")
LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")
POSTROUTING = "POSTROUTING"
DEFAULT_CHAIN = "IP-MASQ-AGENT"
DEFAULT_CIDR_LIMIT = 64
DEFAULT_RESYNC_SECONDS = 60.0


def family_of(net: IPNetwork | IPAddress) -> Family:
    return "ipv4" if net.version == 4 else "ipv6"


def every_destination(family: Family) -> IPNetwork:
    """What a rule without a destination match covers (0.0.0.0/0 or ::/0)."""
    return ipaddress.IPv4Network("0.0.0.0/0") if family == "ipv4" else ipaddress.IPv6Network("::/0")


def cidr_key(net: IPNetwork) -> tuple[int, int, int]:
    """Canonical order of CIDRs everywhere: family, network address, prefix length."""
    return (net.version, int(net.network_address), net.prefixlen)


def sorted_cidrs(nets: object) -> PVector[IPNetwork]:
    """Deduplicated, canonically ordered vector (the only order the core ever emits)."""
    return pvector(sorted(set(nets), key=cidr_key))  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class MasqConfig:
    """The effective configuration after merge and defaults.

    CIDR vectors are deduplicated and in canonical order (``cidr_key``), so two
    configs that mean the same are equal and render the same.
    """

    non_masquerade_cidrs: PVector[IPNetwork] = field(default_factory=pvector)
    masquerade_cidrs: PVector[IPNetwork] = field(default_factory=pvector)
    masq_link_local: bool = False
    masq_link_local_ipv6: bool = False
    resync_interval: float = DEFAULT_RESYNC_SECONDS
    cidr_limit: int = DEFAULT_CIDR_LIMIT


@dataclass(frozen=True, slots=True)
class Counters:
    """Kernel packet/byte counters of one rule, as last observed."""

    packets: int
    bytes: int


Action = Literal["RETURN", "MASQUERADE", "JUMP", "OTHER"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule, as data.

    ``action`` JUMP goes to ``jump_chain``.  ``not_local`` matches packets whose
    destination address is not a local one (iptables: ``-m addrtype ! --dst-type
    LOCAL``).  ``protocol``/``probability``/``to_ports`` carry v1's ``--to-ports``
    rules; ``probability`` is kept in the kernel's own resolution (a multiple of
    2**-31) so what we ask for equals what we read back.  ``counters`` never take
    part in equality: a rule is the same rule whatever traffic it has seen.

    ``action`` OTHER is a rule read from the kernel that the model cannot express
    (someone added ``-s 1.2.3.4 -j ACCEPT`` to our chain, or a jump with extra
    matches): ``spec`` holds its backend text verbatim so a plan can delete it,
    and ``jump_chain`` its target, so a foreign-looking jump to our chain is
    still recognised as ours.  ``spec`` is None for every modelled rule.
    """

    action: Action
    comment: str
    destination: IPNetwork | None = None
    not_local: bool = False
    jump_chain: str | None = None
    protocol: str | None = None
    probability: float | None = None
    to_ports: str | None = None
    random_fully: bool = False
    spec: str | None = None
    counters: Counters | None = field(default=None, compare=False, hash=False)


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
