"""The soak runs need root and ``ip netns``: outside CI they skip with the reason; under
``CI=true`` they fail instead, so a runner that cannot run them cannot pass by skipping."""

from __future__ import annotations

import pytest
from ci import cannot_run
from integration import topology


@pytest.fixture
def namespaces() -> None:
    problem = topology.environment_problem()
    if problem is not None:
        cannot_run(f"the soak: {problem}")
    topology.sweep_stale_namespaces()
