"""From the effective config to the desired rules, per family."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyrsistent import pmap, pvector
from returns.result import Failure

from masq.core.model import (
    DEFAULT_CHAIN,
    LINK_LOCAL_V4,
    LINK_LOCAL_V6,
    POSTROUTING,
    Chain,
    Family,
    IPNetwork,
    MasqConfig,
    Rule,
    Ruleset,
    family_of,
    sorted_cidrs,
)
from masq.core.ports import PortRange, parse_to_ports

EXCEPTION_COMMENT = "ip-masq-agent: destination is in masqueradeCIDRs"
RETURN_COMMENT = "ip-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_COMMENT = "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"
TO_PORTS_PROTOCOLS = ("tcp", "udp", "sctp")  # v1's order
PROBABILITY_SCALE = 2**31  # xt_statistic stores probability as a multiple of 2**-31


def jump_comment(chain: str) -> str:
    return (
        "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic"
        f" to our custom {chain} chain"
    )


def kernel_probability(p: float) -> float:
    """``p`` at the kernel's resolution (lround(p * 2**31) / 2**31), so it reads back equal."""
    return math.floor(p * PROBABILITY_SCALE + 0.5) / PROBABILITY_SCALE


@dataclass(frozen=True, slots=True)
class RulesetOptions:
    """Flag-level choices that shape rules but are not config (chain, families, NAT options)."""

    chain: str = DEFAULT_CHAIN
    enable_ipv6: bool = False
    random_fully: bool = True  # caller passes False where iptables lacks support
    to_ports: str | None = None  # v1 syntax, e.g. "1024-29999,32768-65535", pre-validated


def jump_rule(chain: str) -> Rule:
    """The one POSTROUTING rule the agent owns."""
    return Rule(action="JUMP", comment=jump_comment(chain), not_local=True, jump_chain=chain)


def _to_ports_rules(
    ranges: tuple[PortRange, ...],
    random_fully: bool,
    comment: str = MASQ_COMMENT,
    destination: IPNetwork | None = None,
) -> list[Rule]:
    """v1's spreading: per protocol, each interval takes its share of what is left."""
    rules: list[Rule] = []
    for protocol in TO_PORTS_PROTOCOLS:
        remaining = sum(r.size for r in ranges)
        for r in ranges:
            probability = None if r.size == remaining else kernel_probability(r.size / remaining)
            remaining -= r.size
            rules.append(
                Rule(
                    action="MASQUERADE",
                    comment=comment,
                    destination=destination,
                    protocol=protocol,
                    probability=probability,
                    to_ports=str(r),
                    random_fully=random_fully,
                )
            )
    return rules


def _dest(net: IPNetwork) -> IPNetwork | None:
    """iptables prints no ``-d`` for a /0, so the model says "any" for it too."""
    return None if net.prefixlen == 0 else net


def _of_family(nets: object, family: Family) -> list[IPNetwork]:
    return [n for n in sorted_cidrs(nets) if family_of(n) == family]


def desired_ruleset(config: MasqConfig, family: Family, options: RulesetOptions) -> Ruleset:
    """Our chain plus the POSTROUTING jump, in the exact order DESIGN.md fixes.

    Order: masquerade exceptions (each preceded by its own --to-ports rules when
    set), link-local RETURN, RETURNs in canonical order, v1's --to-ports rules,
    the final MASQUERADE.  Every rule is distinct, which
    lets the planner diff by longest increasing subsequence.
    """
    rf = options.random_fully
    ranges: tuple[PortRange, ...] = ()
    if options.to_ports:
        parsed = parse_to_ports(options.to_ports)
        if isinstance(parsed, Failure):
            raise ValueError(f"to_ports must be validated by the caller: {parsed.failure()}")
        ranges = parsed.unwrap()
    rules: list[Rule] = []
    for net in _of_family(config.masquerade_cidrs, family):
        # An exception masquerades like the final rule does, --to-ports included.
        rules += _to_ports_rules(ranges, rf, EXCEPTION_COMMENT, _dest(net)) if ranges else []
        rules.append(
            Rule(
                action="MASQUERADE",
                comment=EXCEPTION_COMMENT,
                destination=_dest(net),
                random_fully=rf,
            )
        )
    link_local: IPNetwork = LINK_LOCAL_V4 if family == "ipv4" else LINK_LOCAL_V6
    masq_ll = config.masq_link_local if family == "ipv4" else config.masq_link_local_ipv6
    returns = _of_family(config.non_masquerade_cidrs, family)
    if not masq_ll:
        returns = [link_local, *(n for n in returns if n != link_local)]
    rules += [Rule(action="RETURN", comment=RETURN_COMMENT, destination=_dest(n)) for n in returns]
    if ranges:
        rules += _to_ports_rules(ranges, rf)
    rules.append(Rule(action="MASQUERADE", comment=MASQ_COMMENT, random_fully=rf))
    return Ruleset(
        family=family,
        chains=pmap(
            {
                POSTROUTING: Chain(POSTROUTING, pvector([jump_rule(options.chain)])),
                options.chain: Chain(options.chain, pvector(rules)),
            }
        ),
    )


def desired_rulesets(config: MasqConfig, options: RulesetOptions) -> tuple[Ruleset, ...]:
    """IPv4, then IPv6 when enabled."""
    families: tuple[Family, ...] = ("ipv4", "ipv6") if options.enable_ipv6 else ("ipv4",)
    return tuple(desired_ruleset(config, f, options) for f in families)
