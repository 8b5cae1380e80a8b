"""Running a tool: argv lists through ``sh`` (never a shell string), every outcome captured."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass

import sh

from masq.shell.errors import AgentError, TransientError

_ANY_EXIT = tuple(range(256))
_RESOURCE_ERRNOS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str


Stdin = str | int | None
"""What a command reads: text, a file descriptor (read from where it stands), or nothing."""
Runner = Callable[[list[str], Stdin], Completed]
TIMEOUT_EXIT = 124  # a command killed for running too long (as timeout(1) reports it)


def run_command(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
    """Run argv without a shell or tty, capture everything, never raise on exit codes.

    An ``int`` stdin is a file descriptor the child reads directly (no pipe through
    this process), so what it reads is complete even if this process dies meanwhile.
    ``timeout`` kills a command that runs longer (exit ``TIMEOUT_EXIT``); it is off by
    default because sh polls for it every 100 ms, which would slow every short listing.
    """
    try:
        cmd = sh.Command(argv[0])
    except sh.CommandNotFound:
        raise AgentError(f"{argv[0]}: command not found (is it installed?)") from None
    source = os.fdopen(stdin, "rb", closefd=False) if isinstance(stdin, int) else stdin
    try:
        done = cmd(
            *argv[1:],
            _in=source,
            _ok_code=_ANY_EXIT,
            _tty_out=False,
            _return_cmd=True,
            _timeout=timeout,
        )
    except sh.TimeoutException:
        return Completed(tuple(argv), TIMEOUT_EXIT, "", f"timed out after {timeout:g}s")
    except OSError as e:  # no fd, memory or process slot for the pipes and the fork
        message = f"{argv[0]}: cannot run: {e.strerror or e}"
        raise (TransientError if e.errno in _RESOURCE_ERRNOS else AgentError)(message) from None
    except sh.ForkException as e:  # the exec itself failed; sh's text ends with its OSError
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        reason = lines[-1] if lines else "exec failed"
        raise AgentError(f"{argv[0]}: cannot run: {reason}") from None
    return Completed(
        argv=tuple(argv),
        exit_code=int(done.exit_code),
        stdout=_text(done.stdout),
        stderr=_text(done.stderr),
    )


def _text(data: object) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def which(name: str) -> str | None:
    """The path of an executable on PATH (shutil.which without importing shutil, ~10 ms)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None
