"""``--iptables-backend=auto``: write to the backend kube-proxy and the kubelet already use.

Kubernetes' iptables-wrapper decides by looking for the kubelet's
``KUBE-IPTABLES-HINT`` / ``KUBE-KUBELET-CANARY`` chains (mangle table) in each
backend, then by counting rules in both.  Counting means two full saves, so we
start from signals that cost no iptables process at all:

1. ``/proc/net/ip_tables_names`` (+ ``ip6_tables_names``) lists the legacy
   (x_tables) tables instantiated in this network namespace.  None: nothing
   ever used legacy here, so nft it is (also the default on an empty node),
   decided without starting a process.
2. ``nft list tables``: are there iptables-nft tables (family ip/ip6, an
   iptables table name)?  None: legacy holds everything, so legacy.
3. Both exist: the hint chains, nft first (the wrapper's order), then the canary.
4. Still undecided: count ``-A`` lines in both saves; legacy if it holds at least
   10 rules or at least as many as nft and more than none (the wrapper's rule),
   else nft.

The choice is made once per run, as the wrapper's: the dataplane that asks keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from masq.core.addresses import FAMILIES, Family
from masq.shell import netlink
from masq.shell.options import Backend
from masq.shell.process import Completed, Runner, run_command

if TYPE_CHECKING:  # iptables_runner imports this module (the binary names) at run time
    from masq.shell.iptables_runner import ResolvedBackend

LOG = logging.getLogger("masq.backend")
HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
LEGACY_NAMES_FILES = tuple(netlink.LEGACY_NAMES_FILES.values())
LEGACY_ENOUGH_RULES = 10


def iptables_binary(
    family: Family, backend: ResolvedBackend, tool: Literal["", "save", "restore"] = ""
) -> str:
    """``iptables-nft``, ``ip6tables-legacy-save``, ...: the one place these names are made."""
    name = f"{'iptables' if family == 'ipv4' else 'ip6tables'}-{backend}"
    return f"{name}-{tool}" if tool else name


class Probe(Protocol):
    """What the decision may look at; each call may cost a process, so it is asked lazily."""

    def legacy_tables(self) -> frozenset[str]: ...
    def nft_tables(self) -> frozenset[str]: ...
    def has_chain(self, backend: ResolvedBackend, table: str, chain: str) -> bool: ...
    def rule_count(self, backend: ResolvedBackend) -> int: ...


def choose_backend(probe: Probe) -> tuple[ResolvedBackend, str]:
    """The backend to write to, and why (for the log)."""
    legacy = probe.legacy_tables()
    if not legacy:
        return "nft", "no legacy iptables tables in this network namespace"
    nft = probe.nft_tables()
    if not nft:
        return "legacy", f"only legacy tables exist ({', '.join(sorted(legacy))})"
    for chain in HINT_CHAINS:
        if "mangle" in nft and probe.has_chain("nft", "mangle", chain):
            return "nft", f"{chain} found in iptables-nft"
        if "mangle" in legacy and probe.has_chain("legacy", "mangle", chain):
            return "legacy", f"{chain} found in iptables-legacy"
    legacy_rules = probe.rule_count("legacy")
    if legacy_rules >= LEGACY_ENOUGH_RULES:
        return "legacy", f"iptables-legacy holds {legacy_rules} rules"
    nft_rules = probe.rule_count("nft")
    if legacy_rules > 0 and legacy_rules >= nft_rules:
        return "legacy", f"iptables-legacy holds {legacy_rules} rules, nft {nft_rules}"
    return "nft", f"iptables-nft holds {nft_rules} rules, legacy {legacy_rules}"


def parse_nft_tables(text: str) -> frozenset[str]:
    """Table names iptables-nft would use, from ``nft list tables`` (``table ip nat``)."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if (
            len(parts) == 3
            and parts[0] == "table"
            and parts[1] in ("ip", "ip6")
            and parts[2] in IPTABLES_TABLES
        ):
            names.add(parts[2])
    return frozenset(names)


def count_rules(save_text: str) -> int:
    return sum(1 for line in save_text.splitlines() if line.startswith(("-A", "[")))


class SystemProbe:
    """The real signals, in this process's network namespace."""

    def __init__(
        self, runner: Runner = run_command, names_files: Iterable[str] = LEGACY_NAMES_FILES
    ) -> None:
        self._run = runner
        self._names_files = tuple(names_files)

    def legacy_tables(self) -> frozenset[str]:
        return frozenset().union(*(netlink.read_table_names(p) for p in self._names_files))

    def nft_tables(self) -> frozenset[str]:
        try:
            res = self._run(["nft", "list", "tables"], None)
        except Exception as e:  # nft missing: fall back to counting
            LOG.debug("nft list tables failed", extra={"kv": {"error": str(e)}})
            return frozenset(IPTABLES_TABLES)
        if res.exit_code != 0:
            return frozenset(IPTABLES_TABLES)
        return parse_nft_tables(res.stdout)

    def has_chain(self, backend: ResolvedBackend, table: str, chain: str) -> bool:
        res = self._run([iptables_binary("ipv4", backend), "-t", table, "-S", chain], None)
        return res.exit_code == 0

    def rule_count(self, backend: ResolvedBackend) -> int:
        total = 0
        for family in FAMILIES:
            res: Completed = self._run([iptables_binary(family, backend, "save")], None)
            if res.exit_code == 0:
                total += count_rules(res.stdout)
        return total


def resolve_backend(requested: Backend, probe: Probe | None = None) -> ResolvedBackend:
    """The flag's backend, or auto's choice (logged).  Nothing is remembered here: the
    caller keeps the answer (the iptables dataplane asks once, when it first needs it)."""
    if requested != "auto":
        return requested
    chosen, why = choose_backend(probe if probe is not None else SystemProbe())
    LOG.info("iptables backend chosen", extra={"kv": {"backend": chosen, "reason": why}})
    return chosen
