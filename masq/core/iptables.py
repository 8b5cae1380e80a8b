"""iptables spelling of the model: rule text, save parsing, restore scripts.

``render_rule`` prints a rule exactly as ``iptables-save`` does (option order,
comment quoting), so what we write is what we read back and a steady-state
sync compares equal.  ``parse_save`` reads only what the agent owns.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import replace

from pyrsistent import pmap, pvector
from returns.result import Failure, Result, Success

from masq.core.model import (
    POSTROUTING,
    AppendRule,
    Chain,
    Counters,
    CreateChain,
    DeleteChain,
    DeleteRule,
    DeleteRuleAt,
    Family,
    FlushChain,
    InsertRule,
    IPNetwork,
    Op,
    Rule,
    Ruleset,
)
from masq.core.ports import RESERVED_TARGETS
from masq.core.ruleset import PROBABILITY_SCALE

_NO_QUOTE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"([\"'\\])")
_COUNTERS = re.compile(r"\[(\d+):(\d+)\]")
_DIGITS = re.compile(r"\d+")
_STRING_OPTIONS = frozenset({"--comment", "--log-prefix", "--nflog-prefix", "--string"})
_TARGETS = {"RETURN": "RETURN", "MASQUERADE": "MASQUERADE"}


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
    if rule.destination is not None and rule.destination.prefixlen > 0:
        words += ["-d", render_network(rule.destination)]
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
    if rule.to_ports is not None:
        words += ["--to-ports", rule.to_ports]
    if rule.random_fully:
        words.append("--random-fully")
    return " ".join(words)


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


def split_words(line: str) -> Result[list[tuple[str, int, int]], str]:
    """iptables-restore's tokenizer: words with their (start, end) offsets in ``line``.

    Double quotes group, a backslash escapes the next character.
    """
    fast = _simple_words(line)
    return Success(fast) if fast is not None else split_words_slow(line)


def split_words_slow(line: str) -> Result[list[tuple[str, int, int]], str]:
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
        return Failure(f"unterminated quote or escape in {line!r}")
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


def _probability(text: str) -> float | None:
    try:
        p = float(text)
    except ValueError:
        return None
    if not 0.0 <= p <= 1.0:
        return None
    return round(p * PROBABILITY_SCALE) / PROBABILITY_SCALE


def _model_rule(words: list[str], family: Family) -> Rule | None:
    """The rule the words spell, if they spell it in render_spec's grammar; else None."""
    w = list(words)
    fields: dict[str, object] = {}

    def take(*expected: str) -> bool:
        if w[: len(expected)] == list(expected):
            del w[: len(expected)]
            return True
        return False

    if len(w) >= 2 and w[0] == "-d":
        net = _network(w[1], family)
        if net is None:
            return None
        fields["destination"] = net
        del w[:2]
    if len(w) >= 2 and w[0] == "-p" and w[1] in {"tcp", "udp", "sctp"}:
        fields["protocol"] = w[1]
        del w[:2]
    comment = ""
    if len(w) >= 4 and take("-m", "comment", "--comment"):
        comment = w.pop(0)
    if take("-m", "addrtype", "!", "--dst-type", "LOCAL"):
        fields["not_local"] = True
    if len(w) >= 6 and take("-m", "statistic", "--mode", "random", "--probability"):
        p = _probability(w.pop(0))
        if p is None:
            return None
        fields["probability"] = p
    if len(w) < 2 or w[0] != "-j":
        return None
    target = w[1]
    del w[:2]
    if target in _TARGETS:
        action = _TARGETS[target]
    elif target in RESERVED_TARGETS or target.startswith("-"):
        return None  # ACCEPT, SNAT, ...: a target the model does not express
    else:
        action = "JUMP"
        fields["jump_chain"] = target
    if action == "MASQUERADE" and len(w) >= 2 and w[0] == "--to-ports":
        fields["to_ports"] = w[1]
        del w[:2]
    if action == "MASQUERADE" and take("--random-fully"):
        fields["random_fully"] = True
    if w:
        return None
    return Rule(action=action, comment=comment, **fields)  # type: ignore[arg-type]


