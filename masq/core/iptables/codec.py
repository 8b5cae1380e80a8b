"""iptables spelling of the model: rule text, save parsing, restore scripts.

``render_rule`` prints a rule exactly as ``iptables-save`` does (option order,
comment quoting), so what we write is what we read back and a steady-state
sync compares equal.  ``parse_save`` reads only what the agent owns.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pyrsistent import pmap, pvector
from returns.result import Failure, Result, Success

from masq.core.addresses import Family, IPAddress, IPNetwork
from masq.core.egress import WILDCARD, is_pattern, parse_interface
from masq.core.errors import ConfigError, invalid
from masq.core.iptables.model import (
    Action,
    AppendRule,
    Chain,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DeleteRuleAt,
    FlushChain,
    InsertRule,
    Op,
    Rule,
    Ruleset,
)
from masq.core.iptables.rules import role_of
from masq.core.names import POSTROUTING, RESERVED_TARGETS
from masq.core.nat import TO_PORTS_PROTOCOLS, PortRange, kernel_probability, parse_port_range
from masq.core.traffic import Counters

_NO_QUOTE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"([\"'\\])")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")
_DIGITS = re.compile(r"\d+")
_STRING_OPTIONS = frozenset({"--comment", "--log-prefix", "--nflog-prefix", "--string"})
_VERDICTS: dict[str, Action] = {"RETURN": "RETURN", "MASQUERADE": "MASQUERADE", "SNAT": "SNAT"}


def quote(value: str) -> str:
    """libxtables' xtables_save_string: bare if [A-Za-z0-9_-]+, else quoted and escaped."""
    if _NO_QUOTE.fullmatch(value):
        return value
    return '"' + _ESCAPE.sub(r"\\\1", value) + '"'


def _ntop6(addr: ipaddress.IPv6Address) -> str:
    """glibc inet_ntop: like Python's, but embedded IPv4 for ::a.b.c.d and ::ffff:a.b.c.d."""
    words = addr.packed
    if words[:10] == bytes(10) and (words[10:12] == b"\xff\xff" or words[10:12] == bytes(2)):
        v4 = ipaddress.IPv4Address(words[12:])
        if words[10:12] == b"\xff\xff":
            return f"::ffff:{v4}"
        if words[12:14] != bytes(2):  # best zero run is exactly 6 words
            return f"::{v4}"
    return str(addr)


def render_network(net: IPNetwork) -> str:
    if isinstance(net, ipaddress.IPv6Network):
        return f"{_ntop6(net.network_address)}/{net.prefixlen}"
    return str(net)


def render_spec(rule: Rule) -> str:
    """The rule's options after ``-A CHAIN``, in iptables-save's order."""
    if rule.action == "OTHER":
        if rule.spec is None:
            raise ValueError("an OTHER rule needs its spec")
        return rule.spec
    words: list[str] = []
    if rule.source is not None and rule.source.prefixlen > 0:
        words += ["-s", render_network(rule.source)]
    if rule.destination is not None and rule.destination.prefixlen > 0:
        words += ["-d", render_network(rule.destination)]
    if rule.out_interface is not None:
        words += ["-o", render_interface(rule.out_interface)]
    if rule.protocol is not None:
        words += ["-p", rule.protocol]
    if rule.comment:
        words += ["-m", "comment", "--comment", quote(rule.comment)]
    if rule.not_local:
        words += ["-m", "addrtype", "!", "--dst-type", "LOCAL"]
    if rule.probability is not None:
        words += [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            f"{rule.probability:.11f}",
        ]
    if rule.action == "JUMP":
        if rule.jump_chain is None:
            raise ValueError("a JUMP rule needs its jump_chain")
        words += ["-j", rule.jump_chain]
    else:
        words += ["-j", rule.action]
    if rule.action == "SNAT":
        if rule.to_source is None:
            raise ValueError("an SNAT rule needs its to_source")
        words += ["--to-source", _to_source(rule.to_source, rule.to_ports)]
    elif rule.to_ports is not None:
        words += ["--to-ports", str(rule.to_ports)]
    if rule.random_fully:
        words.append("--random-fully")
    return " ".join(words)


def render_interface(interface: str) -> str:
    """The config's trailing ``*`` is iptables' ``+`` (names hold neither otherwise)."""
    return interface.removesuffix(WILDCARD) + "+" if is_pattern(interface) else interface


def _to_source(address: IPAddress, ports: PortRange | None) -> str:
    text = _ntop6(address) if isinstance(address, ipaddress.IPv6Address) else str(address)
    if ports is None:
        return text
    return f"[{text}]:{ports}" if address.version == 6 else f"{text}:{ports}"


