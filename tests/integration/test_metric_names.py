"""Every metric the Grafana dashboard and the alerting rules read is one a real agent exposes.

The names come from parsing their PromQL (tests/monitoring.py); the exposed names from
scraping /metrics of the agent daemon running in this harness's node namespace, as series
names (``_total``, ``_bucket``, ``_sum``, ``_count`` included), so a query of a name the
agent does not export, or of a family name without its suffix, fails here. Prometheus's
own ``up`` is not the agent's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from monitoring import PROMETHEUS_OWN, exposed_names, names_used

from integration.agent import daemon, wait_for, write_config
from integration.packets import http_get
from integration.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PORT = 9931  # inside the node namespace only

# The agent's dataplanes, each with the flags that select it: a new dataplane (nftables) is
# one more line here, and the dashboard and rules must then hold for it too.
DATAPLANES: dict[str, tuple[str, ...]] = {
    "iptables": (),
    "nftables": ("--dataplane=nftables",),
}


@pytest.mark.parametrize("dataplane", sorted(DATAPLANES))
def test_dashboard_and_alerts_read_only_metrics_the_agent_exposes(
    dataplane: str, nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    wanted = {n: sorted(where) for n, where in names_used().items() if n not in PROMETHEUS_OWN}
    assert "ip_masq_agent_syncs_total" in wanted and "up" in names_used()
    topo = nft_topo
    write_config(config_dir, "ip-masq-agent", "masqueradeCIDRs: [198.51.100.0/24]\n")
    log = tmp_path / "agent.log"
    flags = (f"--metrics-bind-address=127.0.0.1:{PORT}", "--resync-interval=1")
    exposed: set[str] = set()
    with daemon(topo, config_dir, *flags, *DATAPLANES[dataplane], log=log) as proc:

        def scraped_all() -> bool:
            # Rule writes appear with the first write, the per-rule counters once a sync
            # has listed the chain it created: poll until every name is there.
            nonlocal exposed
            status, body = http_get(topo, f"http://127.0.0.1:{PORT}/metrics")
            if status == 200:
                exposed = exposed_names(body)
            return proc.poll() is not None or set(wanted) <= exposed

        wait_for(scraped_all, 20, 0.2)
        assert proc.poll() is None, log.read_text()
    assert exposed, log.read_text()
    missing = {name: where for name, where in wanted.items() if name not in exposed}
    assert not missing, f"read by the dashboard or rules but not exposed: {missing}"
