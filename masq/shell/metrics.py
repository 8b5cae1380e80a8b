"""Agent metrics and health state (placeholder: the observability work fills this in).

The reconcile loop calls these hooks; they must stay cheap and never raise.
"""

from __future__ import annotations

from collections.abc import Sequence

from masq.core.merge import Merged
from masq.core.model import Family, Op, Ruleset


class Metrics:
    def __init__(self, resync_interval: float = 60.0) -> None:
        self.resync_interval = resync_interval

    def config_loaded(self, fragments: int, merged: Merged) -> None:
        """A config was read and merged (called every sync)."""

    def rule_writes(self, family: Family, ops: Sequence[Op]) -> None:
        """Ops were written to the kernel for ``family`` (not called for empty plans)."""

    def observed(self, family: Family, ruleset: Ruleset) -> None:
        """The sync's own listing of our chain, with kernel counters on each rule."""

    def sync_finished(self, ok: bool, duration_seconds: float, reason: str | None = None) -> None:
        """One sync ended; ``reason`` is the one-line error when not ok."""

    def loop_alive(self) -> None:
        """The loop woke up (called at least once per resync interval)."""
