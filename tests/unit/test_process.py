"""Running a tool: every outcome captured; an argv that cannot be started is one line, and a lack
of resources retries."""

from __future__ import annotations

import errno
import os
import subprocess
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


@pytest.mark.parametrize(("code", "transient"), [(errno.EMFILE, True), (errno.EACCES, False)])
def test_os_error_starting_a_command_is_agent_error(
    monkeypatch: pytest.MonkeyPatch, code: int, transient: bool
) -> None:
    # Fails if an OSError from subprocess (no fd for the pipes, no process slot) escapes as a
    # traceback, or if running out of a resource is not retried.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(subprocess, "Popen", refuse)
    with pytest.raises(AgentError, match="cannot run") as raised:
        process.run_command(["iptables-nft", "-S"])
    assert isinstance(raised.value, TransientError) is transient


def test_exit_code_and_both_streams_come_back_whatever_the_code() -> None:
    done = process.run_command(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done == process.Completed(
        ("sh", "-c", "echo out; echo err >&2; exit 3"), 3, "out\n", "err\n"
    )


def test_text_stdin_is_what_the_command_reads() -> None:
    assert process.run_command(["cat"], "*nat\nCOMMIT\n").stdout == "*nat\nCOMMIT\n"


def test_no_stdin_is_an_empty_one_so_nothing_waits_for_input() -> None:
    # Fails if the child inherits this process's stdin: cat would wait on it.
    assert process.run_command(["cat"], None, timeout=10).stdout == ""


def test_an_fd_stdin_is_read_from_where_it_stands(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_bytes(b"skip\nread this\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.lseek(fd, len(b"skip\n"), os.SEEK_SET)
        assert process.run_command(["cat"], fd).stdout == "read this\n"
    finally:
        os.close(fd)


def test_a_command_over_its_timeout_is_killed_and_reported() -> None:
    start = time.monotonic()
    done = process.run_command(["sleep", "30"], timeout=0.2)
    assert done.exit_code == process.TIMEOUT_EXIT
    assert done.stderr == "timed out after 0.2s"
    assert time.monotonic() - start < 20
