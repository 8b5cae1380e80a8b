"""The agent's two dataplanes as a test sees them, so that a scenario is written once for both:
the flags that choose one, what it holds in node's kernel, what it must hold for a config, and
the log line that says a sync wrote.

``plane`` (conftest) gives each dataplane once, iptables on its nft backend; a test marked
``@EACH_BACKEND`` also runs iptables on the legacy backend.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from integration import nft
from integration.agent import run_agent
from integration.expected import DEFAULT_CHAIN, FAMILIES, Family, expected_rules, jump_rule
from integration.nft import Listing
from integration.topology import Backend, Topology

PLANE_IDS = ("iptables-nft", "nftables")
EACH_BACKEND = pytest.mark.parametrize(
    "plane", ["iptables-nft", "iptables-legacy", "nftables"], indirect=True
)
"""Mark a test to run on every dataplane, the iptables one on both of its backends."""


def backend_of(plane_id: str) -> Backend:
    """The iptables backend of node for a plane id (nftables mode runs on an nft node)."""
    return "legacy" if plane_id == "iptables-legacy" else "nft"


def kernel_snapshot(topo: Topology) -> tuple[str, ...]:
    """Everything node's kernel holds, counters and nft handles included: equal before and
    after a run means the run wrote nothing."""
    return (*topo.snapshot(), nft.ruleset(topo))


@dataclass(frozen=True)
class Want:
    """A config as the expected listings need it (CIDRs of both families in one list)."""

    non_masquerade: tuple[str, ...]
    masquerade: tuple[str, ...]
    ipv6: bool
    keep_link_local: bool
    keep_link_local6: bool
    random_fully: bool
    chain: str


@dataclass(frozen=True)
class Plane:
    """One dataplane in one topology."""

    topo: Topology
    flags: ClassVar[tuple[str, ...]]
    write_messages: ClassVar[tuple[str, ...]]  # the agent's log lines for a sync that wrote

    def run_agent(
        self, config_dir: Path | str | None, *flags: str
    ) -> subprocess.CompletedProcess[str]:
        return run_agent(self.topo, config_dir, *self.flags, *flags)

    def wrote(self, proc: subprocess.CompletedProcess[str]) -> bool:
        return any(message in proc.stderr for message in self.write_messages)

    def installed(self, chain: str = DEFAULT_CHAIN) -> Listing:
        """What the agent holds in the kernel, by place; {} when it holds nothing."""
        raise NotImplementedError

    def expected(
        self,
        non_masquerade: Iterable[str],
        masquerade: Iterable[str] = (),
        *,
        ipv6: bool = False,
        keep_link_local: bool = True,
        keep_link_local6: bool = True,
        random_fully: bool = True,
        chain: str = DEFAULT_CHAIN,
    ) -> Listing:
        """What ``installed`` must read for this config."""
        want = Want(
            tuple(non_masquerade),
            tuple(masquerade),
            ipv6,
            keep_link_local,
            keep_link_local6,
            random_fully,
            chain,
        )
        return self._expected(want)

    def _expected(self, want: Want) -> Listing:
        raise NotImplementedError

    def masquerades_to(self, protocol: str, ports: str) -> bool:
        """Whether a rule masquerades ``protocol`` to the source ports ``ports`` (--to-ports)."""
        raise NotImplementedError


class IptablesPlane(Plane):
    """Our nat chain and its POSTROUTING jump (the default: no flag chooses it)."""

    flags = ()
    write_messages = ("rules updated", "chain replaced")

    def installed(self, chain: str = DEFAULT_CHAIN) -> Listing:
        found = {
            f"ipv{family}": self.topo.jumps_to(chain, family=family)
            + self.topo.rules(chain, family=family)
            for family in FAMILIES
        }
        return {place: lines for place, lines in found.items() if lines}

    def _expected(self, want: Want) -> Listing:
        families: tuple[tuple[Family, bool], ...] = (
            (4, want.keep_link_local),
            (6, want.keep_link_local6),
        )
        return {
            f"ipv{family}": [
                jump_rule(want.chain),
                *expected_rules(
                    want.non_masquerade,
                    want.masquerade,
                    chain=want.chain,
                    family=family,
                    keep_link_local=keep_link_local,
                    random_fully=want.random_fully,
                ),
            ]
            for family, keep_link_local in families[: 2 if want.ipv6 else 1]
        }

    def masquerades_to(self, protocol: str, ports: str) -> bool:
        return any(
            f"-p {protocol}" in rule and f"--to-ports {ports}" in rule for rule in self.topo.rules()
        )


class NftablesPlane(Plane):
    """The agent's one nft table (``--dataplane=nftables``)."""

    flags = nft.NFTABLES
    write_messages = ("table updated", "table replaced")

    def installed(self, chain: str = DEFAULT_CHAIN) -> Listing:
        return nft.installed(self.topo)

    def _expected(self, want: Want) -> Listing:
        """Written from the shape the dataplane promises (one table, ``inet`` only with IPv6;
        interval sets with counters; the base chain at ``srcnat + 10`` deciding in the
        iptables chain's order; ``snat-to-node``), never from the agent's code."""
        family = "inet" if want.ipv6 else "ip"
        versions = (4, 6) if want.ipv6 else (4,)
        payload = {4: "ip", 6: "ip6"}
        link_local = {4: "169.254.0.0/16", 6: "fe80::/10"}
        keep = {4: want.keep_link_local, 6: want.keep_link_local6}
        out: Listing = {}
        for kind, cidrs in (
            ("masquerade", want.masquerade),
            ("non-masquerade", want.non_masquerade),
        ):
            for v in versions:
                lines = [f"type ipv{v}_addr", "flags interval", "counter"]
                mine = [nft.element(c) for c in nft.uncovered(cidrs) if (":" in c) == (v == 6)]
                if mine:
                    lines.append(f"elements = {{ {', '.join(mine)} }}")
                out[f"{family} set {kind}-v{v}"] = lines
        chain = ["type nat hook postrouting priority srcnat + 10; policy accept;"]
        chain.append("fib daddr type local return")
        chain += [
            f"{payload[v]} daddr @masquerade-v{v} counter jump snat-to-node" for v in versions
        ]
        chain += [f"{payload[v]} daddr {link_local[v]} counter return" for v in versions if keep[v]]
        chain += [f"{payload[v]} daddr @non-masquerade-v{v} counter return" for v in versions]
        if want.ipv6:
            chain += [f"meta nfproto ipv{v} counter jump snat-to-node" for v in versions]
        else:
            chain.append("counter jump snat-to-node")
        out[f"{family} chain postrouting"] = chain
        snat = "masquerade fully-random" if want.random_fully else "masquerade"
        out[f"{family} chain snat-to-node"] = [snat]
        return out

    def masquerades_to(self, protocol: str, ports: str) -> bool:
        rules = [
            rule
            for place, lines in nft.installed(self.topo).items()
            if place.endswith("chain snat-to-node")
            for rule in lines
        ]
        return any(
            rule.startswith(f"meta l4proto {protocol} ") and f"masquerade to :{ports}" in rule
            for rule in rules
        )


def make(plane_id: str, topo: Topology) -> Plane:
    """The plane a fixture id names (``iptables-nft``, ``iptables-legacy``, ``nftables``)."""
    return NftablesPlane(topo) if plane_id == "nftables" else IptablesPlane(topo)
