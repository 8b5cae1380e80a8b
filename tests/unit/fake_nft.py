"""A strict stand-in for ``nft``: batches change a kernel model, listings are read from it.

``nft -f`` batches are read in the grammar the agent writes (nft's own syntax for tables,
sets, chains, elements and rules, a useful subset of it) and each statement becomes one op
of the core's model, applied with the core's ``apply_ops``: the fake refuses what that
model says the kernel refuses (a missing table, set, chain or element, an element
overlapping another in an interval set, a jump to a missing chain, a rule naming a
missing set), and a refused batch changes nothing, as nft's transaction does.  Words it
does not know are a syntax error, as in nft.  ``nft -c`` checks without committing.

Listings (``nft -j list table``, ``nft list tables``) are printed from that state in nft
1.0.6's JSON shape (the core parses them back, so a write and the next listing agree
only if the agent wrote what it meant); every committed batch bumps the generation the
kernel fake reports.  Rule text becomes nft's JSON expressions here and the core's
``parse_rule`` decides what they mean, so the fake holds exactly what the codec would
read back from a kernel.  ``tests/properties/test_nftables_codec.py`` and the namespace
tests hold the real nft to the same shapes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fake_iptables import FakeIptables, FakeKernel
from pyrsistent import pmap, pvector

from masq.core.addresses import Family, IPNetwork, cidr_key
from masq.core.nftables.codec import parse_rule, render_rule
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
from masq.core.nftables.plan import apply_ops
from masq.core.traffic import Counters
from masq.shell.process import Completed, Stdin

_FAMILY_OF_TYPE = {v: k for k, v in ADDRESS_TYPE.items()}
_FAMILY_OF_PAYLOAD = {v: k for k, v in PAYLOAD.items()}
_NFT_FAMILIES = ("ip", "inet")
_ELEMENTS = re.compile(r"\{(.*)\}\s*$")
_HOOK = re.compile(
    r"type (\S+) hook (\S+) priority srcnat(?: ([+-]) (\d+))?; policy (accept|drop);"
)


class Refused(Exception):
    """What nft would print for a refused statement (the line is added by the caller)."""


# --- rule text <-> nft's JSON expressions ----------------------------------------


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _value(net: IPNetwork) -> Any:
    """A prefix as nft's JSON spells it: a bare address for a full-length one."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _network(text: str) -> IPNetwork:
    """A prefix; host bits are dropped, as nft does (``10.0.0.1/8`` is ``10.0.0.0/8``)."""
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Refused(f"syntax error, not a network: {text}") from None


def _int(text: str) -> int:
    if not text.isdigit():
        raise Refused(f"syntax error, unexpected {text}")
    return int(text)


class _Words:
    """A cursor over a rule's words."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = text.split()
        self.at = 0

    def next_is(self, *words: str) -> bool:
        return self.words[self.at : self.at + len(words)] == list(words)

    def take(self, n: int) -> list[str]:
        if self.at + n > len(self.words):
            raise Refused(f"syntax error, unexpected end of rule: {self.text}")
        got = self.words[self.at : self.at + n]
        self.at += n
        return got


def _fib(w: _Words) -> dict[str, Any]:
    if w.take(4) != ["fib", "daddr", "type", "local"]:
        raise Refused(f"syntax error in fib: {w.text}")
    return _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")


def _meta(w: _Words) -> dict[str, Any]:
    _, key, value = w.take(3)
    if key not in ("nfproto", "l4proto"):
        raise Refused(f"syntax error, unexpected {key}")
    return _match({"meta": {"key": key}}, value)


def _operand(w: _Words) -> list[str]:
    """One value, or an anonymous set's values (``{ a, b }``), quotes and commas dropped."""
    if not w.next_is("{"):
        return [w.take(1)[0].strip('"')]
    w.take(1)
    values: list[str] = []
    while not w.next_is("}"):
        values += [v.strip('"') for v in w.take(1)[0].split(",") if v]
    w.take(1)
    if not values:
        raise Refused(f"syntax error, empty set: {w.text}")
    return values


