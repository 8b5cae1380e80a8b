"""From the effective config to the desired rules, per family."""

from __future__ import annotations

from dataclasses import dataclass

from masq.core.model import DEFAULT_CHAIN, Family, MasqConfig, Ruleset


@dataclass(frozen=True, slots=True)
class RulesetOptions:
    """Flag-level choices that shape rules but are not config (chain, families, NAT options)."""

    chain: str = DEFAULT_CHAIN
    enable_ipv6: bool = False
    random_fully: bool = True  # caller passes False where iptables lacks support
    to_ports: str | None = None  # v1 syntax, e.g. "1024-29999,32768-65535", pre-validated


def desired_ruleset(config: MasqConfig, family: Family, options: RulesetOptions) -> Ruleset:
    """Our chain plus the POSTROUTING jump, in the exact order DESIGN.md fixes."""
    raise NotImplementedError
