"""What differs per dataplane: its faults, the binary a transient failure wraps, the foreign
writers that churn beside the agent, and how the node's tables are read back.

``iptables`` (backends nft and legacy): the agent's chain in the nat table; the wrapped
binary is ``iptables-<backend>-restore``; a kube-proxy-like writer churns its own nat
chains (``kubeproxy.py``); a snapshot is ``iptables-save -t nat``.

``nftables``: the agent's own table ``ip ip-masq-agent``; the wrapped binary is ``nft``
(only its batches, ``nft -f``, fail); two foreign writers: kube-proxy's nftables mode
committing its own table every second (``kubeproxy_nft.py``) and the iptables one above
(kube-proxy's nat chains in the chosen iptables backend, which the agent must leave alone
while it removes its own chain there); a snapshot is ``iptables-save -t nat`` and
``nft list ruleset``.  No xtables lock fault: nft does not take that lock.  A foreign
``nft`` tampers with the agent's table (an element deleted, a set or the chain flushed, a
rule or the table deleted), which the agent repairs from the notifications it watches.
The schedule, prober, model and kubelet role are the same for every dataplane.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from integration.agent import AGENT_PYTHON
from integration.topology import Backend, Topology, run

from soak.events import WriterName
from soak.model import NFT_TABLE
from soak.nft_view import strip_counters
from soak.schedule import Fault

HERE = Path(__file__).resolve().parent
DataplaneName = Literal["iptables", "nftables"]
DATAPLANES: tuple[DataplaneName, ...] = ("iptables", "nftables")
WrapperStyle = Literal["iptables", "nft"]


@dataclass(frozen=True, slots=True)
class Writer:
    """One foreign writer: its process and the log of generations it keeps."""

    name: WriterName
    argv: tuple[str, ...]
    log: Path


@dataclass(frozen=True, slots=True)
class Dataplane:
    name: DataplaneName
    backend: Backend

    @property
    def faults(self) -> frozenset[Fault]:
        """The faults that exist here (only iptables-legacy takes the xtables lock; only the
        nftables dataplane is repaired from notifications, so only its table is tampered
        with)."""
        faults: set[Fault] = {"kill", "second-agent", "restore-fail"}
        if self.name == "iptables" and self.backend == "legacy":
            faults.add("lock")
        if self.name == "nftables":
            faults.add("tamper")
        return frozenset(faults)

    @property
    def agent_flags(self) -> tuple[str, ...]:
        return ("--dataplane=nftables",) if self.name == "nftables" else ()

    @property
    def wrapped_binary(self) -> str:
        """What the agents run to write; the transient-failure fault stands in for it."""
        return "nft" if self.name == "nftables" else f"iptables-{self.backend}-restore"

    @property
    def wrapper_style(self) -> WrapperStyle:
        return "nft" if self.name == "nftables" else "iptables"

    def is_write(self, argv: list[bytes]) -> bool:
        """Whether a process with this command line is one of the agent's writes."""
        if self.name == "nftables":
            nft = bool(argv) and argv[0].endswith(b"nft")
            return (nft or b"restore-wrapper" in argv) and b"-f" in argv
        return any(b"restore" in a for a in argv)

    def foreign_writers(
        self, topo: Topology, seed: int, period: float, work: Path
    ) -> tuple[Writer, ...]:
        iptables = [str(HERE / "kubeproxy.py"), self.backend, str(seed), str(period)]
        log = work / "foreign.log"
        writers = [Writer("iptables", self._in_node(topo, iptables, log), log)]
        if self.name == "nftables":
            nft = [str(HERE / "kubeproxy_nft.py"), str(seed), str(period)]
            nft_log = work / "foreign-nft.log"
            writers.append(Writer("nft", self._in_node(topo, nft, nft_log), nft_log))
        return tuple(writers)

    @staticmethod
    def _in_node(topo: Topology, script: list[str], log: Path) -> tuple[str, ...]:
        return tuple(topo.in_ns(topo.node, [AGENT_PYTHON, "-S", *script, str(log)]))

    def read_tables(self, topo: Topology) -> tuple[str, str]:
        """The nat table as ``iptables-save`` prints it, and (nftables only) the whole
        ruleset as ``nft list ruleset`` prints it ("" for iptables)."""
        nat = topo.save(family=4, table="nat")
        if self.name != "nftables":
            return nat, ""
        return nat, _stable_ruleset(topo)

    def tamper(self, topo: Topology, kind: str) -> tuple[int, str]:
        """A foreign ``nft`` changes the agent's table (nftables only): ``kind`` is one of
        ``schedule.TAMPERS``.  (nft's exit code, the command); a change that found nothing
        to change (no element, no rule, no table) fails and changes nothing."""
        family, table = NFT_TABLE
        nft = topo.in_ns(topo.node, ["nft"])
        command: list[str]
        if kind == "element":
            sets = ("non-masquerade-v4", "masquerade-v4")
            found = [(name, e) for name in sets for e in _elements(topo, family, table, name)]
            name, element = found[0] if found else (sets[0], "255.255.255.255")
            command = ["delete", "element", family, table, name, f"{{ {element} }}"]
        elif kind == "set-flush":
            command = ["flush", "set", family, table, "non-masquerade-v4"]
        elif kind == "chain-flush":
            command = ["flush", "chain", family, table, "postrouting"]
        elif kind == "rule":
            listed = run([*nft, "-a", "list", "chain", family, table, "postrouting"], check=False)
            handles = re.findall(r"# handle (\d+)$", listed.stdout, flags=re.MULTILINE)
            command = ["delete", "rule", family, table, "postrouting", "handle"]
            command.append(handles[-1] if handles else "0")
        else:
            command = ["delete", "table", family, table]
        done = run([*nft, *command], check=False, timeout=10)
        return done.returncode, " ".join(command)


