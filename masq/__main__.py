"""``python -m masq`` runs the agent."""

from masq.shell.sigterm import exit_on_sigterm

exit_on_sigterm()  # before the agent's own imports, on purpose (see masq.shell.sigterm)

from masq.shell.cli import main  # noqa: E402

raise SystemExit(main())
