"""The agent's one HTTP server: /healthz, /readyz, /metrics (placeholder until observability lands)."""

from __future__ import annotations

from typing import Protocol

from masq.shell.metrics import Metrics


class Server(Protocol):
    def shutdown(self) -> None: ...


def start_server(bind: str, metrics: Metrics) -> Server | None:
    """Serve in a daemon thread on ``host:port``; ``"0"`` disables it (returns None)."""
    return None
