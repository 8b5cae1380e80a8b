"""Minimal ordered ops from observed to desired, and a pure model of applying them."""

from __future__ import annotations

from collections.abc import Sequence

from masq.core.model import Op, Ruleset


def plan(desired: Ruleset, observed: Ruleset) -> tuple[Op, ...]:
    raise NotImplementedError


def apply_ops(observed: Ruleset, ops: Sequence[Op]) -> Ruleset:
    raise NotImplementedError
