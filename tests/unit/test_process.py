"""Running a tool: an argv that cannot be started is one line, and a lack of resources retries."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import sh

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
    # Fails if run_command lets sh's ForkException (a multi-line traceback) escape.
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
    # Fails if an OSError from sh (no fd for the pipes, no process slot) escapes as a
    # traceback, or if running out of a resource is not retried.
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(sh, "Command", lambda name: refuse)
    with pytest.raises(AgentError, match="cannot run") as raised:
        process.run_command(["iptables-nft", "-S"])
    assert isinstance(raised.value, TransientError) is transient