def _op(w: _Words) -> str:
    if w.next_is("!="):
        w.take(1)
        return "!="
    return "=="


def _set_or_value(values: list[Any]) -> Any:
    """As nft lists an anonymous set: one value bare, several in ``{"set": [...]}``."""
    return values[0] if len(values) == 1 else {"set": values}


def _payload(w: _Words) -> dict[str, Any]:
    protocol, where = w.take(2)
    if where not in ("daddr", "saddr"):
        raise Refused(f"syntax error, unexpected {where}")
    op = _op(w)
    targets = _operand(w)
    if targets[0].startswith("@"):
        return _match({"payload": {"protocol": protocol, "field": where}}, targets[0], op)
    nets = [_network(t) for t in targets]
    for net in nets:
        if _FAMILY_OF_PAYLOAD[protocol] != ("ipv4" if net.version == 4 else "ipv6"):
            raise Refused(f"datatype mismatch: {protocol} {where} {net}")
    if any(a != b and a.overlaps(b) for a in nets for b in nets):
        raise Refused(f"conflicting intervals specified: {w.text}")
    right = _set_or_value([_value(n) for n in nets])
    return _match({"payload": {"protocol": protocol, "field": where}}, right, op)


def _oifname(w: _Words) -> dict[str, Any]:
    """``oifname [!=] NAME`` or ``{ NAME, PREFIX*, ... }``: a trailing ``*`` is a prefix,
    and a name a prefix covers conflicts with it (interval elements), as nft says."""
    w.take(1)
    op = _op(w)
    names = _operand(w)
    for a in names:
        for b in names:
            if a != b and b.endswith("*") and a.removesuffix("*").startswith(b[:-1]):
                raise Refused(f"conflicting intervals specified: {w.text}")
    return _match({"meta": {"key": "oifname"}}, _set_or_value(names), op)


def _snat(w: _Words) -> dict[str, Any]:
    """``snat [ip|ip6] to ADDR[:PORTS] [fully-random]`` (ports need a transport match)."""
    w.take(1)
    spec: dict[str, Any] = {}
    if w.next_is("ip") or w.next_is("ip6"):
        spec["family"] = w.take(1)[0]
    if w.take(1) != ["to"]:
        raise Refused(f"syntax error in snat: {w.text}")
    target = w.take(1)[0]
    if target.startswith("["):
        address, _, ports = target[1:].partition("]:")
    elif target.count(":") == 1:
        address, _, ports = target.partition(":")
    else:
        address, ports = target, ""
    try:
        spec["addr"] = str(ipaddress.ip_address(address))
    except ValueError:
        raise Refused(f"syntax error, not an address: {target}") from None
    if ports:
        if "l4proto" not in w.text:
            raise Refused("transport protocol mapping is only valid after transport protocol match")
        first, _, last = ports.partition("-")
        spec["port"] = {"range": [_int(first), _int(last)]} if last else _int(first)
    if w.next_is("fully-random"):
        w.take(1)
        spec["flags"] = "fully-random"
    return {"snat": spec}


def _numgen(w: _Words) -> dict[str, Any]:
    _, mode, _, modulus = w.take(4)
    offset = _int(w.take(2)[1]) if w.next_is("offset") else 0
    op, bound = w.take(2)
    if mode != "random" or op not in ("<", "=="):
        raise Refused(f"syntax error in numgen: {w.text}")
    gen = {"mode": "random", "mod": _int(modulus), "offset": offset}
    return _match({"numgen": gen}, _int(bound), op)


def _masquerade(w: _Words) -> dict[str, Any]:
    w.take(1)
    spec: dict[str, Any] = {}
    if w.next_is("to"):
        ports = w.take(2)[1]
        if not ports.startswith(":"):
            raise Refused(f"syntax error, unexpected {ports}")
        first, _, last = ports[1:].partition("-")
        spec["port"] = {"range": [_int(first), _int(last)]} if last else _int(first)
    if w.next_is("fully-random"):
        w.take(1)
        spec["flags"] = "fully-random"
    return {"masquerade": spec or None}


