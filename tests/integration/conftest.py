"""Fixtures for the real-network tests: a fresh pod -> node -> dest topology per test.

Outside CI the directory skips cleanly (with the reason) when it cannot run here; under
``CI=true`` it fails instead, so a CI runner without root or ``ip netns`` cannot pass with
zero integration tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ci import cannot_run

from integration import planes
from integration.planes import Plane
from integration.topology import (
    BACKENDS,
    REPO_ROOT,
    Backend,
    Topology,
    environment_problem,
    sweep_stale_namespaces,
    topology,
)


@pytest.fixture(scope="session", autouse=True)
def _integration_environment() -> None:
    problem = environment_problem()
    if problem is not None:
        cannot_run(f"integration tests: {problem}")
    sweep_stale_namespaces()


def _topology(backend: Backend) -> Iterator[Topology]:
    with topology(backend) as topo:
        yield topo


@pytest.fixture(params=BACKENDS)
def topo(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """A fresh topology, once per iptables backend (nft and legacy)."""
    yield from _topology(request.param)


@pytest.fixture
def nft_topo() -> Iterator[Topology]:
    """A fresh topology for tests whose subject does not depend on the backend."""
    yield from _topology("nft")


@pytest.fixture(params=planes.PLANE_IDS)
def plane(request: pytest.FixtureRequest) -> Iterator[Plane]:
    """A fresh topology with each dataplane, the iptables one on its nft backend (a test
    marked ``planes.EACH_BACKEND`` gets the legacy backend too)."""
    for topo in _topology(planes.backend_of(request.param)):
        yield planes.make(request.param, topo)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


LATENCY_FILE = REPO_ROOT / "benchmarks" / "results" / "integration-latency.txt"


@pytest.fixture(scope="session")
def latency_record() -> Iterator[list[str]]:
    """Daemon latencies measured by the tests, written out once at the end of the session.

    A figure, not a pass/fail threshold: the tests only require a generous bound.
    """
    lines: list[str] = []
    yield lines
    if lines:
        LATENCY_FILE.parent.mkdir(parents=True, exist_ok=True)
        header = (
            "# config-change-to-rule-in-kernel latency of the daemon (inotify), measured by\n"
            "# tests/integration/test_daemon.py; polling granularity about 20-30 ms\n"
        )
        LATENCY_FILE.write_text(header + "".join(f"{line}\n" for line in lines))
