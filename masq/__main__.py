"""``python -m masq`` runs the agent."""

import signal
import sys


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# Installed before the agent's own imports, so a SIGTERM during start-up (a pod deleted
# while it starts) ends it with exit 0 as it does later, never with the default -15.
signal.signal(signal.SIGTERM, _stop)
try:
    from masq.shell.cli import main
except KeyboardInterrupt:
    sys.exit(0)
sys.exit(main())
