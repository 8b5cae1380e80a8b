"""Merging fragments into the effective config, reporting every disagreement."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyrsistent.typing import PVector
from returns.result import Result

from masq.core.errors import ConfigError
from masq.core.fragment import Fragment
from masq.core.model import DEFAULT_RESYNC_SECONDS, MasqConfig


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two or more sources explicitly disagree on ``key``; ``resolution`` says what won."""

    key: str
    values: PVector[tuple[str, str]]  # (source, value as text), sorted by source
    resolution: str


@dataclass(frozen=True, slots=True)
class Merged:
    config: MasqConfig
    conflicts: PVector[Conflict]


def merge(
    fragments: Iterable[Fragment],
    *,
    reserved_ranges: bool = False,
    enable_ipv6: bool = False,
    default_resync_interval: float = DEFAULT_RESYNC_SECONDS,
) -> Result[Merged, ConfigError]:
    """Order-independent merge with per-key defaults (see DESIGN.md, Semantics)."""
    raise NotImplementedError