def render_rule(chain: str, rule: Rule) -> str:
    """One ``-A`` line exactly as iptables-save prints it (without counters)."""
    return f"-A {chain} {render_spec(rule)}"


# --- parsing ---------------------------------------------------------------


_SIMPLE_WORD = re.compile(r'[ \t]*(?:"([^"\\]*)"|([^\s"\\]+))(?=[ \t]|$)')
_BLANK = re.compile(r"[ \t]*")


def _simple_words(line: str) -> list[tuple[str, int, int]] | None:
    """The common case without backslashes or mid-word quotes; None sends it the slow way."""
    words: list[tuple[str, int, int]] = []
    pos = 0
    for m in _SIMPLE_WORD.finditer(line):
        if m.start() != pos:
            return None
        pos = m.end()
        quoted, bare = m.groups()
        if bare is not None:
            words.append((bare, pos - len(bare), pos))
        else:
            words.append((quoted, pos - len(quoted) - 2, pos))
    return words if _BLANK.fullmatch(line, pos) else None


def split_words(line: str) -> Result[list[tuple[str, int, int]], ConfigError]:
    """iptables-restore's tokenizer: words with their (start, end) offsets in ``line``.

    Double quotes group, a backslash escapes the next character.
    """
    fast = _simple_words(line)
    return Success(fast) if fast is not None else split_words_slow(line)


def split_words_slow(line: str) -> Result[list[tuple[str, int, int]], ConfigError]:
    """The general tokenizer, a character at a time (the fast path must agree with it)."""
    words: list[tuple[str, int, int]] = []
    buf: list[str] = []
    start = -1
    quoted = escaped = False
    for i, ch in enumerate(line):
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
            start = i if start < 0 else start
        elif ch == '"':
            quoted = not quoted
            start = i if start < 0 else start
        elif ch in " \t" and not quoted:
            if start >= 0:
                words.append(("".join(buf), start, i))
                buf, start = [], -1
        else:
            buf.append(ch)
            start = i if start < 0 else start
    if quoted or escaped:
        return Failure(invalid("unterminated quote or escape", line))
    if start >= 0:
        words.append(("".join(buf), start, len(line)))
    return Success(words)


def _network(text: str, family: Family) -> IPNetwork | None:
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None
    if (net.version == 4) != (family == "ipv4") or "/" not in text or net.prefixlen == 0:
        return None
    return net


class _Words:
    """A cursor over a rule's words, taking them in render_spec's order."""

    def __init__(self, words: list[str]) -> None:
        self._words = words
        self._at = 0

    @property
    def done(self) -> bool:
        return self._at == len(self._words)

    def take(self, *expected: str) -> bool:
        if tuple(self._words[self._at : self._at + len(expected)]) == expected:
            self._at += len(expected)
            return True
        return False

    def option(self, *flag: str) -> str | None:
        """The word after ``flag``, both taken, if the words continue that way."""
        if len(self._words) - self._at > len(flag) and self.take(*flag):
            self._at += 1
            return self._words[self._at - 1]
        return None


@dataclass(frozen=True, slots=True)
class _Matches:
    source: IPNetwork | None
    destination: IPNetwork | None
    out_interface: str | None
    protocol: str | None
    comment: str
    not_local: bool
    probability: float | None


def _interface(text: str) -> str | None:
    """An ``-o`` value the agent writes, in the config's spelling (None: not one of ours)."""
    name = text.removesuffix("+") + WILDCARD if text.endswith("+") else text
    return parse_interface(name).value_or(None)


def _read_matches(words: _Words, family: Family) -> _Matches | None:
    source_text = words.option("-s")
    source = None if source_text is None else _network(source_text, family)
    destination_text = words.option("-d")
    destination = None if destination_text is None else _network(destination_text, family)
    interface_text = words.option("-o")
    out_interface = None if interface_text is None else _interface(interface_text)
    protocol = words.option("-p")
    comment = words.option("-m", "comment", "--comment")
    not_local = words.take("-m", "addrtype", "!", "--dst-type", "LOCAL")
    probability_text = words.option("-m", "statistic", "--mode", "random", "--probability")
    probability = None if probability_text is None else _probability(probability_text)
    if (
        (destination_text is not None and destination is None)
        or (source_text is not None and source is None)
        or (interface_text is not None and out_interface is None)
        or (protocol is not None and protocol not in TO_PORTS_PROTOCOLS)
        or (probability_text is not None and probability is None)
    ):
        return None
    return _Matches(
        source=source,
        destination=destination,
        out_interface=out_interface,
        protocol=protocol,
        comment=comment or "",
        not_local=not_local,
        probability=probability,
    )


