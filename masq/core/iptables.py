"""iptables spelling of the model: rule text, save parsing, restore scripts."""

from __future__ import annotations

from collections.abc import Sequence

from returns.result import Result

from masq.core.model import Family, Op, Ruleset


def parse_save(text: str, chain: str, family: Family) -> Result[Ruleset, str]:
    """Parse ``iptables-save -t nat`` (or ``iptables -S CHAIN -v``) text into what the agent owns."""
    raise NotImplementedError


def render_restore(ops: Sequence[Op]) -> str:
    """One ``iptables-restore --noflush`` transaction for the nat table."""
    raise NotImplementedError
