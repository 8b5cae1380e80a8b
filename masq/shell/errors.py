"""Exceptions of the imperative shell: each carries the one line the user sees."""

from __future__ import annotations


class AgentError(Exception):
    """Fatal for this run: print ``ip-masq-agent: <message>`` and exit 1, no traceback."""


class TransientError(AgentError):
    """Worth retrying with backoff (xtables lock contention, resource shortage)."""
