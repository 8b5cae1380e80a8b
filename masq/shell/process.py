"""Running a tool: argv lists through ``subprocess`` (never a shell string), every outcome captured.

Not the ``sh`` package DESIGN.md names: importing it costs ``--once`` about 40 ms
(asyncio, importlib.metadata) and each command about 5 ms of thread set-up, a third of
the operations issue's 0.15 s budget for ``--once`` on an unchanged table.  The standard
library's ``subprocess`` keeps what mattered in that choice (argv lists, no shell, no
tty, every exit code returned) and needs no threads.  README "Known limits and
decisions" has the figures.
"""

from __future__ import annotations

import errno
import os
import subprocess
from dataclasses import dataclass
from typing import Protocol

from masq.shell.errors import AgentError, TransientError

_RESOURCE_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


Stdin = str | int | None
"""What a command reads: text, a file descriptor (read from where it stands), or nothing."""


class Runner(Protocol):
    """How a command is run: ``run_command``, or a fake that can play any outcome,
    a timeout included (``timeout`` None: no limit)."""

    def __call__(
        self, argv: list[str], stdin: Stdin = None, timeout: float | None = None
    ) -> Completed: ...


TIMEOUT_EXIT = 124  # a command killed for running too long (as timeout(1) reports it)


def run_command(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
    """Run argv without a shell or tty, capture everything, never raise on exit codes.

    An ``int`` stdin is a file descriptor the child reads directly (no pipe through
    this process), so what it reads is complete even if this process dies meanwhile.
    ``None`` gives it an empty stdin, so no command can wait for input.  ``timeout``
    kills a command that runs longer (exit ``TIMEOUT_EXIT``).
    """
    text = stdin.encode() if isinstance(stdin, str) else None
    source = stdin if isinstance(stdin, int) else None if text is not None else subprocess.DEVNULL
    try:
        done = subprocess.run(
            argv, stdin=source, input=text, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:  # run() has killed and reaped it
        return Completed(tuple(argv), TIMEOUT_EXIT, "", f"timed out after {timeout:g}s")
    except FileNotFoundError:
        raise AgentError(f"{argv[0]}: command not found (is it installed?)") from None
    except OSError as e:  # no fd, memory or process slot; or the exec itself failed
        message = f"{argv[0]}: cannot run: {e.strerror or e}"
        raise (TransientError if e.errno in _RESOURCE_ERRNOS else AgentError)(message) from None
    return Completed(
        argv=tuple(argv),
        exit_code=done.returncode,
        stdout=done.stdout.decode("utf-8", "replace"),
        stderr=done.stderr.decode("utf-8", "replace"),
    )


def which(name: str) -> str | None:
    """The path of an executable on PATH (shutil.which without importing shutil, ~10 ms)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
