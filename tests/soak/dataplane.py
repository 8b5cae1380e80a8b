"""What differs per dataplane: its faults, the binary a transient failure wraps, the foreign
writer that churns beside the agent, and how the table is read back.

Only iptables exists today.  An nftables dataplane is one more ``Dataplane``: the agent's
``--dataplane=nftables`` flag, ``nft`` as the wrapped binary (a batch that fails
transiently), an nft foreign writer committing its own table every second, and an nft
view for the checker; the schedule, prober, model and kubelet role stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from integration.netns import AGENT_PYTHON, Backend, Topology

from soak.schedule import Fault

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Dataplane:
    name: str
    backend: Backend

    @property
    def faults(self) -> frozenset[Fault]:
        """The faults that exist here (iptables-nft ignores the xtables lock)."""
        faults: set[Fault] = {"kill", "second-agent", "restore-fail"}
        if self.backend == "legacy":
            faults.add("lock")
        return frozenset(faults)

    @property
    def agent_flags(self) -> tuple[str, ...]:
        return ()

    @property
    def wrapped_binary(self) -> str:
        """What the agents run to write; the transient-failure fault stands in for it."""
        return f"iptables-{self.backend}-restore"

    def foreign_writer(self, topo: Topology, seed: int, period: float, log: Path) -> list[str]:
        script = str(HERE / "kubeproxy.py")
        argv = [AGENT_PYTHON, "-S", script, self.backend, str(seed), str(period), str(log)]
        return topo.in_ns(topo.node, argv)

    def read_table(self, topo: Topology) -> str:
        return topo.save(family=4, table="nat")


DATAPLANES = ("iptables",)


def dataplane(name: str, backend: Backend) -> Dataplane:
    if name not in DATAPLANES:
        raise ValueError(f"dataplane {name!r} does not exist yet (known: {', '.join(DATAPLANES)})")
    return Dataplane(name, backend)
