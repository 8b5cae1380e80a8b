"""Why a packet to one address is (or is not) masqueraded: rule, file and CIDR.

The answer reads a ruleset the way the kernel does (``evaluate.first_match``) and
then traces the deciding rule back to the config: which files list its CIDR, or
whether it comes from a default, the built-in link-local exception or the final
catch-all.  Pure: the shell passes the fragments, the merge, the ruleset (live or
desired) and whether the address is local to the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from masq.core.addresses import Family, IPAddress, IPNetwork, every_destination, family_of
from masq.core.config import RFC1918
from masq.core.decision import LINK_LOCAL, LINK_LOCAL_KEY, masq_link_local, should_masquerade
from masq.core.fragment import Fragment
from masq.core.iptables.codec import render_rule
from masq.core.iptables.evaluate import agent_chain, chain_match
from masq.core.iptables.model import Chain, Rule, Ruleset
from masq.core.merge import Merged, provenance
from masq.core.nftables.codec import render_rule as render_nft_rule
from masq.core.nftables.evaluate import Match as NftMatch
from masq.core.nftables.evaluate import first_match as nft_first_match
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable

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


def _link_local_origin(fragments: Sequence[Fragment], family: Family, net: IPNetwork) -> Origin:
    key = LINK_LOCAL_KEY[family]
    falses = tuple(sorted(f.source for f in fragments if masq_link_local(f, family) is False))
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
    if (
        merged is not None
        and net == LINK_LOCAL[family]
        and not masq_link_local(merged.config, family)
    ):
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


DecidingStep = Literal["none", "foreign", "catch-all", "exception", "keep"]


def _step_origins(
    step: DecidingStep,
    net: IPNetwork | None,
    family: Family,
    fragments: Sequence[Fragment],
    merged: Merged | None,
) -> tuple[Origin, ...]:
    """Why the deciding step exists, for either dataplane: a file, a default, a built-in."""
    if step == "none":
        return (Origin("no rule", None, (), "no rule of the chain matches: the packet returns"),)
    if step == "foreign":
        note = "a rule the agent does not write decides: its outcome is not modelled"
        return (Origin("foreign rule", net, (), note),)
    cidr = net if net is not None else every_destination(family)
    if step == "catch-all":
        note = "no earlier rule matches: outbound traffic is masqueraded"
        return (Origin("final catch-all", cidr, (), note),)
    if step == "exception":
        listed = provenance(fragments, cidr, masquerade=True)
        if not listed:
            return (_stale(cidr, merged),)
        note = f"listed in masqueradeCIDRs of {', '.join(listed)} (exceptions come first)"
        return (Origin("masqueradeCIDRs", cidr, listed, note),)
    return tuple(_return_origins(fragments, merged, family, cidr))


def _origins(
    rule: Rule | None, family: Family, fragments: Sequence[Fragment], merged: Merged | None
) -> tuple[Origin, ...]:
    step: DecidingStep
    if rule is None:
        step = "none"
    elif rule.action in ("OTHER", "JUMP"):
        step = "foreign"
    elif rule.role == "catch-all":
        step = "catch-all"
    else:
        step = "exception" if rule.action == "MASQUERADE" else "keep"
    return _step_origins(step, rule.destination if rule else None, family, fragments, merged)


def _undecided(ip: IPAddress, merged: Merged | None, chain: str | None, local: bool) -> Explanation:
    """An explanation before any rule is read: the config's own answer, nothing decided."""
    config_says = None if merged is None else (not local and should_masquerade(merged.config, ip))
    return Explanation(
        ip=ip,
        family=family_of(ip),
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


def _no_rule(base: Explanation, note: str) -> Explanation:
    return replace(base, origins=(Origin("no rule", None, (), note),))


def _verdict(rule: Rule | None) -> Verdict:
    if rule is None or rule.action == "RETURN":
        return "keep source"
    return "masquerade" if rule.action == "MASQUERADE" else "unknown"


def _shadowed(chain: Chain, position: int | None, ip: IPAddress) -> tuple[str, ...]:
    """Rules after the deciding one (all, if none decided) that also match ``ip`` by CIDR
    (a rule without ``-d``, a /0, matches all), the catch-all aside: it always would."""
    later = chain.rules[position if position is not None else len(chain.rules) :]
    return tuple(
        render_rule(chain.name, r)
        for r in later
        if r.role != "catch-all"
        and r.protocol is None
        and (r.destination is None or ip in r.destination)
    )


def _decided(
    base: Explanation, chain: Chain, fragments: Sequence[Fragment], merged: Merged | None
) -> Explanation:
    """The explanation when ``chain`` exists: its first matching rule decides."""
    rule = chain_match(chain, base.ip)
    position = next((i + 1 for i, r in enumerate(chain.rules) if r is rule), None)
    return replace(
        base,
        verdict=_verdict(rule),
        chain=chain.name,
        position=position,
        rule=rule,
        rule_text=render_rule(chain.name, rule) if rule is not None else None,
        origins=_origins(rule, base.family, fragments, merged),
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
) -> Explanation:
    """Explain the fate of a packet to ``ip`` under ``ruleset`` (its own family's).

    ``ruleset`` None means the family has no rules (IPv6 not enabled): nothing is
    masqueraded.  ``local`` means ``ip`` is an address of the node itself, which the
    POSTROUTING jump skips (``addrtype ! --dst-type LOCAL``), so neither the rules
    nor the config masquerade it.  ``chain`` defaults to the chain POSTROUTING jumps
    to.  ``ruleset`` of the other family is a caller's bug (ValueError).
    """
    base = _undecided(ip, merged, chain, local)
    if local:
        return _no_rule(base, "a LOCAL address of this node: the POSTROUTING jump skips it")
    if ruleset is None:
        note = f"no {base.family} rules (IPv6 not enabled?): the agent does not masquerade it"
        return replace(_no_rule(base, note), config_masquerade=None)
    if ruleset.family != base.family:
        raise ValueError(f"{ip} is not an {ruleset.family} address")
    name = chain if chain is not None else agent_chain(ruleset)
    found = ruleset.chain(name) if name is not None else None
    if found is None:
        what = f"chain {name} does not exist" if name else "POSTROUTING does not jump to the chain"
        return replace(_no_rule(base, f"{what}: nothing is masqueraded by the agent"), chain=name)
    return _decided(base, found, fragments, merged)


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


def _nft_step(table: NftTable, match: NftMatch | None) -> DecidingStep:
    if match is None:
        return "none"
    rule = match.rule
    if rule.verdict is None:
        return "foreign"
    if rule.verdict == "return":
        return "keep"
    if rule.daddr_set is not None:
        return "exception"
    return "catch-all" if rule.verdict == "jump" and rule.target in table.chains else "foreign"


def explain_nft(
    ip: IPAddress,
    *,
    table: NftTable | None,
    fragments: Sequence[Fragment] = (),
    merged: Merged | None = None,
    local: bool = False,
) -> Explanation:
    """``explain`` for the nftables dataplane: the deciding rule of the base chain and, for a
    set lookup, the element that matched with its counter.  ``table`` None: no table."""
    family = family_of(ip)
    base = _undecided(ip, merged, POSTROUTING_CHAIN, local)
    if local:
        return _no_rule(base, "a LOCAL address of this node: the first rule returns for it")
    if table is None or POSTROUTING_CHAIN not in table.chains:
        return _no_rule(base, "the agent's nft table is absent: nothing is masqueraded by it")
    match = nft_first_match(table, ip)
    step = _nft_step(table, match)
    verdicts: dict[DecidingStep, Verdict] = {"none": "keep source", "keep": "keep source"}
    verdict = verdicts.get(step, "unknown" if step == "foreign" else "masquerade")
    net = None
    text = None
    if match is not None:
        net = match.element if match.element is not None else match.rule.daddr
        text = render_nft_rule(match.rule) if match.rule.verdict is not None else match.rule.text
        if match.element is not None:
            text = f"{text} (element {match.element}{_element_counters(table, match)})"
    covered = tuple(
        f"{n} (covered by {net}: not stored)"
        for n in _configured(merged, family, step)
        if ip in n and n != net
    )
    return replace(
        base,
        verdict=verdict,
        position=match.position if match else None,
        rule_text=text,
        origins=_step_origins(step, net, family, fragments, merged),
        shadowed=covered,
    )


def _element_counters(table: NftTable, match: NftMatch) -> str:
    found = table.sets.get(match.rule.daddr_set or "")
    counters = found.counters.get(match.element) if found and match.element else None
    if counters is None:
        return ""
    return f", counter {counters.packets} packets {counters.bytes} bytes"


def _configured(merged: Merged | None, family: Family, step: DecidingStep) -> list[IPNetwork]:
    """The configured CIDRs of the list that decided (their covered ones are not stored)."""
    if merged is None or step not in ("exception", "keep"):
        return []
    nets = (
        merged.config.masquerade_cidrs
        if step == "exception"
        else merged.config.non_masquerade_cidrs
    )
    return [n for n in nets if family_of(n) == family]
