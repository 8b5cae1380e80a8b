"""The agent under test as a process in the node namespace: one-shot runs and daemons.

Runs the real command line (``python -m masq``) from this checkout, as the kubelet would
run the image's entrypoint, and checks its outcome the way an operator sees it: the exit
code and the one-line error on stderr.  Also writes config directories the way people and
the kubelet do.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from integration.topology import REPO_ROOT, Topology

AGENT_PYTHON = sys.executable


def agent_argv(
    topo: Topology, config_dir: Path | str | None, *flags: str, once: bool = True
) -> list[str]:
    argv = [AGENT_PYTHON, "-m", "masq"]
    if once:
        argv.append("--once")
    if config_dir is not None:
        argv += ["--config-dir", str(config_dir)]
    if not any(flag.startswith("--iptables-backend") for flag in flags):
        argv += ["--iptables-backend", topo.backend]
    if not any(flag.startswith("--metrics-bind-address") for flag in flags):
        argv += ["--metrics-bind-address", "0"]
    return topo.in_ns(topo.node, [*argv, *flags])


def run_agent(
    topo: Topology, config_dir: Path | str | None, *flags: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """One ``--once`` run of the real agent in node; never raises on its exit code."""
    return subprocess.run(
        agent_argv(topo, config_dir, *flags),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=agent_env(),
        check=False,
    )


def background(
    argv: list[str],
    *,
    stdout: IO[str] | int,
    env: Mapping[str, str] | None = None,
    new_session: bool = False,
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.Popen[str]:
    """A process left running, from the checkout: no stdin, stderr into ``stdout`` (a file,
    not a pipe nobody reads, which could fill and block it); ``env`` None inherits ours."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        start_new_session=new_session,
        preexec_fn=preexec_fn,  # noqa: PLW1509  (callers pass it from a single thread)
    )


def start_agent(
    topo: Topology,
    config_dir: Path | str,
    *flags: str,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[str]:
    """The agent as a daemon in node, output to ``log``; ``env`` default ``agent_env()``."""
    with log.open("w") as out:
        argv = agent_argv(topo, config_dir, *flags, once=False)
        return background(argv, stdout=out, env=env if env is not None else agent_env())


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("CI", None)  # the agent must not change behaviour under CI
    return env


def stop_agent(proc: subprocess.Popen[str], timeout: float = 5.0) -> int:
    """SIGTERM, bounded wait, SIGKILL as a last resort; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


@contextlib.contextmanager
def daemon(
    topo: Topology, config_dir: Path, *flags: str, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """A running agent daemon, stopped on the way out whatever happened inside."""
    proc = start_agent(topo, config_dir, *flags, log=log)
    try:
        yield proc
    finally:
        stop_agent(proc)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Poll ``predicate()`` until true; seconds it took, or None after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


def write_config(config_dir: Path, name: str, content: str | bytes) -> Path:
    """Write one config file atomically (``name`` as given: include the prefix yourself)."""
    path = config_dir / name
    tmp = config_dir / f".{name}.tmp"
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)  # atomic, as a config-management tool would
    return path


def configmap_layout(config_dir: Path, files: Mapping[str, str | bytes], stamp: str) -> Path:
    """The kubelet's ConfigMap volume: a timestamped dir, ``..data`` -> it, key -> ..data/key."""
    data = config_dir / f"..{stamp}"
    data.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (data / name).write_bytes(content)  # a broken ConfigMap may hold non-UTF-8 bytes
        else:
            (data / name).write_text(content)
    tmp_link = config_dir / "..data_tmp"
    tmp_link.symlink_to(data.name)
    tmp_link.replace(config_dir / "..data")  # atomic swap, as the kubelet does it
    for name in files:
        link = config_dir / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    return data


def error_lines(stderr: str) -> list[str]:
    """stderr minus the agent's structured log records (``time=... level=...``)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("time=")]


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"agent exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr


def assert_config_error(proc: subprocess.CompletedProcess[str], file_name: str) -> None:
    """Bad config: exit 1, no traceback, one error line (besides log records) naming the file."""
    assert proc.returncode == 1, (
        f"expected exit 1, got {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, f"expected one error line, got {errors!r}"
    assert file_name in errors[0], errors[0]
