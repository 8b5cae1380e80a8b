"""The masquerade decision for one destination, straight from the config."""

from __future__ import annotations

from masq.core.model import IPAddress, MasqConfig


def should_masquerade(config: MasqConfig, ip: str | IPAddress) -> bool:
    """True when traffic to non-LOCAL ``ip`` leaves with the node's address."""
    raise NotImplementedError
