"""Exceptions of the imperative shell: each carries the one line the user sees."""

from __future__ import annotations

PROG = "ip-masq-agent"
"""Prefix of every line the agent prints about a failure."""
EXIT_OK = 0
EXIT_INVALID = 1  # bad config, failed apply, any AgentError
EXIT_USAGE = 2  # bad command line


class AgentError(Exception):
    """Fatal for this run: print ``ip-masq-agent: <message>`` and exit 1, no traceback."""


class TransientError(AgentError):
    """Worth retrying with backoff (xtables lock contention, resource shortage)."""