_TO_SOURCE = re.compile(r"\[([0-9a-fA-F:.]+)\]:(.+)|([0-9a-fA-F:.]+?)(?::(\d+-?\d*))?")


def _read_to_source(text: str | None, family: Family) -> tuple[IPAddress, str | None] | None:
    """``--to-source ADDR``, ``A.B.C.D:PORTS`` or ``[V6]:PORTS``: the address and port text
    (None: not a single address of ``family`` as the agent writes it)."""
    if text is None:
        return None
    m = _TO_SOURCE.fullmatch(text)
    if m is None:
        return None
    bracketed, bracket_ports, bare, bare_ports = m.groups()
    address_text, ports = (bracketed, bracket_ports) if bracketed else (bare, bare_ports)
    if family == "ipv6" and bare is not None:
        address_text, ports = text, None  # a bare IPv6 address carries no ports
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return None
    if (address.version == 4) != (family == "ipv4"):
        return None
    return address, ports


def _probability(text: str) -> float | None:
    try:
        p = float(text)
    except ValueError:
        return None
    return kernel_probability(p) if 0.0 <= p <= 1.0 else None


def _model_rule(tokens: list[str], family: Family) -> Rule | None:
    """The rule the words spell, if they spell it in render_spec's grammar; else None."""
    words = _Words(tokens)
    matches = _read_matches(words, family)
    target = words.option("-j")
    if matches is None or target is None or target.startswith("-"):
        return None
    if target not in _VERDICTS and target in RESERVED_TARGETS:
        return None  # ACCEPT, SNAT, ...: a target the model does not express
    action: Action = _VERDICTS.get(target, "JUMP")
    to_source: IPAddress | None = None
    ports_text: str | None = None
    if action == "SNAT":
        snat = _read_to_source(words.option("--to-source"), family)
        if snat is None:
            return None
        to_source, ports_text = snat
    elif action == "MASQUERADE":
        ports_text = words.option("--to-ports")
    to_ports = None if ports_text is None else parse_port_range(ports_text).value_or(None)
    random_fully = action in ("MASQUERADE", "SNAT") and words.take("--random-fully")
    if not words.done or (ports_text is not None and to_ports is None):
        return None
    jump_chain = target if action == "JUMP" else None
    return Rule(
        action=action,
        comment=matches.comment,
        destination=matches.destination,
        source=matches.source,
        out_interface=matches.out_interface,
        not_local=matches.not_local,
        jump_chain=jump_chain,
        protocol=matches.protocol,
        probability=matches.probability,
        to_ports=to_ports,
        random_fully=random_fully,
        to_source=to_source,
        role=role_of(action, matches.comment, jump_chain, matches.destination),
    )


def _target(words: list[str]) -> str | None:
    """The user chain an opaque rule jumps or goes to (None for verdicts and extensions)."""
    for i, word in enumerate(words[:-1]):
        if i > 0 and words[i - 1] in _STRING_OPTIONS:
            continue  # a comment that reads "-j"
        if word in {"-j", "--jump", "-g", "--goto"} and words[i + 1] not in RESERVED_TARGETS:
            return words[i + 1]
    return None


def _inline_counters(
    tokens: list[tuple[str, int, int]],
) -> Result[tuple[list[tuple[str, int, int]], Counters | None], ConfigError]:
    """The words without ``-c PACKETS BYTES`` (``iptables -S -v``), and those counters."""
    counters: Counters | None = None
    kept: list[tuple[str, int, int]] = []
    i = 0
    while i < len(tokens):
        # "-c" is inline counters unless it is a string option's value.
        if tokens[i][0] == "-c" and (i == 0 or tokens[i - 1][0] not in _STRING_OPTIONS):
            numbers = [t[0] for t in tokens[i + 1 : i + 3]]
            if len(numbers) < 2 or not all(_DIGITS.fullmatch(n) for n in numbers):
                return Failure(invalid("malformed counters"))
            counters = Counters(int(numbers[0]), int(numbers[1]))
            i += 3
            continue
        kept.append(tokens[i])
        i += 1
    return Success((kept, counters))


def parse_rule_words(
    spec: str, family: Family
) -> Result[tuple[Rule, Counters | None], ConfigError]:
    """A rule from the text after ``-A CHAIN``: modelled if it fits, else OTHER (opaque)."""

    def to_rule(
        found: tuple[list[tuple[str, int, int]], Counters | None],
    ) -> Result[tuple[Rule, Counters | None], ConfigError]:
        kept, counters = found
        words = [t[0] for t in kept]
        if not words:
            return Failure(invalid("empty rule"))
        rule = _model_rule(words, family)
        if rule is None:
            raw = " ".join(spec[s:e] for _, s, e in kept)
            rule = Rule(action="OTHER", comment="", jump_chain=_target(words), spec=raw)
        return Success((rule, counters))

    return (
        split_words(spec).bind(_inline_counters).bind(to_rule).alt(lambda e: replace(e, value=spec))
    )