def _elements(topo: Topology, family: str, table: str, name: str) -> list[str]:
    """The elements of one set of the agent's table, as nft prints them ([] if none)."""
    argv = topo.in_ns(topo.node, ["nft", "-j", "list", "set", family, table, name])
    listed = run(argv, check=False, timeout=10)
    if listed.returncode != 0:
        return []
    out = []
    for item in json.loads(listed.stdout)["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, dict) and "prefix" in value:
                out.append(f"{value['prefix']['addr']}/{value['prefix']['len']}")
    return out


LISTING_TRIES = 5


def _stable_ruleset(topo: Topology) -> str:
    """``nft list ruleset``, read until two reads in a row agree (counters aside).

    nft 1.0.6 dumps the ruleset over several netlink messages without checking that no
    commit came in between, so a listing taken while a writer flushes and refills a
    chain can show the chain's old rules and its new ones together (seen in this soak).
    A state two reads in a row agree on is one the kernel held; after LISTING_TRIES
    disagreeing pairs the last read is returned (and judged as it is).
    """
    argv = topo.in_ns(topo.node, ["nft", "list", "ruleset"])
    last = run(argv).stdout
    for _ in range(LISTING_TRIES):
        now = run(argv).stdout
        if strip_counters(now) == strip_counters(last):
            return now
        last = now
    return last


SUITE: tuple[tuple[DataplaneName, Backend], ...] = (
    ("iptables", "nft"),
    ("iptables", "legacy"),
    ("nftables", "nft"),
)
"""The runs the suite makes: each iptables backend, and nftables beside iptables-nft (the
backend kube-proxy's iptables mode uses on a node that also has nftables)."""


def suite_id(run: tuple[DataplaneName, Backend]) -> str:
    return run[0] if run[0] == "nftables" else f"{run[0]}-{run[1]}"


def dataplane(name: str, backend: Backend) -> Dataplane:
    if name == "iptables":
        return Dataplane("iptables", backend)
    if name == "nftables":
        return Dataplane("nftables", backend)
    raise ValueError(f"dataplane {name!r} does not exist (known: {', '.join(DATAPLANES)})")