def _counter(w: _Words) -> dict[str, Any]:
    w.take(1)
    return {"counter": {"packets": 0, "bytes": 0}}


def _verdict(w: _Words) -> dict[str, Any]:
    return {w.take(1)[0]: None}


_READERS: dict[str, Callable[[_Words], dict[str, Any]]] = {
    "fib": _fib,
    "meta": _meta,
    "ip": _payload,
    "ip6": _payload,
    "numgen": _numgen,
    "counter": _counter,
    "return": _verdict,
    "accept": _verdict,
    "drop": _verdict,
    "jump": lambda w: {"jump": {"target": w.take(2)[1]}},
    "masquerade": _masquerade,
    "oifname": _oifname,
    "snat": _snat,
}
"""Each word nft knows here at the start of an expression: the agent's grammar, plus the
verdicts and ``saddr`` matches a foreign rule may use."""


def rule_exprs(text: str) -> list[dict[str, Any]]:
    """The JSON expressions nft lists for a rule written as ``text``."""
    w = _Words(text)
    exprs: list[dict[str, Any]] = []
    while w.at < len(w.words):
        reader = _READERS.get(w.words[w.at])
        if reader is None:
            raise Refused(f"syntax error, unexpected {w.words[w.at]}")
        exprs.append(reader(w))
    if not exprs:
        raise Refused("syntax error, empty rule")
    return exprs


def listed_exprs(rule: NftRule, family: NftFamily) -> list[dict[str, Any]]:
    """A stored rule as nft lists it: ``meta nfproto`` that a payload match of the same
    protocol implies is left out in an ``inet`` table, as nft does."""
    if rule.verdict is None:
        loaded: list[dict[str, Any]] = json.loads(rule.text or "[]")
        return loaded
    if rule.nfproto is not None and rule.family == rule.nfproto and family == "inet":
        rule = replace(rule, nfproto=None)
    exprs = rule_exprs(render_rule(rule))
    if rule.counter and rule.counters is not None:
        for expr in exprs:
            if "counter" in expr:
                expr["counter"] = {"packets": rule.counters.packets, "bytes": rule.counters.bytes}
    return exprs


def parse_rule_text(text: str) -> NftRule:
    """A rule statement as the core's codec reads nft's listing of it (whether the table
    allows its protocols is the core model's to say)."""
    read: list[Mapping[str, Any]] = list(rule_exprs(text))
    return parse_rule(read)


# --- the JSON listing ---------------------------------------------------------------


def _set_json(table: NftTable, s: NftSet, handle: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "family": table.family,
        "name": s.name,
        "table": table.name,
        "type": ADDRESS_TYPE[s.family],
        "handle": handle,
    }
    if s.flags:
        body["flags"] = list(s.flags)
    elems: list[Any] = []
    for net in sorted(s.elements, key=cidr_key):
        if s.counter:
            count = s.counters.get(net, Counters(0, 0))
            counter = {"packets": count.packets, "bytes": count.bytes}
            elems.append({"elem": {"val": _value(net), "counter": counter}})
        else:
            elems.append(_value(net))
    elems += [json.loads(o) for o in s.opaque if o != "auto-merge"]
    if elems:
        body["elem"] = elems
    if s.counter:
        body["stmt"] = [{"counter": None}]
    if "auto-merge" in s.opaque:
        body["auto-merge"] = True
    return {"set": body}


def listing_json(table: NftTable) -> str:
    """``nft -j list table FAMILY NAME`` for ``table`` (nft 1.0.6's object order)."""
    objects: list[dict[str, Any]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": table.family, "name": table.name, "handle": 1}},
    ]
    handle = iter(range(2, 1 << 30))
    for name in sorted(table.sets):
        objects.append(_set_json(table, table.sets[name], next(handle)))
    where = {"family": table.family, "table": table.name}
    for name in sorted(table.chains):
        chain = table.chains[name]
        body: dict[str, Any] = {**where, "name": name, "handle": next(handle)}
        if chain.base is not None:
            b = chain.base
            body.update(type=b.type, hook=b.hook, prio=b.priority, policy=b.policy)
        objects.append({"chain": body})
    for name in sorted(table.chains):
        for rule in table.chains[name].rules:
            expr = listed_exprs(rule, table.family)
            objects.append({"rule": {**where, "chain": name, "handle": next(handle), "expr": expr}})
    return json.dumps({"nftables": objects})


