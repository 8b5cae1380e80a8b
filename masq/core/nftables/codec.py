"""nftables spelling of the model: batch text out, the JSON listing in.

``render_batch`` writes the ops of one transaction as an ``nft -f`` file; the shell
hands it to nft whole (never through a pipe, which nft commits up to EOF).
``parse_listing`` reads ``nft -j list table`` output into the model, elements with
their counters; a rule outside the agent's grammar becomes an opaque rule (which
then differs from every desired rule, so the plan replaces its chain).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from pyrsistent import pmap, pvector
from returns.result import Failure, Result, Success

from masq.core.addresses import Family, IPNetwork, cidr_key, family_of, parse_cidr
from masq.core.egress import parse_interface
from masq.core.errors import ConfigError, invalid
from masq.core.nat import PortRange
from masq.core.nftables.model import (
    ADDRESS_TYPE,
    PAYLOAD,
    SRCNAT_PRIORITY,
    AddElements,
    BaseChain,
    DeleteElements,
    DeleteTable,
    NftChain,
    NftFamily,
    NftOp,
    NftRule,
    NftSet,
    NftState,
    NftTable,
    ReplaceChain,
    ReplaceSet,
    ReplaceTable,
    set_kind,
)
from masq.core.traffic import Counters

_FAMILY_OF_TYPE = {v: k for k, v in ADDRESS_TYPE.items()}
_FAMILY_OF_PAYLOAD = {v: k for k, v in PAYLOAD.items()}

# --- rendering -------------------------------------------------------------


def render_element(net: IPNetwork) -> str:
    return str(net)


def _priority(priority: int) -> str:
    offset = priority - SRCNAT_PRIORITY
    if offset == 0:
        return "srcnat"
    return f"srcnat {'+' if offset > 0 else '-'} {abs(offset)}"


def render_rule(rule: NftRule) -> str:
    """One rule as ``nft list`` prints it (without counter values)."""
    if rule.verdict is None:
        raise ValueError("an opaque rule cannot be written")
    words: list[str] = []
    if rule.local:
        words.append("fib daddr type local")
    if rule.not_oifname:
        words.append(f"oifname != {_anonymous(_quoted(i) for i in rule.not_oifname)}")
    if rule.nfproto is not None:
        words.append(f"meta nfproto {rule.nfproto}")
    if rule.not_saddr:
        payload = PAYLOAD[family_of(rule.not_saddr[0])]
        ordered = sorted(rule.not_saddr, key=cidr_key)
        words.append(f"{payload} saddr != {_anonymous(render_element(n) for n in ordered)}")
    if rule.family is not None and (rule.daddr is not None or rule.daddr_set is not None):
        target = f"@{rule.daddr_set}" if rule.daddr_set is not None else str(rule.daddr)
        words.append(f"{PAYLOAD[rule.family]} daddr {target}")
    if rule.protocol is not None:
        words.append(f"meta l4proto {rule.protocol}")
    if rule.numgen is not None:
        words.append(f"numgen random mod {rule.numgen[0]} < {rule.numgen[1]}")
    if rule.counter:
        words.append("counter")
    if rule.verdict == "jump":
        words.append(f"jump {rule.target}")
    elif rule.verdict == "return":
        words.append("return")
    elif rule.verdict == "snat":
        words += _snat_words(rule)
    else:
        words.append("masquerade")
        if rule.to_ports is not None:
            words.append(f"to :{_ports(rule.to_ports)}")
    if rule.verdict in ("masquerade", "snat") and rule.fully_random:
        words.append("fully-random")
    return " ".join(words)


def _ports(ports: PortRange) -> str:
    return str(ports.first) if ports.size == 1 else str(ports)


def _snat_words(rule: NftRule) -> list[str]:
    """``snat [ip|ip6] to ADDR[:PORTS]``: the family word only in an inet table's rules,
    which carry ``meta nfproto`` (an ip table's rules need none)."""
    address = rule.to_address
    if address is None:
        raise ValueError("an snat rule needs its to_address")
    words = ["snat"]
    if rule.nfproto is not None:
        words.append(PAYLOAD[family_of(address)])
    text = str(address)
    if rule.to_ports is not None:
        ports = _ports(rule.to_ports)
        text = f"[{text}]:{ports}" if address.version == 6 else f"{text}:{ports}"
    return [*words, "to", text]


def _quoted(interface: str) -> str:
    """An interface name or trailing-* pattern as an nft string (names hold no quotes)."""
    return f'"{interface}"'


def _anonymous(values: Iterable[str]) -> str:
    """An anonymous set, or the one value alone (as nft lists a set of one)."""
    items = list(values)
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _render_set(s: NftSet) -> list[str]:
    lines = [f"\tset {s.name} {{", f"\t\ttype {ADDRESS_TYPE[s.family]}"]
    if s.flags:
        lines.append(f"\t\tflags {', '.join(s.flags)}")
    if s.counter:
        lines.append("\t\tcounter")
    if s.elements:
        lines.append(f"\t\telements = {{ {_in_order(s.ordered())} }}")
    lines.append("\t}")
    return lines


def _render_chain(c: NftChain) -> list[str]:
    lines = [f"\tchain {c.name} {{"]
    if c.base is not None:
        b = c.base
        lines.append(
            f"\t\ttype {b.type} hook {b.hook} priority {_priority(b.priority)}; policy {b.policy};"
        )
    lines += [f"\t\t{render_rule(r)}" for r in c.rules]
    lines.append("\t}")
    return lines


def render_table(table: NftTable) -> str:
    """The table as one ``table FAMILY NAME { ... }`` block, sets before chains, by name."""
    lines = [f"table {table.family} {table.name} {{"]
    for name in sorted(table.sets):
        lines += _render_set(table.sets[name])
    for name in _chain_order(table):
        lines += _render_chain(table.chains[name])
    lines.append("}")
    return "\n".join(lines) + "\n"


def _chain_order(table: NftTable) -> list[str]:
    """Regular chains first: a base chain's jumps must find their targets defined."""
    return sorted(table.chains, key=lambda n: (table.chains[n].base is not None, n))


def _elements(elements: Iterable[IPNetwork]) -> str:
    return _in_order(sorted(elements, key=cidr_key))


def _in_order(ordered: Iterable[IPNetwork]) -> str:
    """Elements already in canonical order (a set's ``ordered()``: no second sort)."""
    return ", ".join(map(render_element, ordered))


def render_op(op: NftOp) -> str:
    """One op as ``nft -f`` lines."""
    match op:
        case ReplaceTable(table=t):
            return f"add table {t.family} {t.name}\ndelete table {t.family} {t.name}\n" + (
                render_table(t)
            )
        case DeleteTable(family=f, name=n):
            return f"delete table {f} {n}\n"
        case AddElements(family=f, table=t, set=s, elements=e):
            return f"add element {f} {t} {s} {{ {_elements(e)} }}\n"
        case DeleteElements(family=f, table=t, set=s, elements=e):
            return f"delete element {f} {t} {s} {{ {_elements(e)} }}\n"
        case ReplaceSet(family=f, table=t, set=s):
            fill = f"add element {f} {t} {s.name} {{ {_in_order(s.ordered())} }}\n"
            return f"flush set {f} {t} {s.name}\n" + (fill if s.elements else "")
        case ReplaceChain(family=f, table=t, chain=c):
            rules = "".join(f"add rule {f} {t} {c.name} {render_rule(r)}\n" for r in c.rules)
            return f"flush chain {f} {t} {c.name}\n" + rules
    raise TypeError(f"not an op: {op!r}")


def render_batch(ops: Sequence[NftOp]) -> str:
    """One ``nft -f`` transaction: all of it commits or none ("" for no ops)."""
    return "".join(render_op(op) for op in ops)


def render_ops_readable(ops: Sequence[NftOp]) -> str:
    """For ``--dry-run``: the batch, each op's first line marked ``+``, ``-`` or ``*``."""
    signs = {AddElements: "+", DeleteElements: "-", DeleteTable: "-"}
    out = []
    for op in ops:
        sign = signs.get(type(op), "*")
        out += [f"{sign} {line}\n" for line in render_op(op).splitlines()]
    return "".join(out)


# --- parsing the JSON listing ---------------------------------------------


def _network(value: object) -> IPNetwork | None:
    """A set element or match value: ``"a.b.c.d"`` or ``{"prefix": {...}}``; else None."""
    if isinstance(value, str):
        text = value if "/" in value else f"{value}/{32 if ':' not in value else 128}"
    elif isinstance(value, Mapping) and isinstance(value.get("prefix"), Mapping):
        text = f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
    else:
        return None
    return parse_cidr(text).value_or(None)


def _counters(value: object) -> Counters | None:
    if isinstance(value, Counters):  # an element's, compacted while parsing
        return value
    if isinstance(value, Mapping):
        packets, nbytes = value.get("packets"), value.get("bytes")
        if isinstance(packets, int) and isinstance(nbytes, int):
            return Counters(packets, nbytes)
    return None


def _elem_json(item: _Elem) -> dict[str, Any]:
    """An element compacted while parsing, as the listing gave it (for an opaque one)."""
    c = item.counter
    counter = {"packets": c.packets, "bytes": c.bytes} if isinstance(c, Counters) else c
    return {"elem": {"val": item.val, "counter": counter}}


def _parse_set(obj: Mapping[str, Any]) -> NftSet | None:
    family = _FAMILY_OF_TYPE.get(obj.get("type", ""))
    if family is None:
        return None
    elements: list[IPNetwork] = []
    counters: dict[IPNetwork, Counters] = {}
    opaque: list[str] = []
    for item in obj.get("elem", ()):
        if isinstance(item, _Elem):  # the common case, compacted while parsing
            value, counter = item.val, item.counter
        else:
            inner = item.get("elem", item) if isinstance(item, Mapping) else item
            mapping = isinstance(inner, Mapping)
            value = inner.get("val") if mapping and "val" in inner else inner
            counter = inner.get("counter") if mapping else None
        net = _network(value)
        if net is None or net.version != (4 if family == "ipv4" else 6):
            shown = _elem_json(item) if isinstance(item, _Elem) else item
            opaque.append(json.dumps(shown, sort_keys=True))
            continue
        elements.append(net)
        found = _counters(counter)
        if found is not None:
            counters[net] = found
    flags = obj.get("flags", [])
    return NftSet(
        name=str(obj["name"]),
        family=family,
        elements=frozenset(elements),
        flags=tuple(flags) if isinstance(flags, list) else (str(flags),),
        counter=any(isinstance(s, Mapping) and "counter" in s for s in obj.get("stmt", ())),
        opaque=tuple(opaque) + (("auto-merge",) if obj.get("auto-merge") else ()),
        kind=set_kind(str(obj["name"])),
        counters=MappingProxyType(counters),
    )


def _match(expr: Mapping[str, Any], op: str = "==") -> tuple[Mapping[str, Any], Any] | None:
    m = expr.get("match")
    if isinstance(m, Mapping) and m.get("op") == op and isinstance(m.get("left"), Mapping):
        return m["left"], m.get("right")
    return None


@dataclass
class _RuleReader:
    """Reads a rule's expressions in the order ``render_rule`` writes them."""

    exprs: list[Mapping[str, Any]]
    fields: dict[str, Any] = field(default_factory=dict)
    at: int = 0

    def peek(self) -> Mapping[str, Any] | None:
        return self.exprs[self.at] if self.at < len(self.exprs) else None

    def take(self, key: str, read: Any) -> None:
        """If the next expression is ``key`` and ``read`` accepts it, consume it."""
        expr = self.peek()
        if expr is None:
            return
        found = read(expr)
        if found is not None:
            self.fields[key] = found
            self.at += 1


def _local(expr: Mapping[str, Any]) -> bool | None:
    m = _match(expr)
    if m and m[0].get("fib") == {"result": "type", "flags": ["daddr"]} and m[1] == "local":
        return True
    return None


def _meta(key: str) -> Any:
    def read(expr: Mapping[str, Any]) -> str | None:
        m = _match(expr)
        if m and m[0].get("meta") == {"key": key} and isinstance(m[1], str):
            return m[1]
        return None

    return read


def _daddr(expr: Mapping[str, Any]) -> tuple[Family, str | IPNetwork] | None:
    m = _match(expr)
    payload = m[0].get("payload") if m else None
    if not m or not isinstance(payload, Mapping) or payload.get("field") != "daddr":
        return None
    family = _FAMILY_OF_PAYLOAD.get(payload.get("protocol", ""))
    if family is None:
        return None
    if isinstance(m[1], str) and m[1].startswith("@"):
        return family, m[1][1:]
    net = _network(m[1])
    return (family, net) if net is not None else None


def _not_oifname(expr: Mapping[str, Any]) -> tuple[str, ...] | None:
    m = _match(expr, "!=")
    if not m or m[0].get("meta") != {"key": "oifname"}:
        return None
    values = _set_values(m[1])
    names = [parse_interface(v).value_or(None) if isinstance(v, str) else None for v in values]
    if not names or any(n is None for n in names):
        return None
    return tuple(sorted(n for n in names if n is not None))


def _not_saddr(expr: Mapping[str, Any]) -> tuple[IPNetwork, ...] | None:
    m = _match(expr, "!=")
    payload = m[0].get("payload") if m else None
    if not m or not isinstance(payload, Mapping) or payload.get("field") != "saddr":
        return None
    family = _FAMILY_OF_PAYLOAD.get(payload.get("protocol", ""))
    nets = [_network(v) for v in _set_values(m[1])]
    if family is None or not nets or any(n is None or family_of(n) != family for n in nets):
        return None
    return tuple(sorted((n for n in nets if n is not None), key=cidr_key))


def _set_values(right: Any) -> list[Any]:
    """An anonymous set's values, or the one value nft lists for a set of one."""
    if isinstance(right, Mapping) and isinstance(right.get("set"), list):
        return list(right["set"])
    return [right]


def _numgen(expr: Mapping[str, Any]) -> tuple[int, int] | None:
    m = _match(expr, "<")
    gen = m[0].get("numgen") if m else None
    if not m or not isinstance(gen, Mapping) or gen.get("mode") != "random" or gen.get("offset"):
        return None
    modulus, bound = gen.get("mod"), m[1]
    return (modulus, bound) if isinstance(modulus, int) and isinstance(bound, int) else None


def _counter(expr: Mapping[str, Any]) -> Counters | None:
    if "counter" in expr:
        return _counters(expr["counter"]) or Counters(0, 0)
    return None


def _verdict(expr: Mapping[str, Any]) -> dict[str, Any] | None:
    if set(expr) == {"return"}:
        return {"verdict": "return"}
    jump = expr.get("jump")
    if isinstance(jump, Mapping) and isinstance(jump.get("target"), str):
        return {"verdict": "jump", "target": jump["target"]}
    if "snat" in expr:
        return _snat(expr["snat"])
    if "masquerade" not in expr:
        return None
    spec = expr["masquerade"] or {}
    port = spec.get("port")
    flags = spec.get("flags", [])
    flags = [flags] if isinstance(flags, str) else list(flags)
    if set(spec) - {"port", "flags"} or set(flags) - {"fully-random"}:
        return None
    ports = _port_range(port)
    if ports is False:
        return None
    return {"verdict": "masquerade", "to_ports": ports, "fully_random": bool(flags)}


def _port_range(port: Any) -> PortRange | bool | None:
    """A NAT statement's port or range (None: none; False: not one the agent writes)."""
    if isinstance(port, int):
        return PortRange(port, port)
    if isinstance(port, Mapping) and isinstance(port.get("range"), list):
        return PortRange(*port["range"])
    return None if port is None else False


def _snat(spec: Any) -> dict[str, Any] | None:
    if not isinstance(spec, Mapping) or set(spec) - {"family", "addr", "port", "flags"}:
        return None
    flags = spec.get("flags", [])
    flags = [flags] if isinstance(flags, str) else list(flags)
    ports = _port_range(spec.get("port"))
    try:
        address = ipaddress.ip_address(str(spec.get("addr")))
    except ValueError:
        return None
    family = spec.get("family")
    if set(flags) - {"fully-random"} or ports is False or family not in (None, "ip", "ip6"):
        return None
    if family is not None and family != PAYLOAD[family_of(address)]:
        return None
    return {
        "verdict": "snat",
        "to_address": address,
        "to_ports": ports,
        "fully_random": bool(flags),
        "_snat_family": family,
    }


def parse_rule(exprs: list[Mapping[str, Any]]) -> NftRule:
    """The rule the expressions spell in ``render_rule``'s grammar, else an opaque rule."""
    r = _RuleReader(exprs)
    r.take("local", _local)
    r.take("not_oifname", _not_oifname)
    r.take("nfproto", _meta("nfproto"))
    r.take("not_saddr", _not_saddr)
    r.take("daddr", _daddr)
    r.take("protocol", _meta("l4proto"))
    r.take("numgen", _numgen)
    r.take("counters", _counter)
    r.take("verdict", _verdict)
    verdict = dict(r.fields.get("verdict") or {})
    nfproto = r.fields.get("nfproto")
    # "snat ip to" names its family exactly when the rule says nfproto (render_rule's way)
    snat_family = verdict.pop("_snat_family", None)
    if (
        r.at != len(exprs)
        or not verdict
        or nfproto not in (None, "ipv4", "ipv6")
        or (verdict["verdict"] == "snat" and (snat_family is None) != (nfproto is None))
    ):
        return NftRule(verdict=None, text=json.dumps(exprs, sort_keys=True))
    family, target = r.fields.get("daddr", (None, None))
    return NftRule(
        local=bool(r.fields.get("local")),
        not_oifname=r.fields.get("not_oifname", ()),
        nfproto=nfproto,
        not_saddr=r.fields.get("not_saddr", ()),
        family=family,
        daddr=target if not isinstance(target, str) else None,
        daddr_set=target if isinstance(target, str) else None,
        protocol=r.fields.get("protocol"),
        numgen=r.fields.get("numgen"),
        counter="counters" in r.fields,
        counters=r.fields.get("counters"),
        **verdict,
    )


def _base(obj: Mapping[str, Any]) -> BaseChain | None:
    if "hook" not in obj:
        return None
    return BaseChain(
        type=str(obj.get("type", "")),
        hook=str(obj["hook"]),
        priority=int(obj.get("prio", 0)),
        policy=str(obj.get("policy", "accept")),
    )


def _table_of(objects: list[Mapping[str, Any]], family: NftFamily, name: str) -> NftTable:
    sets: dict[str, NftSet] = {}
    chains: dict[str, NftChain] = {}
    rules: dict[str, list[NftRule]] = {}
    for obj in objects:
        if "set" in obj:
            parsed = _parse_set(obj["set"])
            sets[str(obj["set"]["name"])] = (
                parsed
                if parsed is not None
                else NftSet(str(obj["set"]["name"]), "ipv4", opaque=("?",))
            )
        elif "chain" in obj:
            chains[str(obj["chain"]["name"])] = NftChain(
                str(obj["chain"]["name"]), _base(obj["chain"])
            )
        elif "rule" in obj:
            rules.setdefault(str(obj["rule"]["chain"]), []).append(parse_rule(obj["rule"]["expr"]))
    return NftTable(
        family=family,
        name=name,
        sets=pmap(sets),
        chains=pmap({n: replace(c, rules=pvector(rules.get(n, []))) for n, c in chains.items()}),
    )


def _compact_prefix(obj: dict[str, Any]) -> Any:
    """Element-sized JSON objects as small values while the JSON is parsed:
    ``{"prefix": {"addr": a, "len": n}}`` as the text ``a/n`` and ``{"elem": {"val": v,
    "counter": c}}`` as an ``_Elem`` holding ``Counters``, so the 50,000 elements of a big
    set take a fraction of the memory (five dicts fewer each)."""
    if len(obj) == 2 and "addr" in obj and "len" in obj:
        return _PrefixText(f"{obj['addr']}/{obj['len']}")
    if len(obj) == 1 and isinstance(obj.get("prefix"), _PrefixText):
        return str(obj["prefix"])
    if len(obj) == 2 and "val" in obj and "counter" in obj:
        return _Elem(obj["val"], _counters(obj["counter"]) or obj["counter"])
    if len(obj) == 1 and isinstance(obj.get("elem"), _Elem):
        return obj["elem"]
    return obj


class _PrefixText(str):
    """A prefix's text while its ``{"prefix": ...}`` wrapper has not been seen yet."""


class _Elem(NamedTuple):
    """A set element with its counter, as ``{"elem": {"val": ..., "counter": ...}}`` says."""

    val: Any
    counter: Any


def parse_listing(text: str, family: NftFamily, name: str) -> Result[NftTable, ConfigError]:
    """``nft -j list table FAMILY NAME`` output, as the model (elements with counters)."""
    try:
        document = json.loads(text, object_hook=_compact_prefix)
        objects = cast(list[Mapping[str, Any]], document["nftables"])
        tables = [o["table"] for o in objects if "table" in o]
        if [(t.get("family"), t.get("name")) for t in tables] != [(family, name)]:
            return Failure(invalid(f"not the listing of table {family} {name}"))
        return Success(_table_of(objects, family, name))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return Failure(invalid(f"unreadable nft JSON listing ({type(error).__name__}: {error})"))


def state_of(tables: Iterable[NftTable]) -> NftState:
    return NftState(tables=pmap({t.family: t for t in tables}))
