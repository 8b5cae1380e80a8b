"""Two agents on one node (an old pod still running during a rolling update) both react to
every ConfigMap change, for the whole run.  The soak once found them racing: each planned
positional iptables edits from its own listing, and the second write landed on the chain
the first had just changed, leaving for ~30 ms a chain that was no config at all (probes to
masqueraded destinations left with the pod's address; first seen in ``python -m tests.soak
--seed 1001 --seconds 120 --backend legacy``).  Agents now serialise observe-plan-write
with a lock; in nftables mode each batch is planned from a listing and refused whole if
the table moved.  Every probe must match a config in play, as in any soak run.  One run
per dataplane (the lock does not depend on the iptables backend; legacy is where the race
was found): 15 s on legacy catch the race in the agent before the fix (0c3e925).
"""

from __future__ import annotations

import pytest
from integration.topology import Backend

from soak import driver, report
from soak.dataplane import DataplaneName, suite_id

SECONDS = 15.0
SEED = 1
RUNS: tuple[tuple[DataplaneName, Backend], ...] = (
    ("iptables", "legacy"),
    ("nftables", "nft"),
)

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 300)]


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize(("plane", "backend"), RUNS, ids=[suite_id(r) for r in RUNS])
def test_two_agents_racing_never_expose_a_state_that_is_no_config(
    plane: DataplaneName, backend: Backend
) -> None:
    settings = driver.Settings(SEED, SECONDS, backend, plane, scenario="rolling-update")
    log, verdict, schedule, work = driver.run(settings)
    summary = report.summary(log, verdict, schedule)
    print(summary)
    assert not verdict.violations, f"{summary}\nrun files kept in {work}"