def _target(words: list[str]) -> str | None:
    """The user chain an opaque rule jumps or goes to (None for verdicts and extensions)."""
    for i, word in enumerate(words[:-1]):
        if i > 0 and words[i - 1] in _STRING_OPTIONS:
            continue  # a comment that reads "-j"
        if word in {"-j", "--jump", "-g", "--goto"} and words[i + 1] not in RESERVED_TARGETS:
            return words[i + 1]
    return None


def parse_rule_words(spec: str, family: Family) -> Result[tuple[Rule, Counters | None], str]:
    """A rule from the text after ``-A CHAIN``: modelled if it fits, else OTHER (opaque)."""
    tokenized = split_words(spec)
    if isinstance(tokenized, Failure):
        return Failure(tokenized.failure())
    tokens = tokenized.unwrap()
    counters: Counters | None = None
    kept: list[tuple[str, int, int]] = []
    i = 0
    while i < len(tokens):
        # "-c" is inline counters (iptables -S -v) unless it is a string option's value.
        if tokens[i][0] == "-c" and (i == 0 or tokens[i - 1][0] not in _STRING_OPTIONS):
            if i + 2 >= len(tokens) or not all(
                _DIGITS.fullmatch(t[0]) for t in tokens[i + 1 : i + 3]
            ):
                return Failure(f"malformed counters in {spec!r}")
            counters = Counters(int(tokens[i + 1][0]), int(tokens[i + 2][0]))
            i += 3
            continue
        kept.append(tokens[i])
        i += 1
    words = [t[0] for t in kept]
    if not words:
        return Failure("empty rule")
    rule = _model_rule(words, family)
    if rule is None:
        raw = " ".join(spec[s:e] for _, s, e in kept)
        rule = Rule(action="OTHER", comment="", jump_chain=_target(words), spec=raw)
    return Success((rule, counters))


def _owned_jump(rule: Rule, chain: str) -> bool:
    return rule.jump_chain == chain


def parse_save(text: str, chain: str, family: Family) -> Result[Ruleset, str]:
    """Parse ``iptables-save -t nat`` (or ``iptables -S CHAIN -v``) text into what the agent owns.

    Accepts full ``iptables-save [-c]`` output or concatenated ``-S`` listings.
    The result always holds POSTROUTING (only the rules that jump to ``chain``)
    and holds ``chain`` only if the text declares it.
    """
    table: str | None = None
    exists = False
    post: list[Rule] = []
    ours: list[Rule] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        where = f"line {number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            continue
        if line == "COMMIT":
            table = None
            continue
        if table not in (None, "nat"):
            continue
        counters: Counters | None = None
        m = _COUNTERS.match(line)
        if m:
            counters = Counters(int(m.group(1)), int(m.group(2)))
            line = line[m.end() :].lstrip()
        if line.startswith(":"):
            name = line[1:].split(" ", 1)[0]
            exists = exists or name == chain
            continue
        head, _, rest = line.partition(" ")
        name, _, spec = rest.strip().partition(" ")
        if head in {"-N", "-P"} and name:
            exists = exists or (head == "-N" and name == chain)
            continue
        if head != "-A" or not name or not spec.strip():
            return Failure(f"{where}: unexpected text {raw_line!r}")
        if name not in (chain, POSTROUTING):
            continue
        parsed = parse_rule_words(spec.strip(), family)
        if isinstance(parsed, Failure):
            return Failure(f"{where}: {parsed.failure()}")
        rule, inline = parsed.unwrap()
        if inline or counters:
            rule = replace(rule, counters=inline or counters)
        if name == chain:
            exists = True
            ours.append(rule)
        elif _owned_jump(rule, chain):
            post.append(rule)
    chains = {POSTROUTING: Chain(POSTROUTING, pvector(post))}
    if exists:
        chains[chain] = Chain(chain, pvector(ours))
    return Success(Ruleset(family=family, chains=pmap(chains)))


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
