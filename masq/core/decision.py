"""The masquerade decision: from the effective config to what each family does, for any dataplane.

Everything that defines the decision lives here: the link-local ranges and when they
keep their source, the order of the steps, and ``should_masquerade``, the
specification every rendered dataplane is tested against.  A dataplane renders a
``FamilyDecision`` (iptables: a chain read first-match; nftables: sets and a chain)
and adds nothing to it but spelling.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final, Literal, overload

from pyrsistent import pvector
from pyrsistent.typing import PVector

from masq.core.addresses import Family, IPAddress, IPNetwork, family_of, of_family
from masq.core.config import MasqConfig
from masq.core.egress import interface_matches
from masq.core.fragment import MASQ_LINK_LOCAL, MASQ_LINK_LOCAL_IPV6, Fragment

LINK_LOCAL: Final[dict[Family, IPNetwork]] = {
    "ipv4": ipaddress.IPv4Network("169.254.0.0/16"),
    "ipv6": ipaddress.IPv6Network("fe80::/10"),
}
LINK_LOCAL_KEY: Final[dict[Family, str]] = {"ipv4": MASQ_LINK_LOCAL, "ipv6": MASQ_LINK_LOCAL_IPV6}
"""The config key that lets link-local traffic of a family be masqueraded."""

Kind = Literal["masquerade", "non-masquerade"]
"""Which CIDR list: masqueradeCIDRs or nonMasqueradeCIDRs (the one word for it everywhere
inside; outside, nft set names spell it so, and the ``kind`` metric label as
``non_masquerade``, which stays as dashboards know it)."""
KINDS: Final[tuple[Kind, ...]] = ("masquerade", "non-masquerade")

Step = Literal["masquerade", "link-local", "non-masquerade", "default"]
"""Which step decides: 1. masqueradeCIDRs (masquerade), 2. link-local (keep),
3. nonMasqueradeCIDRs (keep), 4. the default (masquerade)."""

FlowStep = Literal["other-interface", "other-source"] | Step
"""Which step decides a flow: before ``Step``, egress selection leaves alone a flow that
leaves through an interface outside ``outputInterfaces`` (other-interface) or comes from a
source outside ``sourceCIDRs`` (other-source)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """What the decision reads of a packet: its source, its non-LOCAL destination (same
    family) and the interface it leaves through."""

    source: IPAddress
    destination: IPAddress
    interface: str

    def __post_init__(self) -> None:
        if self.source.version != self.destination.version:
            raise ValueError(f"{self.source} and {self.destination} are of different families")


@overload
def masq_link_local(settings: MasqConfig, family: Family) -> bool: ...
@overload
def masq_link_local(settings: Fragment, family: Family) -> bool | None: ...
def masq_link_local(settings: MasqConfig | Fragment, family: Family) -> bool | None:
    """``family``'s ``masqLinkLocal*`` key: in the effective config, or as one file set it."""
    return settings.masq_link_local if family == "ipv4" else settings.masq_link_local_ipv6


@dataclass(frozen=True, slots=True)
class FamilyDecision:
    """One family's decision for non-LOCAL destinations, as ordered steps.

    1. a destination in ``masquerade`` is masqueraded;
    2. else one in ``link_local`` (None when ``masqLinkLocal*`` is true) keeps its source;
    3. else one in ``non_masquerade`` keeps its source;
    4. else it is masqueraded.
    CIDR vectors are of this family only, in canonical order.

    Egress selection comes before step 1 (``flow_step``): ``interfaces`` (empty: any)
    and ``sources`` (None: any; empty: the config selects sources of the other family
    only, so none of this one) pick the flows decided at all; "masquerade" means SNAT to
    ``snat_to`` where it is set.
    """

    family: Family
    masquerade: PVector[IPNetwork]
    link_local: IPNetwork | None
    non_masquerade: PVector[IPNetwork]
    interfaces: PVector[str] = field(default_factory=pvector)
    sources: PVector[IPNetwork] | None = None
    snat_to: IPAddress | None = None

    @property
    def selects(self) -> bool:
        """Whether egress selection narrows the flows decided (False: every flow is)."""
        return bool(self.interfaces) or self.sources is not None

    def step(self, ip: IPAddress) -> Step:
        """The step that decides for ``ip`` (an address of this family)."""
        if any(ip in net for net in self.masquerade):
            return "masquerade"
        if self.link_local is not None and ip in self.link_local:
            return "link-local"
        if any(ip in net for net in self.non_masquerade):
            return "non-masquerade"
        return "default"

    def masquerades(self, ip: IPAddress) -> bool:
        return self.step(ip) in ("masquerade", "default")

    def flow_step(self, flow: Flow) -> FlowStep:
        """The step that decides for ``flow``: the whole order, selection first."""
        return self.partial_flow_step(flow.destination, flow.source, flow.interface)

    def partial_flow_step(
        self, destination: IPAddress, source: IPAddress | None, interface: str | None
    ) -> FlowStep:
        """``flow_step`` where the source or the interface may be unknown (``--explain``
        without them): an unknown one is taken as selected."""
        if (
            self.interfaces
            and interface is not None
            and not any(interface_matches(i, interface) for i in self.interfaces)
        ):
            return "other-interface"
        if (
            self.sources is not None
            and source is not None
            and not any(source in n for n in self.sources)
        ):
            return "other-source"
        return self.step(destination)

    def masquerades_flow(self, flow: Flow) -> bool:
        return self.flow_step(flow) in ("masquerade", "default")


def decide(config: MasqConfig, family: Family) -> FamilyDecision:
    """The decision steps ``config`` gives ``family``."""
    return FamilyDecision(
        family=family,
        masquerade=of_family(config.masquerade_cidrs, family),
        link_local=None if masq_link_local(config, family) else LINK_LOCAL[family],
        non_masquerade=of_family(config.non_masquerade_cidrs, family),
        interfaces=config.output_interfaces,
        sources=of_family(config.source_cidrs, family) if config.source_cidrs else None,
        snat_to=config.output_address if family == "ipv4" else config.output_address_ipv6,
    )


def should_masquerade(config: MasqConfig, ip: IPAddress) -> bool:
    """True when traffic to the non-LOCAL address ``ip`` leaves with the node's address.

    ``ip`` is a parsed address; text from a user goes through ``parse_ip`` first,
    which returns a ``Failure`` for what is not an address.  Passing a ``str`` is a
    programming error (mypy rejects it; at run time it raises ``TypeError``).
    """
    if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise TypeError(
            f"should_masquerade takes an ipaddress address, not {type(ip).__name__}:"
            " parse text with masq.parse_ip"
        )
    return decide(config, family_of(ip)).masquerades(ip)


def should_masquerade_flow(config: MasqConfig, flow: Flow) -> bool:
    """True when ``flow`` leaves with a NAT address: the node's (MASQUERADE), or
    ``outputAddress(IPv6)`` where the config sets one.

    A flow leaving through an interface outside ``outputInterfaces``, or from a source
    outside ``sourceCIDRs``, is left alone (False); every other flow is decided by its
    destination alone, so for a config without those keys this is
    ``should_masquerade(config, flow.destination)``.
    """
    return decide(config, family_of(flow.destination)).masquerades_flow(flow)
