"""Logging setup: key=value or JSON lines, klog-style verbosity.

Convention for every caller: ``log.info("event text", extra={"kv": {"key": value}})``;
the formatter renders ``kv`` as ``key=value`` pairs (or JSON fields).
"""

from __future__ import annotations

import logging

from masq.shell.options import LogFormat

LOG = logging.getLogger("masq")


def setup(verbosity: int = 0, fmt: LogFormat = "text") -> None:
    """Placeholder until the observability work lands: plain stderr logging."""
    logging.basicConfig(level=logging.DEBUG if verbosity >= 2 else logging.INFO)
