"""SIGTERM until the daemon installs its own handler: exit 0 at once, from the first instant.

The one place the start-up handler is defined and installed: ``python -m masq`` installs
it before the agent's own imports (a pod deleted while the agent starts ends with 0, never
the default -15), and ``cli.main`` for the console script.  It exits at once: nothing is
half written (each write is one transaction in a child process), and raising instead
would race with the interpreter's exit (a -2 or a traceback).  This module imports
nothing of the agent, so installing it costs nothing.
"""

from __future__ import annotations

import os
import signal


def _stop(signum: int, frame: object) -> None:
    os._exit(0)  # EXIT_OK (masq.shell.errors, not imported: see the module docstring)


def exit_on_sigterm() -> None:
    """From now on SIGTERM ends the process with 0 at once."""
    signal.signal(signal.SIGTERM, _stop)


def ignore_sigterm() -> None:
    """The run is over: the interpreter's exit keeps the code the run returned."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