@dataclass
class _Listing:
    """What ``parse_save`` has read so far of the agent's part of the nat table."""

    chain: str
    family: Family
    table: str | None = None
    exists: bool = False
    post: list[Rule] = field(default_factory=list)
    ours: list[Rule] = field(default_factory=list)

    def read(self, line: str) -> Result[None, ConfigError]:
        """Take one non-blank line of ``iptables-save`` or ``-S`` output."""
        if line.startswith("*") or line == "COMMIT":
            self.table = line[1:] if line.startswith("*") else None
            return Success(None)
        if self.table not in (None, "nat"):
            return Success(None)
        counters: Counters | None = None
        if m := _COUNTERS.match(line):
            counters = Counters(int(m.group(1)), int(m.group(2)))
            line = line[m.end() :].lstrip()
        head, _, rest = line.partition(" ")
        name, _, spec = rest.strip().partition(" ")
        if head.startswith(":") or (head in {"-N", "-P"} and name):
            declared = head[1:] if head.startswith(":") else name
            self.exists = self.exists or (declared == self.chain and head != "-P")
            return Success(None)
        if head != "-A" or not name or not spec.strip():
            return Failure(invalid("unexpected text"))
        if name not in (self.chain, POSTROUTING):
            return Success(None)
        return parse_rule_words(spec.strip(), self.family).map(
            lambda parsed: self._keep(name, parsed[0], parsed[1] or counters)
        )

    def _keep(self, name: str, rule: Rule, counters: Counters | None) -> None:
        if counters is not None:
            rule = replace(rule, counters=counters)
        if name == self.chain:
            self.exists = True
            self.ours.append(rule)
        elif rule.jump_chain == self.chain:
            self.post.append(rule)

    def ruleset(self) -> Ruleset:
        chains = {POSTROUTING: Chain(POSTROUTING, pvector(self.post))}
        if self.exists:
            chains[self.chain] = Chain(self.chain, pvector(self.ours))
        return Ruleset(family=self.family, chains=pmap(chains))


def parse_save(text: str, chain: str, family: Family) -> Result[Ruleset, ConfigError]:
    """Parse ``iptables-save -t nat`` (or ``iptables -S CHAIN -v``) text into what the agent owns.

    Accepts full ``iptables-save [-c]`` output or concatenated ``-S`` listings.
    The result always holds POSTROUTING (only the rules that jump to ``chain``)
    and holds ``chain`` only if the text declares it.  A failure names the line.
    """
    listing = _Listing(chain, family)
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        read = listing.read(line)
        if isinstance(read, Failure):
            return Failure(replace(read.failure(), key=f"line {number}", value=raw_line))
    return Success(listing.ruleset())


# --- restore scripts -------------------------------------------------------


def render_op(op: Op) -> str:
    """One iptables-restore line for ``op``."""
    match op:
        case CreateChain(chain=c):
            return f":{c} - [0:0]"
        case FlushChain(chain=c):
            return f"-F {c}"
        case DeleteChain(chain=c):
            return f"-X {c}"
        case AppendRule(chain=c, rule=r):
            return render_rule(c, r)
        case InsertRule(chain=c, position=p, rule=r):
            return f"-I {c} {p} {render_spec(r)}"
        case DeleteRuleAt(chain=c, position=p):
            return f"-D {c} {p}"
        case DeleteRule(chain=c, rule=r):
            return f"-D {c} {render_spec(r)}"
    raise TypeError(f"not an op: {op!r}")


def render_restore(ops: Sequence[Op]) -> str:
    """One ``iptables-restore --noflush`` transaction for the nat table ("" for no ops)."""
    if not ops:
        return ""
    return "".join(["*nat\n", *(render_op(op) + "\n" for op in ops), "COMMIT\n"])


def render_ops_readable(ops: Sequence[Op]) -> str:
    """For ``--dry-run``: one line per op, a sign for what it does, then the restore line."""
    signs = {CreateChain: "*", FlushChain: "*", DeleteChain: "-", AppendRule: "+"}
    lines = []
    for op in ops:
        sign = signs.get(type(op), "-" if isinstance(op, DeleteRuleAt | DeleteRule) else "+")
        lines.append(f"{sign} {render_op(op)}\n")
    return "".join(lines)
