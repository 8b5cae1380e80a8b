"""Reading a ruleset the way the kernel does: first match wins.

Used by ``--explain`` and to prove the rendered chain decides like
``should_masquerade``.  The destination is assumed non-LOCAL (the jump only
sends such traffic), and a ``statistic`` rule is taken to match: the only ones
the agent writes are --to-ports MASQUERADE rules whose verdict is the same
whichever of them fires.
"""

from __future__ import annotations

from masq.core.addresses import IPAddress, family_of
from masq.core.egress import ANY_PACKET, Packet, interface_matches
from masq.core.iptables.model import Chain, Rule, Ruleset
from masq.core.names import POSTROUTING


def _matches(rule: Rule, ip: IPAddress, protocol: str | None, packet: Packet) -> bool:
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    if rule.source is not None and packet.source is not None and packet.source not in rule.source:
        return False
    if (
        rule.out_interface is not None
        and packet.interface is not None
        and not interface_matches(rule.out_interface, packet.interface)
    ):
        return False
    return rule.destination is None or ip in rule.destination


def first_match(
    ruleset: Ruleset,
    chain: str,
    ip: IPAddress,
    protocol: str | None = None,
    packet: Packet = ANY_PACKET,
) -> Rule | None:
    """The rule of ``chain`` that decides for ``ip`` (None: the chain falls through).

    An opaque (OTHER) rule is returned when reached, since its matches are
    unknown: it may decide.  ``ip`` of the other family is a caller's bug
    (ValueError).
    """
    if family_of(ip) != ruleset.family:
        raise ValueError(f"{ip} is not an {ruleset.family} address")
    found = ruleset.chain(chain)
    return None if found is None else chain_match(found, ip, protocol, packet)


def chain_match(
    chain: Chain, ip: IPAddress, protocol: str | None = None, packet: Packet = ANY_PACKET
) -> Rule | None:
    """``first_match`` within one chain (``ip`` of the chain's family)."""
    for rule in chain.rules:
        if rule.action == "OTHER" or _matches(rule, ip, protocol, packet):
            return rule
    return None


def agent_chain(ruleset: Ruleset) -> str | None:
    """The chain POSTROUTING's first modelled jump leads to, if any."""
    post = ruleset.chain(POSTROUTING)
    for rule in post.rules if post else ():
        if rule.action == "JUMP" and rule.jump_chain is not None:
            return rule.jump_chain
    return None


def masquerades(
    ruleset: Ruleset,
    ip: IPAddress,
    protocol: str | None = None,
    chain: str | None = None,
    packet: Packet = ANY_PACKET,
) -> bool:
    """Whether traffic to non-LOCAL ``ip`` leaves masqueraded under ``ruleset``.

    ``packet`` gives its source and output interface (egress selection's ``-s``/``-o``);
    left out, those matches match.  MASQUERADE and SNAT decide True; RETURN, the end of
    the chain, or no jump into it decide False.  ValueError when an opaque or nested-jump
    rule is reached, since its outcome cannot be known from the model.
    """
    name = chain if chain is not None else agent_chain(ruleset)
    if name is None:
        return False
    rule = first_match(ruleset, name, ip, protocol, packet)
    if rule is None or rule.action == "RETURN":
        return False
    if rule.action in ("MASQUERADE", "SNAT"):
        return True
    raise ValueError(f"cannot tell what this rule decides: {rule!r}")
