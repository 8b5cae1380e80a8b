"""An independent reader of the nft table text the agent renders, for property tests.

It knows nft's syntax, not the agent's model: it parses ``table ... { set ... chain ... }``
blocks line by line and decides a packet's fate by walking the base chain, looking set
members up with netaddr.  A test that judges rendering with it cannot be fooled by a
bug that the model and the renderer share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import netaddr

_SET = re.compile(r"\s*set (\S+) \{")
_CHAIN = re.compile(r"\s*chain (\S+) \{")
_ELEMENTS = re.compile(r"\s*elements = \{ (.*) \}")
_TYPE = re.compile(r"\s*type (ipv4_addr|ipv6_addr)")


@dataclass
class TextTable:
    family: str
    name: str
    sets: dict[str, tuple[str, netaddr.IPSet, list[str]]] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)


def parse_text(text: str) -> TextTable:
    """The table block of ``render_table`` output (one table)."""
    lines = text.splitlines()
    head = lines[0].split()
    assert head[0] == "table" and head[3] == "{", lines[0]
    table = TextTable(head[1], head[2])
    current_set: str | None = None
    current_chain: str | None = None
    set_type = ""
    for line in lines[1:]:
        if m := _SET.match(line):
            current_set, set_type = m.group(1), ""
        elif m := _CHAIN.match(line):
            current_chain = m.group(1)
            table.chains[current_chain] = []
        elif line.strip() == "}":
            if current_set is not None and current_set not in table.sets:
                table.sets[current_set] = (set_type, netaddr.IPSet(), [])
            current_set = current_chain = None
        elif current_set is not None:
            if m := _TYPE.match(line):
                set_type = m.group(1)
            elif m := _ELEMENTS.match(line):
                members = [e.strip() for e in m.group(1).split(",")]
                table.sets[current_set] = (set_type, netaddr.IPSet(members), members)
        elif current_chain is not None:
            stripped = line.strip()
            if stripped.startswith("type "):
                table.hooks[current_chain] = stripped
            else:
                table.chains[current_chain].append(stripped)
    return table


def _matches(table: TextTable, words: list[str], ip: netaddr.IPAddress) -> bool:
    family = "ipv4" if ip.version == 4 else "ipv6"
    i = 0
    while i < len(words):
        word = words[i]
        if words[i : i + 4] == ["fib", "daddr", "type", "local"]:
            return False  # the destination is non-local by assumption
        if words[i : i + 2] == ["meta", "nfproto"]:
            if words[i + 2] != family:
                return False
            i += 3
        elif word in ("ip", "ip6") and words[i + 1] == "daddr":
            if (word == "ip") != (ip.version == 4):
                return False
            target = words[i + 2]
            if target.startswith("@"):
                set_type, members, _ = table.sets[target[1:]]
                assert set_type == ("ipv4_addr" if ip.version == 4 else "ipv6_addr")
                if ip not in members:
                    return False
            elif ip not in netaddr.IPNetwork(target):
                return False
            i += 3
        elif word == "counter":
            i += 1
        else:
            return True  # the verdict
    return True


_NOT_OIFNAME = re.compile(r'oifname != (\{ [^}]* \}|"[^"]*") ')
_NOT_SADDR = re.compile(r"(ip6?) saddr != (\{ [^}]* \}|\S+) ")


def _values(text: str) -> list[str]:
    return [v.strip().strip('"') for v in text.strip("{} ").split(",")]


def _selection_fails(rule: str, ip: netaddr.IPAddress, source: str, interface: str) -> bool:
    """Egress selection's matches (``oifname != {...}``, ``ip saddr != {...}``): True when one
    of them does not match the packet; an nft wildcard is a trailing ``*``."""
    if m := _NOT_OIFNAME.search(rule):
        for value in _values(m.group(1)):
            if interface == value or (value.endswith("*") and interface.startswith(value[:-1])):
                return True
    if m := _NOT_SADDR.search(rule):
        if (m.group(1) == "ip") != (ip.version == 4):
            return True
        if netaddr.IPAddress(source) in netaddr.IPSet(_values(m.group(2))):
            return True
    return False


def _without_selection(rule: str) -> str:
    return _NOT_SADDR.sub("", _NOT_OIFNAME.sub("", rule))


def masquerades(
    table: TextTable, ip: str, source: str | None = None, interface: str = "eth0"
) -> bool:
    """Whether the base chain (the one with a nat postrouting hook) masquerades ``ip`` for a
    packet from ``source`` (default: of the destination's family, and in no source set)
    leaving through ``interface``."""
    address = netaddr.IPAddress(ip)
    source = source if source is not None else ("0.0.0.0" if address.version == 4 else "::")
    (base,) = [n for n, hook in table.hooks.items() if "hook postrouting" in hook]
    for rule in table.chains[base]:
        if _selection_fails(rule + " ", address, source, interface):
            continue
        words = _without_selection(rule + " ").split()
        if not _matches(table, words, address):
            continue
        if words[-1] == "return":
            return False
        assert words[-2] == "jump", rule
        target = table.chains[words[-1]]
        assert target and all(" masquerade" in f" {r}" or " snat " in f" {r} " for r in target), (
            target
        )
        return True
    return False  # fell through: policy accept, no NAT


def snat_address(table: TextTable, ip: str) -> str | None:
    """The address the NAT chain's plain rule for ``ip``'s family SNATs to (None: masquerade)."""
    version = netaddr.IPAddress(ip).version
    family = "ipv4" if version == 4 else "ipv6"
    (base,) = [n for n, hook in table.hooks.items() if "hook postrouting" in hook]
    (nat,) = [n for n in table.chains if n != base]
    for rule in table.chains[nat]:
        if "l4proto" in rule or ("nfproto" in rule and f"nfproto {family}" not in rule):
            continue
        words = rule.split()
        return words[words.index("to") + 1] if "snat" in words else None
    return None
