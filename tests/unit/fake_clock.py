"""A clock the test moves by hand (``clock.now += seconds``), for code that takes ``clock=``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now