# --- the batch -----------------------------------------------------------------------


def _family(word: str) -> NftFamily:
    if word not in _NFT_FAMILIES:
        raise Refused(f"syntax error, unexpected {word} (the fake knows ip and inet tables)")
    return "ip" if word == "ip" else "inet"


def _elements(text: str, family: Family | None) -> tuple[IPNetwork, ...]:
    """The elements in braces; each must be of the set's ``family`` (None: unknown yet)."""
    m = _ELEMENTS.search(text)
    if m is None:
        raise Refused("syntax error, elements need braces")
    nets = tuple(_network(e.strip()) for e in m.group(1).split(",") if e.strip())
    for net in nets:
        if family is not None and (net.version == 4) != (family == "ipv4"):
            raise Refused(f"datatype mismatch, expected {ADDRESS_TYPE[family]}: {net}")
    return nets


def _block_set(name: str, lines: list[str]) -> NftSet:
    family: Family | None = None
    flags: tuple[str, ...] = ()
    counter = False
    elements: tuple[IPNetwork, ...] = ()
    for line in lines:  # nft needs the type first: elements are read as that type
        words = line.split()
        if words[:1] == ["type"] and len(words) == 2 and words[1] in _FAMILY_OF_TYPE:
            family = _FAMILY_OF_TYPE[words[1]]
        elif words[:1] == ["flags"]:
            flags = tuple(w.strip(",") for w in words[1:])
        elif words == ["counter"]:
            counter = True
        elif words[:2] == ["elements", "="] and family is not None:
            elements = _elements(line, family)
        else:
            raise Refused(f"syntax error in set {name}: {line.strip()}")
    if family is None:
        raise Refused(f"set {name} needs a type")
    if elements and "interval" not in flags and any(e.num_addresses > 1 for e in elements):
        raise Refused(f"set {name}: a prefix needs the interval flag")
    return NftSet(name, family, frozenset(elements), flags, counter, kind=set_kind(name))


def _block_chain(family: NftFamily, name: str, lines: list[str]) -> NftChain:
    base = None
    rules = []
    for line in lines:
        if line.strip().startswith("type "):
            m = _HOOK.fullmatch(line.strip())
            if m is None or base is not None:
                raise Refused(f"syntax error in chain {name}: {line.strip()}")
            offset = int(m.group(4) or 0) * (-1 if m.group(3) == "-" else 1)
            base = BaseChain(m.group(1), m.group(2), SRCNAT_PRIORITY + offset, m.group(5))
        else:
            rules.append(parse_rule_text(line))
    return NftChain(name, base, pvector(rules))


def _block(head: list[str], body: Iterator[tuple[int, str]]) -> NftTable:
    """``table FAMILY NAME { set ... { ... } chain ... { ... } }``, up to its closing brace."""
    if len(head) != 4 or head[3] != "{":
        raise Refused("syntax error in table block")
    family = _family(head[1])
    sets: dict[str, NftSet] = {}
    chains: dict[str, NftChain] = {}
    for _, line in body:
        words = line.split()
        if words == ["}"]:
            return NftTable(family, head[2], pmap(sets), pmap(chains))
        if len(words) != 3 or words[0] not in ("set", "chain") or words[2] != "{":
            raise Refused(f"syntax error, unexpected {line.strip()}")
        inner = []
        for _, item in body:
            if item.split() == ["}"]:
                break
            inner.append(item)
        else:
            raise Refused("syntax error, unexpected end of file")
        if words[1] in sets or words[1] in chains:
            raise Refused(f"{words[0]} {words[1]} defined twice")
        if words[0] == "set":
            sets[words[1]] = _block_set(words[1], inner)
        else:
            chains[words[1]] = _block_chain(family, words[1], inner)
    raise Refused("syntax error, unexpected end of file")


