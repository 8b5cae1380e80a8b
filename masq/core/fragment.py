"""One config file (a fragment of the effective config) and its strict parser."""

from __future__ import annotations

from dataclasses import dataclass

from pyrsistent.typing import PVector
from returns.result import Result

from masq.core.errors import ConfigError
from masq.core.model import IPNetwork

MAX_FRAGMENT_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Fragment:
    """A parsed, validated config file.  ``None`` means the file has no opinion on a key."""

    source: str
    non_masquerade_cidrs: PVector[IPNetwork] | None = None
    masquerade_cidrs: PVector[IPNetwork] | None = None
    masq_link_local: bool | None = None
    masq_link_local_ipv6: bool | None = None
    resync_interval: float | None = None  # seconds, from a Go duration string
    cidr_limit: int | None = None


def parse_fragment(text: str | bytes, source: str) -> Result[Fragment, ConfigError]:
    """Parse one YAML/JSON config file; never raises, whatever the input."""
    raise NotImplementedError  # implemented by the core-config work
