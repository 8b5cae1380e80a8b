"""Running a tool: argv lists through ``sh`` (never a shell string), every outcome captured.

``sh`` is the design's choice for running commands; this module is the one place the
agent uses it, so every caller sees one small contract instead of sh's options:
argv lists only, no tty (``_tty_out=False``), every exit code (and death by signal)
returned rather than raised, a file descriptor as stdin handed to the child as that
file (the nft batch's memfd is never piped), a timeout reported as an exit code, and a
program that cannot be started raised as one line (``AgentError``; ``TransientError``
when a resource ran out).

What sh costs against the standard library's ``subprocess``, measured side by side:
30-50 ms of CPU per ``--once`` (its import pulls in asyncio and importlib.metadata;
its reader threads add a few ms a command).  So it is imported by the first command, not
with the agent: ``--help``, ``--version`` and ``--validate`` run nothing and do not pay
it.  README "Known limits and decisions" has the figures.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from masq.shell.errors import AgentError, TransientError

if TYPE_CHECKING:
    import sh

_RESOURCE_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})
# Every exit status and every death by signal (sh reports those negated) is a result.
_ANY_EXIT = tuple(range(-signal.NSIG, 256))


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    pid: int | None = field(default=None, compare=False)
    """The process's id (None: not started, or a fake): a commit it made is the agent's own."""


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

    An ``int`` stdin is a file descriptor the child reads directly (sh hands it a dup
    of it; no pipe through this process), so what it reads is complete even if this
    process dies meanwhile.  ``None`` gives it an empty stdin, so no command can wait
    for input.  ``timeout`` kills a command that runs longer (exit ``TIMEOUT_EXIT``).
    """
    import sh  # on first use: see the module docstring

    try:
        cmd = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise AgentError(f"{argv[0]}: command not found (is it installed?)") from None
    # A descriptor is wrapped only so sh sees a file; sh passes the child a dup of it.
    source = os.fdopen(stdin, "rb", closefd=False) if isinstance(stdin, int) else stdin or ""
    try:
        running = cmd(
            *argv[1:],
            _in=source,
            _ok_code=_ANY_EXIT,
            _tty_out=False,
            _bg=True,
            _bg_exc=False,
            _return_cmd=True,
        )
    except OSError as e:  # no fd, memory or process slot for the pipes and the fork
        message = f"{argv[0]}: cannot run: {e.strerror or e}"
        raise (TransientError if e.errno in _RESOURCE_ERRNOS else AgentError)(message) from None
    except sh.ForkException as e:  # the exec itself failed; sh's text ends with its OSError
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else "exec failed"
        raise AgentError(f"{argv[0]}: cannot run: {reason}") from None
    pid = int(running.pid)
    if not _finished(running, timeout):
        return Completed(tuple(argv), TIMEOUT_EXIT, "", f"timed out after {timeout:g}s", pid)
    return Completed(
        argv=tuple(argv),
        exit_code=int(running.exit_code),
        stdout=running.stdout.decode("utf-8", "replace"),
        stderr=running.stderr.decode("utf-8", "replace"),
        pid=pid,
    )


def _finished(running: sh.RunningCommand, timeout: float | None) -> bool:
    """Wait for the command; False if it ran past ``timeout`` and was killed.

    Not sh's own ``_timeout``: its watcher polls every 100 ms and is joined when the
    command ends, so every command run with a timeout would last at least 100 ms.
    """
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            running.kill()

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    try:
        running.wait()
    finally:
        if timer is not None:
            timer.cancel()
    return not expired.is_set()


def which(name: str) -> str | None:
    """The path of an executable on PATH (shutil.which without importing shutil, ~10 ms)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