def _statement(state: NftState, words: list[str], line: str) -> NftOp | None:
    """The core op for one statement against ``state`` (None: no change, as nft does)."""
    if len(words) < 4:
        raise Refused(f"syntax error, unexpected end of statement: {line.strip()}")
    verb, kind = words[:2]
    family = _family(words[2])
    table = state.tables.get(family)
    if (verb, kind) == ("add", "table") and len(words) == 4:
        if table is not None and table.name != words[3]:
            raise Refused("the fake holds one table per family")
        return None if table is not None else ReplaceTable(NftTable(family, words[3]))
    if (verb, kind) == ("delete", "table") and len(words) == 4:
        return DeleteTable(family, words[3])
    name, obj = words[3], words[4] if len(words) > 4 else ""
    if (verb, kind) in (("add", "element"), ("delete", "element")):
        target = table.sets.get(obj) if table is not None else None
        elements = _elements(line, target.family if target is not None else None)
        op = AddElements if verb == "add" else DeleteElements
        return op(family, name, obj, elements)
    if (verb, kind) == ("flush", "set") and len(words) == 5:
        current = table.sets.get(obj) if table is not None else None
        empty = NftSet(obj, current.family if current is not None else "ipv4", kind=set_kind(obj))
        return ReplaceSet(family, name, empty)
    if (verb, kind) == ("flush", "chain") and len(words) == 5:
        return ReplaceChain(family, name, NftChain(obj))
    if (verb, kind) == ("add", "rule") and len(words) > 5:
        rule = parse_rule_text(" ".join(words[5:]))
        chain = table.chains.get(obj) if table is not None and table.name == name else None
        rules = chain.rules if chain is not None else pvector()
        return ReplaceChain(family, name, NftChain(obj, rules=rules.append(rule)))
    if verb == "delete" and kind in ("set", "chain") and len(words) == 5:
        return _delete_object(table, family, name, kind, obj)
    raise Refused(f"syntax error, unexpected {verb} {kind}")


def _delete_object(
    table: NftTable | None, family: NftFamily, name: str, kind: str, obj: str
) -> NftOp:
    """``delete set``/``delete chain`` as the table without it (the core then refuses a
    rule left naming it); nft refuses to delete a chain that holds rules."""
    if table is None or table.name != name:
        raise Refused("Could not process rule: No such file or directory")
    if kind == "set":
        if obj not in table.sets:
            raise Refused("Could not process rule: No such file or directory")
        return ReplaceTable(replace(table, sets=table.sets.remove(obj)))
    chain = table.chains.get(obj)
    if chain is None:
        raise Refused("Could not process rule: No such file or directory")
    if chain.rules:
        raise Refused("Could not process rule: Device or resource busy")
    return ReplaceTable(replace(table, chains=table.chains.remove(obj)))


