"""The soak in the suite (marker ``soak``, its own stage in scripts/test.sh): one run per
dataplane and iptables backend (iptables-nft, iptables-legacy, nftables), ``SOAK_SECONDS``
long (default 120), seeded by ``SOAK_SEED`` (default random; the summary prints it and the
command that replays the schedule)."""

from __future__ import annotations

import os
import random
import sys

import pytest
from integration.topology import Backend

from soak import driver, report
from soak.dataplane import SUITE, DataplaneName, suite_id

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
SEED = int(os.environ.get("SOAK_SEED") or random.SystemRandom().randrange(2**32))

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 300)]


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize(("plane", "backend"), SUITE, ids=[suite_id(r) for r in SUITE])
def test_soak(plane: DataplaneName, backend: Backend) -> None:
    """Every invariant of the checker holds for a whole run of the seeded schedule."""
    settings = driver.Settings(
        seed=SEED, seconds=SECONDS, backend=backend, dataplane=plane, progress=sys.stderr
    )
    log, verdict, schedule, work = driver.run(settings)
    summary = report.summary(log, verdict, schedule)
    print(summary)
    assert not verdict.violations, f"{summary}\nrun files kept in {work}"
