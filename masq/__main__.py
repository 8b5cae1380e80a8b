"""``python -m masq`` runs the agent."""

from masq.shell.cli import main

raise SystemExit(main())