def _numbered(text: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.strip().startswith("#"):
            yield number, line


def run_batch(state: NftState, text: str) -> NftState:
    """The state after the batch ``text``, all of it or none: Refused names the line."""
    lines = _numbered(text)
    for number, line in lines:
        words = line.split()
        try:
            if words[0] == "table":
                block = _block(words, lines)
                present = state.tables.get(block.family)
                if present is not None and present.name != block.name:
                    raise Refused("the fake holds one table per family")
                if present is not None and (present.sets or present.chains):
                    raise Refused("the fake does not merge a table block into a full table")
                state = apply_ops(state, [ReplaceTable(block)])
                continue
            op = _statement(state, words, line)
            state = state if op is None else apply_ops(state, [op])
        except (Refused, ValueError) as error:
            caret = "^" * len(line.strip())
            indent = line[: len(line) - len(line.lstrip())]
            raise Refused(
                f"/dev/stdin:{number}:1-{len(caret)}: Error: {error}\n{line}\n{indent}{caret}"
            ) from None
    return state


@dataclass
class FakeNft:
    """nft over a kernel model; other programs go to ``iptables``.  Records every call.

    ``fail_next`` (exit code, stderr) entries are popped per batch, before it is read:
    a failure the model cannot produce (a transient one, a missing kernel feature).
    ``generation`` is the nf_tables generation id, bumped by each committed batch.
    """

    state: NftState = field(default_factory=NftState)
    generation: int = 1
    calls: list[list[str]] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    fail_next: list[tuple[int, str]] = field(default_factory=list)
    iptables: FakeIptables = field(default_factory=FakeIptables)

    def __call__(
        self, argv: list[str], stdin: Stdin = None, timeout: float | None = None
    ) -> Completed:
        if argv[0] != "nft":
            return self.iptables(argv, stdin)
        self.calls.append(argv)
        args = argv[1:]
        if args[-2:] == ["-f", "-"]:
            assert isinstance(stdin, int), "a batch must reach nft as a file, never a pipe"
            os.lseek(stdin, 0, os.SEEK_SET)
            text = os.read(stdin, 1 << 24).decode()
            self.batches.append(text)
            return self._batch(argv, text, check=args[0] == "-c")
        if args[:4] == ["-t", "-j", "list", "ruleset"] and len(args) == 5:
            held = [t for f, t in self.state.tables.items() if f == args[4]]
            terse = [
                replace(
                    t,
                    sets=pmap(
                        {
                            n: replace(s, elements=frozenset(), counters={})
                            for n, s in t.sets.items()
                        }
                    ),
                )
                for t in held
            ]
            objects = [o for t in terse for o in json.loads(listing_json(t))["nftables"][1:]]
            meta = {"metainfo": {"version": "1.0.6", "json_schema_version": 1}}
            return self._done(argv, json.dumps({"nftables": [meta, *objects]}))
        if args == ["list", "tables"]:
            tables = sorted((t.family, t.name) for t in self.state.tables.values())
            return self._done(argv, "".join(f"table {f} {n}\n" for f, n in tables))
        if args[:3] == ["-j", "list", "table"] and len(args) == 5:
            table = self.find(args[3], args[4])
            if table is None:
                missing = f"Error: No such file or directory\nlist table {args[3]} {args[4]}\n"
                return Completed(tuple(argv), 1, "", missing)
            return self._done(argv, listing_json(table))
        return Completed(tuple(argv), 1, "", f"Error: syntax error: {' '.join(args)}\n")

    def find(self, family: str, name: str) -> NftTable | None:
        found = [t for f, t in self.state.tables.items() if f == family and t.name == name]
        return found[0] if found else None

    def _done(self, argv: list[str], stdout: str) -> Completed:
        return Completed(tuple(argv), 0, stdout, "")

    def _batch(self, argv: list[str], text: str, *, check: bool) -> Completed:
        if self.fail_next:
            code, err = self.fail_next.pop(0)
            return Completed(tuple(argv), code, "", err)
        try:
            after = run_batch(self.state, text)
        except Refused as error:
            return Completed(tuple(argv), 1, "", f"{error}\n")
        if not check:
            self.state = after
            self.generation += 1
        return self._done(argv, "")

    def write(self, batch: str) -> None:
        """Another writer's batch to the agent's table (it must be accepted)."""
        self.state = run_batch(self.state, batch)
        self.generation += 1

    def commit_elsewhere(self) -> None:
        """Another writer's commit to a table the fake does not hold: the generation moves."""
        self.generation += 1

    def nft_calls(self) -> list[str]:
        return [" ".join(c[1:3]) for c in self.calls]

    def kernel(self) -> NftKernel:
        """The netlink answers of a kernel holding this fake's tables."""
        return NftKernel(nft=self)


@dataclass
class NftKernel(FakeKernel):
    """``FakeKernel`` whose tables and generation are the fake nft's."""

    nft: FakeNft = field(default_factory=FakeNft)

    def generation(self) -> int | None:
        return self.nft.generation

    def table_exists(self, family: str, name: str) -> bool | None:
        return self.nft.find(family, name) is not None
