"""Running a tool: every outcome captured; an argv that cannot be started is one line, and a lack
of resources retries."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masq.shell import process
from masq.shell.errors import AgentError, TransientError


def test_missing_program_is_one_line_agent_error() -> None:
    with pytest.raises(AgentError) as raised:
        process.run_command(["ip-masq-agent-test-no-such-program", "-S"])
    assert str(raised.value) == (
        "ip-masq-agent-test-no-such-program: command not found (is it installed?)"
    )
    assert not isinstance(raised.value, TransientError)


def test_exec_failure_is_one_line_agent_error(tmp_path: Path) -> None:
    # Fails if the exec failure (an OSError raised in this process) escapes as a traceback.
    binary = tmp_path / "not-a-program"
    binary.write_bytes(b"\x7fELF garbage")
    binary.chmod(0o755)
    with pytest.raises(AgentError) as raised:
        process.run_command([str(binary)])
    assert not isinstance(raised.value, TransientError)
    assert "\n" not in str(raised.value)
    assert "Exec format error" in str(raised.value)


@pytest.mark.parametrize(
    ("call", "code", "transient"),
    [("fork", errno.EAGAIN, True), ("pipe", errno.EMFILE, True), ("fork", errno.EACCES, False)],
)
def test_os_error_starting_a_command_is_agent_error(
    monkeypatch: pytest.MonkeyPatch, call: str, code: int, transient: bool
) -> None:
    # Fails if an OSError while starting a command (no process slot for the fork, no fd for
    # the pipes) escapes as a traceback, or if running out of a resource is not retried.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    process.run_command(["true"])  # sh is imported before os is patched under it
    monkeypatch.setattr(os, call, refuse)
    with pytest.raises(AgentError) as raised:
        process.run_command(["true"])
    assert str(raised.value) == f"true: cannot run: {os.strerror(code)}"
    assert isinstance(raised.value, TransientError) is transient


def test_exit_code_and_both_streams_come_back_whatever_the_code() -> None:
    done = process.run_command(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done == process.Completed(
        ("sh", "-c", "echo out; echo err >&2; exit 3"), 3, "out\n", "err\n"
    )


@pytest.mark.parametrize("code", [0, 1, 2, 4, 255])
def test_every_exit_status_is_returned_not_raised(code: int) -> None:
    assert process.run_command(["sh", "-c", f"exit {code}"]).exit_code == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_death_by_signal_is_returned_as_the_negated_signal(sig: signal.Signals) -> None:
    # Fails if sh's exception for a command killed by a signal escapes.
    done = process.run_command(["sh", "-c", f"kill -{int(sig)} $$"])
    assert done.exit_code == -sig


def test_output_that_is_not_utf8_is_replaced_not_raised() -> None:
    done = process.run_command(["printf", "\\377ok"])
    assert done.stdout == "\ufffdok"


def test_no_tty_is_given_to_the_command() -> None:
    # Fails without _tty_out=False: sh's default gives the child a pseudo-terminal.
    done = process.run_command(["sh", "-c", "test -t 1 || echo not-a-tty"])
    assert done.stdout == "not-a-tty\n"


def test_arguments_are_never_read_by_a_shell() -> None:
    assert process.run_command(["echo", "$HOME;", "*", "|"]).stdout == "$HOME; * |\n"


def test_text_stdin_is_what_the_command_reads() -> None:
    assert process.run_command(["cat"], "*nat\nCOMMIT\n").stdout == "*nat\nCOMMIT\n"


def test_no_stdin_is_an_empty_one_so_nothing_waits_for_input() -> None:
    # Fails if the child inherits this process's stdin or an open pipe: cat would wait on it.
    done = process.run_command(["cat"], None, timeout=10)
    assert (done.exit_code, done.stdout) == (0, "")


def test_empty_text_stdin_is_an_empty_input() -> None:
    done = process.run_command(["wc", "-c"], "", timeout=10)
    assert (done.exit_code, done.stdout.strip()) == (0, "0")


def test_an_fd_stdin_is_read_from_where_it_stands(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"skip\nread this\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, len(b"skip\n"), os.SEEK_SET)
        assert process.run_command(["cat"], fd).stdout == "read this\n"
        os.fstat(fd)  # still open: the caller owns it
    finally:
        os.close(fd)


def test_an_fd_stdin_reaches_the_command_as_that_file_not_a_pipe() -> None:
    # The nft batch is a memfd that nft must read whole: fails if sh pipes it through
    # this process (the child's stdin would be a FIFO).
    fd = os.memfd_create("test-batch")
    try:
        os.write(fd, b"table\n" * 20_000)
        os.lseek(fd, 0, os.SEEK_SET)
        done = process.run_command(["sh", "-c", "test -p /dev/stdin || wc -c"], fd)
        assert done.stdout.strip() == str(len(b"table\n" * 20_000))
    finally:
        os.close(fd)


def test_a_command_over_its_timeout_is_killed_and_reported() -> None:
    start = time.monotonic()
    done = process.run_command(["sleep", "30"], timeout=0.2)
    assert done.exit_code == process.TIMEOUT_EXIT
    assert done.stderr == "timed out after 0.2s"
    assert time.monotonic() - start < 20


def test_a_command_within_its_timeout_is_not_held_back_by_it() -> None:
    # Fails with sh's own _timeout, whose watcher thread makes every command last 100 ms.
    def seconds() -> float:
        start = time.monotonic()
        assert process.run_command(["true"], timeout=5).exit_code == 0
        return time.monotonic() - start

    assert min(seconds() for _ in range(3)) < 0.09


def test_sh_is_imported_by_the_first_command_not_with_the_agent() -> None:
    # Commands that run nothing (--help, --validate) must not pay sh's import; fails if
    # process.py imports sh at module level.  A fresh interpreter starts with clean modules.
    code = (
        "import sys\n"
        "import masq.shell.cli\n"
        "from masq.shell.process import run_command\n"
        "before = 'sh' in sys.modules\n"
        "run_command(['true'])\n"
        "print(before, 'sh' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "True"]
