"""``nft list ruleset`` text read into tables of chains, set declarations and elements.

Pure and independent of the agent's code: it knows how nft 1.0 prints a ruleset, not the
agent's model.  Counter values are dropped (``counter packets 3 bytes 252`` reads as
``counter``), so two listings compare equal exactly when everything but counters is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COUNTER = re.compile(r"counter packets \d+ bytes \d+")
_TABLE = re.compile(r"table (\S+) (\S+) \{$")
_OBJECT = re.compile(
    r"\t(set|map|chain|flowtable|counter|quota|ct \S+|limit|secmark|synproxy) (\S+) \{$"
)


@dataclass
class TableView:
    family: str
    name: str
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # hook line first, if any
    declarations: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sets and maps
    elements: dict[str, frozenset[str]] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)  # objects of other kinds, unparsed


def strip_counters(text: str) -> str:
    return _COUNTER.sub("counter", text)


def _split_elements(text: str) -> frozenset[str]:
    """``{ a, b }`` (possibly over several lines) into its elements."""
    inner = text.strip().removeprefix("{").removesuffix("}")
    out: list[str] = []
    depth = 0
    current = ""
    for ch in inner:  # a map's verdict may hold an anonymous { ... } with commas
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current.strip())
    return frozenset(out)


def _set_body(view: TableView, name: str, body: list[str]) -> None:
    decl: list[str] = []
    elements = ""
    in_elements = False
    for line in body:
        stripped = line.strip()
        if stripped.startswith("elements = "):
            in_elements = True
            elements = stripped.removeprefix("elements = ")
        elif in_elements:
            elements += " " + stripped
        else:
            decl.append(stripped)
    view.declarations[name] = tuple(decl)
    view.elements[name] = _split_elements(elements) if elements else frozenset()


def parse_ruleset(text: str) -> dict[tuple[str, str], TableView]:
    """Every table of a ``nft list ruleset`` listing, by (family, name)."""
    tables: dict[tuple[str, str], TableView] = {}
    view: TableView | None = None
    kind, name, body = "", "", list[str]()
    for raw in strip_counters(text).splitlines():
        if view is None:
            if m := _TABLE.match(raw):
                view = tables[(m.group(1), m.group(2))] = TableView(m.group(1), m.group(2))
            continue  # '# Warning: table ip nat is managed by iptables-nft' and blank lines
        if raw == "}":
            view = None
        elif not kind:
            if m := _OBJECT.match(raw):
                kind, name, body = m.group(1), m.group(2), []
            elif raw.strip():
                view.other.append(raw.strip())
        elif raw == "\t}":
            if kind == "chain":
                view.chains[name] = tuple(line.strip() for line in body if line.strip())
            elif kind in ("set", "map"):
                _set_body(view, name, body)
            else:
                view.other.append(f"{kind} {name}")
            kind = ""
        else:
            body.append(raw)
    return tables
