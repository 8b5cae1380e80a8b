"""The soak runs need root and ``ip netns``: outside CI they skip with the reason; under
``CI=true`` they fail instead, so a runner that cannot run them cannot pass by skipping."""

from __future__ import annotations

import os

import pytest
from integration import topology


@pytest.fixture
def namespaces() -> None:
    problem = topology.environment_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but the soak cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    topology.sweep_stale_namespaces()
