"""Two agents on one node (an old pod still running during a rolling update) both react to
every ConfigMap change, for the whole run.  The soak once found them racing: each planned
positional iptables edits from its own listing, and the second write landed on the chain
the first had just changed, leaving for ~30 ms a chain that was no config at all (probes to
masqueraded destinations left with the pod's address; first seen in ``python -m tests.soak
--seed 1001 --seconds 120 --backend legacy``).  Agents now serialise observe-plan-write
with a lock.  Every probe must match a config in play, as in any soak run.
"""

from __future__ import annotations

import pytest
from integration import netns

from soak import driver, report

SECONDS = 15.0
SEED = 1

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 300)]


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize("backend", netns.BACKENDS)
def test_two_agents_racing_never_expose_a_chain_that_is_no_config(
    backend: netns.Backend,
) -> None:
    settings = driver.Settings(SEED, SECONDS, backend, scenario="rolling-update")
    log, verdict, schedule, work = driver.run(settings)
    summary = report.summary(log, verdict, schedule)
    print(summary)
    assert not verdict.violations, f"{summary}\nrun files kept in {work}"
