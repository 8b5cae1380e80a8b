"""From the decision to the one nftables table that carries it out.

The base chain decides exactly as the iptables chain does, in the same order:
non-local destinations only, masquerade exceptions first, link-local unless
``masqLinkLocal*``, the non-masquerade sets, then masquerade.  A CIDR covered by
another of the same list is not stored: an interval set refuses overlapping
elements, and under first match the covered one could never decide anyway.
"""

from __future__ import annotations

from dataclasses import replace

from pyrsistent import pmap, pvector
from pyrsistent.typing import PVector

from masq.core.addresses import IPNetwork, uncovered
from masq.core.config import MasqConfig
from masq.core.decision import FamilyDecision, Kind, decide
from masq.core.egress import uncovered_interfaces
from masq.core.nat import TO_PORTS_PROTOCOLS, NatOptions, spread
from masq.core.nftables.model import (
    POSTROUTING_CHAIN,
    SNAT_CHAIN,
    BaseChain,
    NftChain,
    NftFamily,
    NftRule,
    NftSet,
    NftTable,
    set_name,
)
from masq.core.options import DataplaneOptions

TableOptions = DataplaneOptions
"""The name this options type had before both dataplanes shared it (kept for callers)."""


def table_family(options: DataplaneOptions) -> NftFamily:
    """``inet`` only with IPv6: an inet nat chain turns on IPv6 NAT and its conntrack."""
    return "inet" if options.enable_ipv6 else "ip"


def _sets(decision: FamilyDecision) -> list[NftSet]:
    lists: tuple[tuple[Kind, PVector[IPNetwork]], ...] = (
        ("masquerade", decision.masquerade),
        ("non-masquerade", decision.non_masquerade),
    )
    return [
        NftSet(
            name=set_name(kind, decision.family),
            family=decision.family,
            elements=frozenset(uncovered(nets)),
            kind=kind,
        )
        for kind, nets in lists
    ]


def _selection(decisions: list[FamilyDecision], nft_family: NftFamily) -> list[NftRule]:
    """Egress selection as early returns: a packet leaving through another interface, or
    from another source, is left alone before any step decides.  Each is one rule with an
    anonymous set (one lookup per new connection, whatever the number of entries; the
    interfaces' trailing-* patterns are interval elements an ifname set holds); entries
    another one covers are left out, since an interval set refuses overlapping ones.  A
    family whose sources the config does not list at all is returned whole.  Without
    selection there are none of these rules and the table is as before."""
    rules: list[NftRule] = []
    interfaces = decisions[0].interfaces if decisions else ()
    if interfaces:
        rules.append(NftRule(verdict="return", not_oifname=tuple(uncovered_interfaces(interfaces))))
    for d in decisions:
        if d.sources is None:
            continue
        if d.sources:
            rules.append(NftRule(verdict="return", not_saddr=tuple(uncovered(d.sources))))
        else:
            rules.append(
                NftRule(verdict="return", nfproto=d.family if nft_family == "inet" else None)
            )
    return rules


def _postrouting(decisions: list[FamilyDecision], nft_family: NftFamily) -> NftChain:
    """The base chain: one step of the decision per rule, in first-match order."""
    rules = [NftRule(verdict="return", local=True)]
    rules += _selection(decisions, nft_family)
    rules += [
        NftRule(
            verdict="jump",
            family=d.family,
            daddr_set=set_name("masquerade", d.family),
            target=SNAT_CHAIN,
        )
        for d in decisions
    ]
    rules += [
        NftRule(verdict="return", family=d.family, daddr=d.link_local, counter=True)
        for d in decisions
        if d.link_local is not None
    ]
    rules += [
        NftRule(verdict="return", family=d.family, daddr_set=set_name("non-masquerade", d.family))
        for d in decisions
    ]
    # One catch-all per family in an inet table, so each family has its own counter.
    rules += [
        NftRule(
            verdict="jump",
            nfproto=d.family if nft_family == "inet" else None,
            counter=True,
            target=SNAT_CHAIN,
        )
        for d in decisions
    ]
    return NftChain(POSTROUTING_CHAIN, BaseChain(), pvector(rules))


def _nat_rules(nat: NatOptions, base: NftRule) -> list[NftRule]:
    """v1's --to-ports spreading (per protocol, each range its share), then the plain rule."""
    rules = [
        replace(
            base,
            protocol=protocol,
            numgen=None if share.unconditional else (share.remaining, share.size),
            to_ports=share.ports,
        )
        for protocol in (TO_PORTS_PROTOCOLS if nat.to_ports else ())
        for share in spread(nat.to_ports)
    ]
    rules.append(base)
    return rules


def _snat(nat: NatOptions, decisions: list[FamilyDecision], nft_family: NftFamily) -> NftChain:
    """The masquerade action: MASQUERADE for every family, or, where the config sets an
    ``outputAddress*``, per family (``meta nfproto`` in an inet table) SNAT to it."""
    plain = NftRule(verdict="masquerade", fully_random=nat.random_fully)
    if all(d.snat_to is None for d in decisions):
        return NftChain(SNAT_CHAIN, None, pvector(_nat_rules(nat, plain)))
    rules: list[NftRule] = []
    for d in decisions:
        family = d.family if nft_family == "inet" else None
        action = (
            replace(plain, nfproto=family)
            if d.snat_to is None
            else replace(plain, verdict="snat", nfproto=family, to_address=d.snat_to)
        )
        rules += _nat_rules(nat, action)
    return NftChain(SNAT_CHAIN, None, pvector(rules))


def desired_table(config: MasqConfig, options: DataplaneOptions) -> NftTable:
    """The whole table the agent wants, for every enabled family."""
    decisions = [decide(config, family) for family in options.families]
    sets = [s for d in decisions for s in _sets(d)]
    nft_family = table_family(options)
    chains = [_postrouting(decisions, nft_family), _snat(options.nat, decisions, nft_family)]
    return NftTable(
        family=table_family(options),
        name=options.table,
        sets=pmap({s.name: s for s in sets}),
        chains=pmap({c.name: c for c in chains}),
    )
