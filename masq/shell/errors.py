"""Every exception the shell raises on purpose, each with the exit code it ends the run with.

A ``ShellError`` reaching ``cli.run`` becomes ``ip-masq-agent: <message>`` on stderr
and its ``exit_code``: one line, never a traceback.  Anything else escaping is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from returns.result import Failure, Result

from masq.core.errors import ConfigError

_T = TypeVar("_T")
_E = TypeVar("_E")

PROG = "ip-masq-agent"
"""Prefix of every line the agent prints about a failure."""
EXIT_OK = 0
EXIT_FAILURE = 1  # bad config, failed apply: the rules last applied stay
EXIT_USAGE = 2  # bad command line, or an --explain address that is not one


class ShellError(Exception):
    """Base of the hierarchy; ``str()`` is the one line the user sees."""

    exit_code = EXIT_FAILURE


class AgentError(ShellError):
    """Fatal for this run (exit 1): the kernel refused, a tool is missing, output failed."""


class ConfigInvalid(AgentError):
    """A config file (or the merge of them) is invalid: exit 1, the kernel untouched."""

    def __init__(self, error: ConfigError) -> None:
        super().__init__(str(error))
        self.error = error


class TransientError(AgentError):
    """Worth retrying with backoff (xtables lock contention, a busy kernel); fatal after
    too many in a row."""


class ServerError(AgentError):
    """The HTTP endpoint cannot be served (bad address, port taken)."""


class UsageError(ShellError):
    """A bad command line: one line and exit 2, like Go's flag package."""

    exit_code = EXIT_USAGE


def value_or_raise(result: Result[_T, _E], error: Callable[[_E], ShellError]) -> _T:
    """The value of a ``Result`` from the core, or its failure raised as ``error(failure)``.

    The shell's one way to read a ``Result``: where a failure ends what the shell was
    doing, the exception type says how (``ConfigInvalid``: exit 1, ``UsageError``:
    exit 2); ``map``/``bind``/``alt`` stay for building a Result, never for reading one.
    """
    if isinstance(result, Failure):
        raise error(result.failure())
    return result.unwrap()
