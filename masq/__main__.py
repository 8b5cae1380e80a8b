"""``python -m masq`` runs the agent."""

import os
import signal


def _stop(signum: int, frame: object) -> None:
    os._exit(0)


# Installed before the agent's own imports, so a SIGTERM during start-up (a pod deleted
# while it starts) ends it with exit 0 as it does later, never with the default -15.  It
# exits at once: nothing is half written (each write is one transaction in a child).
signal.signal(signal.SIGTERM, _stop)

from masq.shell.cli import main  # noqa: E402 (after the handler, on purpose)

code = main()
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # done: the interpreter's exit keeps the code
raise SystemExit(code)
