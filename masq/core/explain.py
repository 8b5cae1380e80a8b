"""Why a packet to one address is (or is not) masqueraded: rule, file and CIDR.

The answer reads a ruleset the way the kernel does (``evaluate.first_match``) and
then traces the deciding rule back to the config: which files list its CIDR, or
whether it comes from a default, the built-in link-local exception or the final
catch-all.  Pure: the shell passes the fragments, the merge, the ruleset (live or
desired) and whether the address is local to the node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from returns.result import Failure, Result, Success

from masq.core.decision import should_masquerade
from masq.core.evaluate import agent_chain, first_match
from masq.core.fragment import Fragment
from masq.core.iptables import render_rule
from masq.core.merge import RFC1918, Merged, provenance
from masq.core.model import (
    LINK_LOCAL_V4,
    LINK_LOCAL_V6,
    Family,
    IPAddress,
    IPNetwork,
    Rule,
    Ruleset,
    every_destination,
    family_of,
)
from masq.core.ruleset import EXCEPTION_COMMENT

OriginKind = Literal[
    "masqueradeCIDRs",
    "nonMasqueradeCIDRs",
    "default",
    "built-in link-local",
    "final catch-all",
    "not in config",
    "foreign rule",
    "no rule",
]
Verdict = Literal["masquerade", "keep source", "unknown"]


@dataclass(frozen=True, slots=True)
class Origin:
    """One reason the deciding rule exists: a kind, the CIDR and the files behind it."""

    kind: OriginKind
    cidr: IPNetwork | None
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything ``--explain`` prints; ``verdict`` is what the ruleset does.

    ``config_masquerade`` is what the config alone says (``should_masquerade``,
    None without a config); when both are known and differ, the ruleset is stale
    and the next sync changes it.
    """

    ip: IPAddress
    family: Family
    verdict: Verdict
    chain: str | None
    position: int | None  # 1-based, as iptables counts
    rule: Rule | None
    rule_text: str | None
    origins: tuple[Origin, ...]
    shadowed: tuple[str, ...]  # later rules that also match, as rule text
    config_masquerade: bool | None
    local: bool

    @property
    def masquerade(self) -> bool | None:
        return None if self.verdict == "unknown" else self.verdict == "masquerade"

    @property
    def agrees(self) -> bool | None:
        if self.config_masquerade is None or self.masquerade is None:
            return None
        return self.masquerade == self.config_masquerade


def parse_ip(text: str) -> Result[IPAddress, str]:
    """A bare IPv4/IPv6 address (no prefix, no zone), or why the text is not one."""
    stripped = text.strip()
    if "/" in stripped:
        return Failure(f"{text!r} is a CIDR; give one address, such as 10.0.0.1")
    if "%" in stripped:
        return Failure(f"{text!r} has an IPv6 zone; give the address without %zone")
    try:
        return Success(ipaddress.ip_address(stripped))
    except ValueError:
        return Failure(f"{text!r} is not an IPv4 or IPv6 address")


def _link_local_origin(fragments: Sequence[Fragment], family: Family, net: IPNetwork) -> Origin:
    key = "masqLinkLocal" if family == "ipv4" else "masqLinkLocalIPv6"
    falses = tuple(
        sorted(
            f.source
            for f in fragments
            if (f.masq_link_local if family == "ipv4" else f.masq_link_local_ipv6) is False
        )
    )
    said = f"set false by {', '.join(falses)}" if falses else "false by default"
    return Origin(
        "built-in link-local",
        net,
        falses,
        f"link-local destinations keep their source while {key} is {said}",
    )


def _return_origins(
    fragments: Sequence[Fragment], merged: Merged | None, family: Family, net: IPNetwork
) -> list[Origin]:
    origins: list[Origin] = []
    link_local = LINK_LOCAL_V4 if family == "ipv4" else LINK_LOCAL_V6
    if merged is not None and net == link_local:
        config = merged.config
        if not (config.masq_link_local if family == "ipv4" else config.masq_link_local_ipv6):
            origins.append(_link_local_origin(fragments, family, net))
    listed = provenance(fragments, net, masquerade=False)
    if listed:
        origins.append(
            Origin(
                "nonMasqueradeCIDRs",
                net,
                listed,
                f"listed in nonMasqueradeCIDRs of {', '.join(listed)}",
            )
        )
    elif (
        merged is not None
        and not any(f.non_masquerade_cidrs is not None for f in fragments)
        and net in merged.config.non_masquerade_cidrs
    ):
        which = "RFC 1918" if net in RFC1918 else "reserved ranges (--nomasq-all-reserved-ranges)"
        origins.append(
            Origin(
                "default",
                net,
                (),
                f"default nonMasqueradeCIDRs ({which}): no file sets nonMasqueradeCIDRs",
            )
        )
    if not origins:
        origins.append(_stale(net, merged))
    return origins


def _stale(net: IPNetwork | None, merged: Merged | None) -> Origin:
    if merged is None:
        return Origin("not in config", net, (), "the config could not be read, so no provenance")
    return Origin(
        "not in config",
        net,
        (),
        "no file or default puts this rule there: it is stale and the next sync removes it",
    )


