"""From the decision to the iptables rules that carry it out, per family.

The rule text is upstream's (v1/v2), comments included, so switching agents finds
the chain already in sync.  The comments are also how a rule read back from the
kernel is recognised as the agent's: ``role_of`` maps them back to roles.
"""

from __future__ import annotations

from dataclasses import replace

from pyrsistent import pmap, pvector

from masq.core.addresses import Family, IPNetwork, uncovered
from masq.core.config import MasqConfig
from masq.core.decision import LINK_LOCAL, FamilyDecision, decide
from masq.core.egress import uncovered_interfaces
from masq.core.iptables.model import Action, Chain, Role, Rule, Ruleset
from masq.core.names import POSTROUTING
from masq.core.nat import TO_PORTS_PROTOCOLS, NatOptions, spread
from masq.core.options import DataplaneOptions

EXCEPTION_COMMENT = "ip-masq-agent: destination is in masqueradeCIDRs"
RETURN_COMMENT = "ip-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_COMMENT = "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
_ROLES: dict[tuple[Action, str], Role] = {
    ("MASQUERADE", EXCEPTION_COMMENT): "masquerade",
    ("SNAT", EXCEPTION_COMMENT): "masquerade",
    ("RETURN", RETURN_COMMENT): "non-masquerade",
    ("MASQUERADE", MASQ_COMMENT): "default",
    ("SNAT", MASQ_COMMENT): "default",
}


def jump_comment(chain: str) -> str:
    return (
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic"
        f" to our custom {chain} chain"
    )


def role_of(
    action: Action, comment: str, jump_chain: str | None, destination: IPNetwork | None = None
) -> Role:
    """The role of a rule read from the kernel, from what it does and its comment (one
    comment serves every RETURN: the link-local range's is told by its destination)."""
    if action == "JUMP" and jump_chain is not None and comment == jump_comment(jump_chain):
        return "jump"
    role = _ROLES.get((action, comment), "foreign")
    if role == "non-masquerade" and destination in LINK_LOCAL.values():
        return "link-local"
    return role


RulesetOptions = DataplaneOptions
"""The name this options type had before both dataplanes shared it (kept for callers)."""


def jump_rule(chain: str) -> Rule:
    """The one POSTROUTING rule the agent owns."""
    return Rule(
        action="JUMP", comment=jump_comment(chain), not_local=True, jump_chain=chain, role="jump"
    )


def _selections(
    decision: FamilyDecision,
) -> list[tuple[IPNetwork | None, str | None]]:
    """The (source, output interface) pairs a masquerading rule is written for.

    iptables has one ``-s`` and one ``-o`` per rule and no sets, so egress selection
    (any of these sources, leaving through any of these interfaces) is written out as
    one copy of each masquerading rule per pair, in place: a selected flow meets the
    copy for its pair exactly where the unselected rule stood, so first-match order is
    kept, and an unselected flow meets no masquerading rule at all (left alone).  RETURN
    rules need no copies (keeping the source is what "left alone" does anyway).  Without
    selection this is one pair of "any", and the chain is upstream's rule for rule.
    Entries another one covers are left out (they would only repeat its copies).
    """
    sources: list[IPNetwork | None] = (
        list(uncovered(decision.sources)) if decision.sources is not None else [None]
    )
    interfaces: list[str | None] = list(uncovered_interfaces(decision.interfaces)) or [None]
    return [(_dest_or_any(s), i) for s in sources for i in interfaces]


def _masquerade(
    role: Role,
    comment: str,
    destination: IPNetwork | None,
    nat: NatOptions,
    decision: FamilyDecision,
) -> list[Rule]:
    """A MASQUERADE as v1 spreads it: per protocol, each range its share, then the plain rule;
    SNAT to the decision's address instead where the config sets one; once per selection."""
    snat = decision.snat_to
    base = Rule(
        action="MASQUERADE" if snat is None else "SNAT",
        comment=comment,
        destination=destination,
        random_fully=nat.random_fully,
        to_source=snat,
        role=role,
    )
    spread_rules = [
        replace(
            base,
            protocol=protocol,
            probability=None if share.unconditional else share.probability,
            to_ports=share.ports,
        )
        for protocol in (TO_PORTS_PROTOCOLS if nat.to_ports else ())
        for share in spread(nat.to_ports)
    ]
    return [
        replace(rule, source=source, out_interface=interface)
        for source, interface in _selections(decision)
        for rule in (*spread_rules, base)
    ]


def _dest(net: IPNetwork) -> IPNetwork | None:
    """iptables prints no ``-d`` for a /0, so the model says "any" for it too."""
    return None if net.prefixlen == 0 else net


def _dest_or_any(net: IPNetwork | None) -> IPNetwork | None:
    return None if net is None else _dest(net)


def chain_rules(decision: FamilyDecision, nat: NatOptions) -> list[Rule]:
    """Our chain, first-match: exceptions, link-local, keeps, the catch-all.

    Every rule is distinct (a non-masquerade CIDR equal to the link-local range is
    written once), which lets the planner diff by longest increasing subsequence.
    """
    rules: list[Rule] = []
    for net in decision.masquerade:
        rules += _masquerade("masquerade", EXCEPTION_COMMENT, _dest(net), nat, decision)
    keeps: list[tuple[Role, IPNetwork]] = (
        [("link-local", decision.link_local)] if decision.link_local is not None else []
    )
    keeps += [("non-masquerade", n) for n in decision.non_masquerade if n != decision.link_local]
    rules += [
        Rule(action="RETURN", comment=RETURN_COMMENT, destination=_dest(n), role=role)
        for role, n in keeps
    ]
    rules += _masquerade("default", MASQ_COMMENT, None, nat, decision)
    return rules


def desired_ruleset(config: MasqConfig, family: Family, options: DataplaneOptions) -> Ruleset:
    """Our chain plus the POSTROUTING jump, for one family."""
    rules = chain_rules(decide(config, family), options.nat)
    return Ruleset(
        family=family,
        chains=pmap(
            {
                POSTROUTING: Chain(POSTROUTING, pvector([jump_rule(options.chain)])),
                options.chain: Chain(options.chain, pvector(rules)),
            }
        ),
    )


def desired_rulesets(config: MasqConfig, options: DataplaneOptions) -> tuple[Ruleset, ...]:
    """IPv4, then IPv6 when enabled."""
    return tuple(desired_ruleset(config, f, options) for f in options.families)
