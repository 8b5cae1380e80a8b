"""Reading a ruleset the way the kernel does: first match wins.

Used by ``--explain`` and to prove the rendered chain decides like
``should_masquerade``.  The destination is assumed non-LOCAL (the jump only
sends such traffic), and a ``statistic`` rule is taken to match: the only ones
the agent writes are --to-ports MASQUERADE rules whose verdict is the same
whichever of them fires.
"""

from __future__ import annotations

import ipaddress

from masq.core.model import POSTROUTING, IPAddress, Rule, Ruleset, family_of


def _address(ip: str | IPAddress) -> IPAddress:
    return ipaddress.ip_address(ip) if isinstance(ip, str) else ip


def _matches(rule: Rule, ip: IPAddress, protocol: str | None) -> bool:
    if rule.protocol is not None and rule.protocol != protocol:
        return False
    return rule.destination is None or ip in rule.destination


def first_match(
    ruleset: Ruleset, chain: str, ip: str | IPAddress, protocol: str | None = None
) -> Rule | None:
    """The rule of ``chain`` that decides for ``ip`` (None: the chain falls through).

    An opaque (OTHER) rule is returned when reached, since its matches are
    unknown: it may decide.
    """
    address = _address(ip)
    if family_of(address) != ruleset.family:
        raise ValueError(f"{address} is not an {ruleset.family} address")
    found = ruleset.chain(chain)
    for rule in found.rules if found else ():
        if rule.action == "OTHER" or _matches(rule, address, protocol):
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
    ruleset: Ruleset, ip: str | IPAddress, protocol: str | None = None, chain: str | None = None
) -> bool:
    """Whether traffic to non-LOCAL ``ip`` leaves masqueraded under ``ruleset``.

    MASQUERADE decides True; RETURN, the end of the chain, or no jump into it
    decide False.  ValueError when an opaque or nested-jump rule is reached,
    since its outcome cannot be known from the model.
    """
    name = chain if chain is not None else agent_chain(ruleset)
    if name is None:
        return False
    rule = first_match(ruleset, name, ip, protocol)
    if rule is None or rule.action == "RETURN":
        return False
    if rule.action == "MASQUERADE":
        return True
    raise ValueError(f"cannot tell what this rule decides: {rule!r}")