def _origins(
    rule: Rule | None, family: Family, fragments: Sequence[Fragment], merged: Merged | None
) -> tuple[Origin, ...]:
    if rule is None:
        return (Origin("no rule", None, (), "no rule of the chain matches: the packet returns"),)
    if rule.action in ("OTHER", "JUMP"):
        return (
            Origin(
                "foreign rule",
                rule.destination,
                (),
                "a rule the agent does not write decides: its outcome is not modelled",
            ),
        )
    net = rule.destination if rule.destination is not None else every_destination(family)
    if (
        rule.action == "MASQUERADE"
        and rule.destination is None
        and rule.comment != EXCEPTION_COMMENT
    ):
        return (
            Origin(
                "final catch-all",
                net,
                (),
                "no earlier rule matches: outbound traffic is masqueraded",
            ),
        )
    if rule.action == "MASQUERADE":
        listed = provenance(fragments, net, masquerade=True)
        if listed:
            return (
                Origin(
                    "masqueradeCIDRs",
                    net,
                    listed,
                    f"listed in masqueradeCIDRs of {', '.join(listed)} (exceptions come first)",
                ),
            )
        return (_stale(net, merged),)
    return tuple(_return_origins(fragments, merged, family, net))


def explain(
    ip: IPAddress,
    *,
    ruleset: Ruleset | None,
    fragments: Sequence[Fragment] = (),
    merged: Merged | None = None,
    chain: str | None = None,
    local: bool = False,
) -> Explanation:
    """Explain the fate of a packet to ``ip`` under ``ruleset`` (its own family's).

    ``ruleset`` None means the family has no rules (IPv6 not enabled): nothing is
    masqueraded.  ``local`` means ``ip`` is an address of the node itself, which the
    POSTROUTING jump skips (``addrtype ! --dst-type LOCAL``).  ``chain`` defaults to
    the chain POSTROUTING jumps to.
    """
    family = family_of(ip)
    config_says = should_masquerade(merged.config, ip) if merged is not None else None
    if local:
        config_says = False if merged is not None else None
    base = Explanation(
        ip=ip,
        family=family,
        verdict="keep source",
        chain=chain,
        position=None,
        rule=None,
        rule_text=None,
        origins=(),
        shadowed=(),
        config_masquerade=config_says,
        local=local,
    )
    if local:
        note = "a LOCAL address of this node: the POSTROUTING jump skips it"
        return replace(base, origins=(Origin("no rule", None, (), note),))
    if ruleset is None:
        note = f"no {family} rules (IPv6 not enabled?): the agent does not masquerade it"
        return replace(base, origins=(Origin("no rule", None, (), note),), config_masquerade=None)
    if ruleset.family != family:
        raise ValueError(f"{ip} is not an {ruleset.family} address")
    name = chain if chain is not None else agent_chain(ruleset)
    if name is None or ruleset.chain(name) is None:
        what = f"chain {name} does not exist" if name else "POSTROUTING does not jump to the chain"
        note = f"{what}: nothing is masqueraded by the agent"
        return replace(base, chain=name, origins=(Origin("no rule", None, (), note),))
    found = ruleset.chain(name)
    rules = list(found.rules) if found is not None else []
    rule = first_match(ruleset, name, ip)
    position = next((i + 1 for i, r in enumerate(rules) if r is rule), None)
    if rule is None:
        verdict: Verdict = "keep source"
    elif rule.action == "MASQUERADE":
        verdict = "masquerade"
    elif rule.action == "RETURN":
        verdict = "keep source"
    else:
        verdict = "unknown"
    shadowed = tuple(
        render_rule(name, r)
        for r in rules[position or len(rules) :]
        if r.destination is not None and r.protocol is None and ip in r.destination
    )
    return replace(
        base,
        verdict=verdict,
        chain=name,
        position=position,
        rule=rule,
        rule_text=render_rule(name, rule) if rule is not None else None,
        origins=_origins(rule, family, fragments, merged),
        shadowed=shadowed,
    )


def render_explanation(e: Explanation, ruleset_label: str) -> str:
    """``key: value`` lines an operator reads top-down (verdict first)."""
    verdict = {
        "masquerade": "yes (leaves with the node's address)",
        "keep source": "no (keeps the pod's source address)",
        "unknown": "unknown (decided by a rule the agent does not model)",
    }[e.verdict]
    lines = [f"destination: {e.ip} ({e.family})", f"masqueraded: {verdict}"]
    lines.append(f"rules: {ruleset_label}")
    if e.rule_text is not None:
        lines.append(f"decided by: rule {e.position} of {e.chain}: {e.rule_text}")
    for o in e.origins:
        cidr = f" {o.cidr}" if o.cidr is not None else ""
        lines.append(f"because: {o.kind}{cidr}: {o.note}")
    for text in e.shadowed:
        lines.append(f"also matches (later, no effect): {text}")
    if e.config_masquerade is not None:
        said = "masquerade" if e.config_masquerade else "keep source"
        if e.agrees is False:
            lines.append(
                f"config says: {said}: the rules disagree and the next sync will change them"
            )
        else:
            lines.append(f"config says: {said}")
    return "\n".join(lines) + "\n"


def explanation_dict(e: Explanation, ruleset_label: str) -> dict[str, object]:
    """The same facts as ``render_explanation``, for ``--log-format=json``."""
    return {
        "destination": str(e.ip),
        "family": e.family,
        "masqueraded": e.masquerade,
        "rules": ruleset_label,
        "chain": e.chain,
        "position": e.position,
        "rule": e.rule_text,
        "origins": [
            {
                "kind": o.kind,
                "cidr": str(o.cidr) if o.cidr is not None else None,
                "files": list(o.sources),
                "note": o.note,
            }
            for o in e.origins
        ],
        "also_matches": list(e.shadowed),
        "config_masquerade": e.config_masquerade,
        "local": e.local,
    }
