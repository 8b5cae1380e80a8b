"""Why a packet to one address is (or is not) masqueraded: rule, file and CIDR, for any dataplane.

Each dataplane explains itself beside its codec (``iptables.explain``,
``nftables.explain``): it reads its rules the way the kernel does and names the
decision step that fired.  What is shared lives here: the ``Explanation`` they return,
and tracing a step back to the config (which files list its CIDR, or whether it comes
from a default, the built-in link-local exception or the final catch-all).  Pure: the
shell passes the fragments, the merge, the rules (live or desired) and whether the
address is local to the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from masq.core.addresses import Family, IPAddress, IPNetwork, every_destination, family_of
from masq.core.config import RFC1918
from masq.core.decision import LINK_LOCAL, LINK_LOCAL_KEY, FlowStep, decide, masq_link_local
from masq.core.egress import ANY_PACKET, Packet
from masq.core.fragment import (
    MASQUERADE_CIDRS,
    NON_MASQUERADE_CIDRS,
    OUTPUT_INTERFACES,
    SOURCE_CIDRS,
    Fragment,
)
from masq.core.merge import Merged, provenance

OriginKind = Literal[
    "masqueradeCIDRs",
    "nonMasqueradeCIDRs",
    "default",
    "built-in link-local",
    "final catch-all",
    "not in config",
    "foreign rule",
    "no rule",
    "outputInterfaces",
    "sourceCIDRs",
]
Outcome = Literal["masquerade", "keep source", "unknown"]
"""What the rules do with the packet (``unknown``: a rule the agent does not model decides)."""
Decided = FlowStep | Literal["foreign"] | None
"""Which step of the decision fired: one of the decision's steps, a rule the agent does
not write (``foreign``), or none (the chain falls through)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """One reason the deciding rule exists: a kind, the CIDR and the files behind it."""

    kind: OriginKind
    cidr: IPNetwork | None
    sources: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything ``--explain`` prints; ``verdict`` is what the rules do.

    ``config_masquerade`` is what the config alone says (``should_masquerade``,
    None without a config); when both are known and differ, the ruleset is stale
    and the next sync changes it.
    """

    ip: IPAddress
    family: Family
    verdict: Outcome
    chain: str | None
    position: int | None  # 1-based, as iptables and nft count
    rule_text: str | None
    origins: tuple[Origin, ...]
    shadowed: tuple[str, ...]  # later rules that also match, as rule text
    config_masquerade: bool | None
    local: bool
    source: IPAddress | None = None  # --explain-source, when given
    interface: str | None = None  # --explain-interface, when given

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
                NON_MASQUERADE_CIDRS,
                net,
                listed,
                f"listed in {NON_MASQUERADE_CIDRS} of {', '.join(listed)}",
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
                f"default {NON_MASQUERADE_CIDRS} ({which}): no file sets {NON_MASQUERADE_CIDRS}",
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


def origins(
    step: Decided,
    net: IPNetwork | None,
    family: Family,
    fragments: Sequence[Fragment],
    merged: Merged | None,
) -> tuple[Origin, ...]:
    """Why the deciding step exists, for either dataplane: a file, a default, a built-in."""
    if step is None:
        return (Origin("no rule", None, (), "no rule of the chain matches: the packet returns"),)
    if step in ("other-interface", "other-source"):
        return (_unselected(step, fragments),)
    if step == "foreign":
        note = "a rule the agent does not write decides: its outcome is not modelled"
        return (Origin("foreign rule", net, (), note),)
    cidr = net if net is not None else every_destination(family)
    if step == "default":
        note = "no earlier rule matches: outbound traffic is masqueraded"
        return (Origin("final catch-all", cidr, (), note),)
    if step == "masquerade":
        listed = provenance(fragments, cidr, masquerade=True)
        if not listed:
            return (_stale(cidr, merged),)
        note = f"listed in {MASQUERADE_CIDRS} of {', '.join(listed)} (exceptions come first)"
        return (Origin(MASQUERADE_CIDRS, cidr, listed, note),)
    return tuple(_return_origins(fragments, merged, family, cidr))


def _unselected(step: FlowStep, fragments: Sequence[Fragment]) -> Origin:
    """Egress selection left the packet alone: the key and the files that set it."""
    key: OriginKind
    if step == "other-interface":
        files = tuple(sorted(f.source for f in fragments if f.output_interfaces))
        what = f"its output interface is none of {OUTPUT_INTERFACES}"
        key = OUTPUT_INTERFACES
    else:
        files = tuple(sorted(f.source for f in fragments if f.source_cidrs))
        what = f"its source is in none of {SOURCE_CIDRS}"
        key = SOURCE_CIDRS
    given = f" (set in {', '.join(files)})" if files else ""
    return Origin(key, None, files, f"{what}{given}: the agent leaves it alone")


def selection_step(merged: Merged | None, ip: IPAddress, packet: Packet) -> Decided:
    """The selection step that leaves the packet alone by the config (None: selected, or no
    config to tell): for a dataplane whose rules do not show it as a rule of its own."""
    if merged is None:
        return None
    step = decide(merged.config, family_of(ip)).partial_flow_step(
        ip, packet.source, packet.interface
    )
    return step if step in ("other-interface", "other-source") else None


def outcome(step: Decided) -> Outcome:
    """What the packet gets when ``step`` decides."""
    if step in (None, "link-local", "non-masquerade", "other-interface", "other-source"):
        return "keep source"
    return "unknown" if step == "foreign" else "masquerade"


def undecided(
    ip: IPAddress,
    merged: Merged | None,
    chain: str | None,
    local: bool,
    packet: Packet = ANY_PACKET,
) -> Explanation:
    """An explanation before any rule is read: the config's own answer, nothing decided."""
    config_says = None
    if merged is not None:
        step = decide(merged.config, family_of(ip)).partial_flow_step(
            ip, packet.source, packet.interface
        )
        config_says = not local and step in ("masquerade", "default")
    return Explanation(
        ip=ip,
        family=family_of(ip),
        verdict="keep source",
        chain=chain,
        position=None,
        rule_text=None,
        origins=(),
        shadowed=(),
        config_masquerade=config_says,
        local=local,
        source=packet.source,
        interface=packet.interface,
    )


def no_rule(base: Explanation, note: str) -> Explanation:
    return replace(base, origins=(Origin("no rule", None, (), note),))


def render_explanation(e: Explanation, ruleset_label: str) -> str:
    """``key: value`` lines an operator reads top-down (verdict first)."""
    verdict = {
        "masquerade": "yes (leaves with the node's address)",
        "keep source": "no (keeps the pod's source address)",
        "unknown": "unknown (decided by a rule the agent does not model)",
    }[e.verdict]
    lines = [f"destination: {e.ip} ({e.family})"]
    if e.source is not None:
        lines.append(f"source: {e.source}")
    if e.interface is not None:
        lines.append(f"output interface: {e.interface}")
    lines.append(f"masqueraded: {verdict}")
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
    flow: dict[str, object] = {}
    if e.source is not None:
        flow["source"] = str(e.source)
    if e.interface is not None:
        flow["interface"] = e.interface
    return flow | {
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
