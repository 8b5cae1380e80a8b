"""``--explain`` on the iptables dataplane: the chain's deciding rule, read first-match.

The rule found is traced back to the config by the shared ``core.explain``; what is
iptables' own is reading the chain, spelling the rules and which step a rule is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from masq.core.addresses import IPAddress
from masq.core.egress import ANY_PACKET, Packet
from masq.core.explain import (
    Decided,
    Explanation,
    no_rule,
    origins,
    outcome,
    selection_step,
    undecided,
)
from masq.core.fragment import Fragment
from masq.core.iptables.codec import render_rule
from masq.core.iptables.evaluate import agent_chain, chain_match
from masq.core.iptables.model import Chain, Rule, Ruleset
from masq.core.merge import Merged


def _step(rule: Rule | None) -> Decided:
    """The decision step a rule carries out (by what it does, its comment for the catch-all)."""
    if rule is None:
        return None
    if rule.action in ("OTHER", "JUMP"):
        return "foreign"
    if rule.role == "default":
        return "default"
    if rule.action in ("MASQUERADE", "SNAT"):
        return "masquerade"
    return "link-local" if rule.role == "link-local" else "non-masquerade"


def _shadowed(chain: Chain, position: int | None, ip: IPAddress) -> tuple[str, ...]:
    """Rules after the deciding one (all, if none decided) that also match ``ip`` by CIDR
    (a rule without ``-d``, a /0, matches all), the catch-all aside: it always would."""
    later = chain.rules[position if position is not None else len(chain.rules) :]
    return tuple(
        render_rule(chain.name, r)
        for r in later
        if r.role != "default"
        and r.protocol is None
        and (r.destination is None or ip in r.destination)
    )


def _decided(
    base: Explanation,
    chain: Chain,
    fragments: Sequence[Fragment],
    merged: Merged | None,
    packet: Packet,
) -> Explanation:
    """The explanation when ``chain`` exists: its first matching rule decides.

    Egress selection has no rule of its own here (it rides on the masquerading rules), so
    when none matches, the config says whether selection left the packet alone."""
    rule = chain_match(chain, base.ip, packet=packet)
    position = next((i + 1 for i, r in enumerate(chain.rules) if r is rule), None)
    step = _step(rule) if rule is not None else selection_step(merged, base.ip, packet)
    return replace(
        base,
        verdict=outcome(step),
        chain=chain.name,
        position=position,
        rule_text=render_rule(chain.name, rule) if rule is not None else None,
        origins=origins(step, rule.destination if rule else None, base.family, fragments, merged),
        shadowed=_shadowed(chain, position, base.ip),
    )


def explain(
    ip: IPAddress,
    *,
    ruleset: Ruleset | None,
    fragments: Sequence[Fragment] = (),
    merged: Merged | None = None,
    chain: str | None = None,
    local: bool = False,
    packet: Packet = ANY_PACKET,
) -> Explanation:
    """Explain the fate of a packet to ``ip`` under ``ruleset`` (its own family's).

    ``ruleset`` None means the family has no rules (IPv6 not enabled): nothing is
    masqueraded.  ``local`` means ``ip`` is an address of the node itself, which the
    POSTROUTING jump skips (``addrtype ! --dst-type LOCAL``), so neither the rules
    nor the config masquerade it.  ``chain`` defaults to the chain POSTROUTING jumps
    to.  ``ruleset`` of the other family is a caller's bug (ValueError).
    """
    base = undecided(ip, merged, chain, local, packet)
    if local:
        return no_rule(base, "a LOCAL address of this node: the POSTROUTING jump skips it")
    if ruleset is None:
        note = f"no {base.family} rules (IPv6 not enabled?): the agent does not masquerade it"
        return replace(no_rule(base, note), config_masquerade=None)
    if ruleset.family != base.family:
        raise ValueError(f"{ip} is not an {ruleset.family} address")
    name = chain if chain is not None else agent_chain(ruleset)
    found = ruleset.chain(name) if name is not None else None
    if found is None:
        what = f"chain {name} does not exist" if name else "POSTROUTING does not jump to the chain"
        return replace(no_rule(base, f"{what}: nothing is masqueraded by the agent"), chain=name)
    return _decided(base, found, fragments, merged, packet)
