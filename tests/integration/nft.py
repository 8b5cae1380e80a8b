"""The nftables side of the harness: the agent's tables as nft lists them, their counters,
every place the agent's objects can be (its nft tables and its iptables chain in each backend
and family), and what others leave in node (v1's chain, foreign tables).

Every command runs inside the topology's node namespace, as an argv list.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any, Literal

from integration.expected import (
    DEFAULT_CHAIN,
    FAMILIES,
    JUMP_COMMENT,
    Family,
    canonical,
    expected_rules,
    jump_rule,
)
from integration.topology import BACKENDS, Backend, Topology, run, save_binary, tables_binary

TABLE = "ip-masq-agent"
OUR_FAMILIES = ("ip", "inet")  # ip6 or bridge tables of the same name are not the agent's
NFTABLES = ("--dataplane=nftables",)
Listing = dict[str, list[str]]

_RULE_COUNTER = re.compile(r"counter packets (\d+) bytes (\d+)")
_ELEMENTS = re.compile(r"elements = \{(.*?)\}", re.DOTALL)
_HANDLE = re.compile(r"\s*# handle \d+$")


def nft(topo: Topology, *args: str, stdin: str | None = None) -> str:
    """``nft ARGS`` in node (it must succeed); its stdout."""
    return run(topo.in_ns(topo.node, ["nft", *args]), stdin=stdin).stdout


def tables(topo: Topology) -> list[str]:
    """Every nf_tables table in node as ``FAMILY NAME`` (iptables-nft's included)."""
    return [line.removeprefix("table ") for line in nft(topo, "list", "tables").splitlines()]


def our_tables(topo: Topology) -> list[str]:
    """The families in which node holds a table named ``ip-masq-agent`` that is the agent's."""
    present = set(tables(topo))
    return [family for family in OUR_FAMILIES if f"{family} {TABLE}" in present]


def ruleset(topo: Topology) -> str:
    """``nft -a list ruleset``: handles and counters, so equal means nothing was written."""
    return nft(topo, "-a", "list", "ruleset")


def without_counters(text: str) -> str:
    return _RULE_COUNTER.sub("counter", text)


def _elements(match: re.Match[str]) -> str:
    """One line for a set's elements, each without its counter (``10.0.0.0/8``)."""
    items = [item.split()[0] for item in match.group(1).split(",") if item.strip()]
    return f"elements = {{ {', '.join(items)} }}"


def normalized(text: str) -> str:
    """A listing with each set's elements on one line and every counter blanked."""
    return without_counters(_ELEMENTS.sub(_elements, text))


def handles(topo: Topology, family: str = "ip") -> str:
    """The agent's table with its handles (a rewritten object gets a new one), normalized."""
    return normalized(nft(topo, "-a", "list", "table", family, TABLE))


def blocks(text: str) -> Listing:
    """A listing of one table as ``set NAME`` / ``chain NAME`` -> its lines, counters and
    handles left out: equal for equal contents whatever order nft lists the objects in."""
    out: Listing = {}
    current: list[str] | None = None
    for raw in normalized(text).splitlines():
        line = _HANDLE.sub("", raw).strip()
        if not line or line.startswith("table "):
            continue
        if line.endswith("{") and line.split()[0] in ("set", "map", "chain"):
            current = out.setdefault(line.removesuffix("{").strip(), [])
        elif line == "}":
            current = None
        elif current is not None:
            current.append(line)
    return out


def installed(topo: Topology) -> Listing:
    """The agent's tables, every object as ``FAMILY set|chain NAME`` -> its lines."""
    out: Listing = {}
    for family in our_tables(topo):
        listing = blocks(nft(topo, "list", "table", family, TABLE))
        out.update({f"{family} {name}": lines for name, lines in listing.items()})
    return out


def element(cidr: str) -> str:
    """A set element as nft lists it: a host route is a bare address."""
    net = ipaddress.ip_network(cidr)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def uncovered(cidrs: Iterable[str]) -> list[str]:
    """The CIDRs no other one of the list covers (an interval set holds no overlaps)."""
    nets = [ipaddress.ip_network(c) for c in canonical(cidrs)]
    return [
        str(n)
        for n in nets
        if not any(o != n and o.version == n.version and n.subnet_of(o) for o in nets)  # type: ignore[arg-type]
    ]


def element_counters(topo: Topology, family: str, set_name: str) -> dict[str, int]:
    """Packets counted per element of one of the agent's sets (``172.20.0.10/32`` for a host)."""
    document = json.loads(nft(topo, "-j", "list", "set", family, TABLE, set_name))
    found: dict[str, int] = {}
    for obj in document["nftables"]:
        for item in obj.get("set", {}).get("elem", []):
            elem: dict[str, Any] = item["elem"]
            value = elem["val"]
            if isinstance(value, dict):
                value = f"{value['prefix']['addr']}/{value['prefix']['len']}"
            found[str(ipaddress.ip_network(value))] = int(elem["counter"]["packets"])
    return found


def rule_counters(topo: Topology, family: str, chain: str = "postrouting") -> dict[str, int]:
    """Packets counted per rule of one of the agent's chains (rule text, counter blanked)."""
    out = {}
    for line in nft(topo, "list", "chain", family, TABLE, chain).splitlines():
        match = _RULE_COUNTER.search(line)
        if match:
            out[without_counters(line).strip()] = int(match.group(1))
    return out


def _legacy_loaded(topo: Topology, family: Family) -> bool:
    """Whether node has a legacy nat table (read from /proc: listing would create one)."""
    names = "ip6_tables_names" if family == 6 else "ip_tables_names"
    proc = run(topo.in_ns(topo.node, ["cat", f"/proc/net/{names}"]), check=False)
    return "nat" in proc.stdout.split()


def agent_objects(topo: Topology, chain: str = DEFAULT_CHAIN) -> set[str]:
    """Every place in node holding something of the agent's: its nft tables, and per iptables
    backend and family its chain and each POSTROUTING jump to it."""
    found = {f"nft table {family} {TABLE}" for family in our_tables(topo)}
    for backend in BACKENDS:
        for family in FAMILIES:
            if backend == "legacy" and not _legacy_loaded(topo, family):
                continue
            binary = save_binary(backend, family)
            save = run(topo.in_ns(topo.node, [binary, "-t", "nat"])).stdout
            where = binary.removesuffix("-save")
            if f":{chain} " in save:
                found.add(f"{where} chain {chain}")
            jumps = [line for line in save.splitlines() if line.endswith(f"-j {chain}")]
            found |= {f"{where} jump {i + 1} to {chain}" for i in range(len(jumps))}
    return found


def iptables_objects(chain: str = DEFAULT_CHAIN, *, ipv6: bool = False) -> set[str]:
    """``agent_objects`` of an iptables-mode agent on the nft backend: chain and one jump."""
    versions: tuple[Literal["", "6"], ...] = ("", "6") if ipv6 else ("",)
    return {
        f"ip{v}tables-nft {what}"
        for v in versions
        for what in (f"chain {chain}", f"jump 1 to {chain}")
    }


def nft_objects(family: str = "ip") -> set[str]:
    return {f"nft table {family} {TABLE}"}


# --- what others leave in node: v1/v2's iptables chain, foreign tables ----------------------


def ipt(topo: Topology, backend: Backend, family: Family, *args: str) -> str:
    """iptables of ``backend`` and ``family`` in node, whatever the topology's backend."""
    argv = [tables_binary(backend, family), "-w", "5", *args]
    return run(topo.in_ns(topo.node, argv)).stdout


def write_old_jump(
    topo: Topology, backend: Backend, family: Family, *, v2_quotes: bool = False
) -> None:
    """A POSTROUTING jump to our chain as v1 writes it (v2: its comment in literal quotes)."""
    comment = JUMP_COMMENT.format(chain=DEFAULT_CHAIN)
    if v2_quotes:
        comment = f'"{comment}"'
    ipt(
        topo, backend, family, "-t", "nat", "-A", "POSTROUTING", "-m", "comment",
        "--comment", comment, "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", DEFAULT_CHAIN,
    )  # fmt: skip


def write_old_chain(topo: Topology, backend: Backend, family: Family) -> None:
    """Our chain (masquerade everything) and its jump as v1 writes them, in one
    ``iptables-restore --noflush`` so that a running agent sees all of it or none of it: what an
    old pod leaves on a node, or writes again during a rolling update."""
    masquerade_all = expected_rules((), keep_link_local=False, random_fully=False)
    script = "\n".join(
        ["*nat", f":{DEFAULT_CHAIN} - [0:0]", *masquerade_all, jump_rule(), "COMMIT\n"]
    )
    restore = [f"{tables_binary(backend, family)}-restore", "-w", "5", "--noflush"]
    run(topo.in_ns(topo.node, restore), stdin=script)


FOREIGN_TABLES = """
table ip kube-proxy {
    set cluster-ips { type ipv4_addr; elements = { 10.96.0.1, 10.96.0.10 }; }
    map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }
    chain services { ip daddr . meta l4proto . th dport vmap @service-ips; }
    chain filter-forward {
        type filter hook forward priority filter; policy accept;
        ip daddr @cluster-ips counter jump services
    }
    chain nat-postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.99.0.0/16 counter masquerade
    }
}
table ip6 kube-proxy {
    chain nat-postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip6 saddr fd00:99::/64 counter masquerade
    }
}
table ip6 ip-masq-agent {
    chain postrouting {
        type nat hook postrouting priority srcnat + 20; policy accept;
        counter
    }
}
table inet firewall {
    chain forward { type filter hook forward priority filter + 5; policy accept; counter accept; }
}
"""
"""Tables that are not the agent's: kube-proxy's (nftables mode), a table of our name in a
family the agent never uses (ip6), and a firewall.  None NATs the pod's traffic."""


def add_foreign(topo: Topology) -> None:
    """Foreign nft tables, and foreign rules in the iptables-nft nat and filter tables."""
    nft(topo, "-f", "-", stdin=FOREIGN_TABLES)
    ipt(topo, "nft", 4, "-t", "nat", "-N", "KUBE-FOREIGN")
    ipt(topo, "nft", 4, "-t", "nat", "-A", "KUBE-FOREIGN", "-d", "198.18.0.0/15", "-j", "RETURN")
    ipt(topo, "nft", 4, "-t", "nat", "-A", "PREROUTING", "-j", "KUBE-FOREIGN")
    ipt(topo, "nft", 4, "-t", "nat", "-A", "POSTROUTING", "-s", "10.99.0.0/16", "-j", "RETURN")
    ipt(topo, "nft", 4, "-t", "filter", "-A", "FORWARD", "-s", "10.98.0.0/16", "-j", "ACCEPT")
    ipt(topo, "nft", 6, "-t", "nat", "-A", "POSTROUTING", "-d", "fd00:99::/64", "-j", "RETURN")


def _without_chain(text: str, chain: str) -> list[str]:
    """Listing lines minus one chain's block and every jump to it (iptables mode writes them)."""
    out: list[str] = []
    inside = False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(f"chain {chain} {{"):
            inside = True
        elif inside:
            inside = line != "}"
        elif line and f"jump {chain}" not in line:
            out.append(line)
    return out


def foreign_state(topo: Topology) -> Listing:
    """Every nft table in node that is not the agent's, as ``nft -a list table`` prints it
    (handles kept: a table rewritten would get new ones), counters blanked, minus the chain and
    jumps the agent itself puts into iptables-nft's nat tables in iptables mode."""
    out: Listing = {}
    for table in tables(topo):
        family, name = table.split()
        if name == TABLE and family in OUR_FAMILIES:
            continue
        listing = without_counters(nft(topo, "-a", "list", "table", family, name))
        out[table] = _without_chain(listing, DEFAULT_CHAIN)
    return out
