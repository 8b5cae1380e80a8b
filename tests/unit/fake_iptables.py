"""A strict stand-in for the iptables binaries: restores change a model of the nat table.

``iptables-restore`` scripts are read line by line (``*nat``, ``:CHAIN``, ``-N``, ``-A``,
``-I``, ``-D``, ``-F``, ``-X``, ``COMMIT``), each rule's words by the core's own parser
(``parse_rule_words``), and every line becomes one op of the core's model, applied with
the core's ``apply_ops``: the fake refuses what that model says the kernel refuses (an
unknown chain, deleting a rule that is not there, a position out of range, ``-X`` of a
referenced or non-empty chain, a jump to a missing chain), and also bad syntax, a table
other than nat and a missing ``COMMIT``; a refused script changes nothing.  Listings
(``-S CHAIN [-v]``, ``-save``) are printed from that state, one nat table per family.

Its listings are rendered with the project's own ``render_rule``, so the shell's unit tests
that use it see whatever the codec writes and cannot catch a rendering bug: there, a wrong
spelling would read back just as it was written.  Rendering is pinned to what the real
tools print elsewhere: ``tests/unit/test_upstream_rules.py`` writes rules with
``iptables-restore`` and compares ``iptables-save`` output byte for byte with
``render_rule`` (both families, nft and legacy, comments that need quoting and escaping),
in a throwaway network namespace, and fails rather than skips under ``CI=true``; the
integration tests compare the agent's rules in the kernel with text written out
independently (``tests/integration/expected.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from pyrsistent import pmap
from returns.result import Failure

from masq.core.addresses import FAMILIES, Family
from masq.core.iptables.codec import parse_rule_words, render_spec
from masq.core.iptables.model import (
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
from masq.core.iptables.plan import apply_ops
from masq.core.names import BUILTIN_CHAINS, POSTROUTING
from masq.shell.process import Completed, Stdin


class Refused(Exception):
    """Why iptables-restore refuses a line (the line number is added by the caller)."""


def empty_nat(family: Family) -> Ruleset:
    """A nat table holding nothing: POSTROUTING without rules."""
    return Ruleset(family, pmap({POSTROUTING: Chain(POSTROUTING)}))


_OPTIONS = frozenset(
    [
        "-s",
        "-d",
        "-p",
        "-i",
        "-o",
        "-m",
        "-j",
        "-g",
        "!",
        "--comment",
        "--dst-type",
        "--src-type",
        "--mode",
        "--probability",
        "--to-ports",
        "--random-fully",
        "--random",
        "--to-source",
        "--to-destination",
        "--sport",
        "--dport",
    ]
)
"""The options a rule may use here: the agent's and those of the foreign rules tests write
(the core reads any other rule as opaque; iptables would refuse an unknown option)."""


def _check_opaque(words: list[str], family: Family) -> None:
    for i, word in enumerate(words):
        if words[i - 1 : i] in (["--comment"], ["--to-ports"], ["--to-source"]):
            continue  # a value
        if word.startswith("-") and word not in _OPTIONS:
            raise Refused(f'unknown option "{word}"')
        if words[i - 1 : i] in (["-s"], ["-d"]):
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                raise Refused(f"host/network `{word}' not found") from None
            if (net.version == 4) != (family == "ipv4"):
                raise Refused(f"host/network `{word}' not found")


def _rule(spec: str, family: Family) -> Rule:
    parsed = parse_rule_words(spec, family)
    if isinstance(parsed, Failure):
        raise Refused(f"Bad argument: {parsed.failure().reason}")
    rule, _counters = parsed.unwrap()
    if rule.spec is not None:
        _check_opaque(rule.spec.split(), family)
    return rule


def _line_op(line: str, family: Family, chains: set[str]) -> Op | None:
    """The core op for one restore line (None: a built-in policy line, no change)."""
    if line.startswith(":"):
        name, _, rest = line[1:].partition(" ")
        policy = rest.split(" ", 1)[0]
        if name in BUILTIN_CHAINS:
            if policy not in ("ACCEPT", "DROP"):
                raise Refused(f"Bad built-in chain policy {policy}")
            return None
        if policy != "-":
            raise Refused("Can't set policy on a user chain")
        return CreateChain(name)
    words = line.split(None, 2)
    if len(words) < 2 or words[0] not in ("-N", "-A", "-I", "-D", "-F", "-X"):
        raise Refused(f"unknown command: {line}")
    command, chain = words[0], words[1]
    rest = words[2] if len(words) > 2 else ""
    if command == "-N":
        if rest or chain in chains or chain in BUILTIN_CHAINS:
            raise Refused("Chain already exists.")
        return CreateChain(chain)
    if command in ("-F", "-X"):
        if rest:
            raise Refused(f"Bad argument `{rest}'")
        return FlushChain(chain) if command == "-F" else DeleteChain(chain)
    head, _, tail = rest.partition(" ")
    if command == "-A":
        return AppendRule(chain, _rule(rest, family))
    if command == "-I":
        if head.isdigit():
            return InsertRule(chain, int(head), _rule(tail, family))
        return InsertRule(chain, 1, _rule(rest, family))
    if head.isdigit() and not tail:
        return DeleteRuleAt(chain, int(head))
    return DeleteRule(chain, _rule(rest, family))


def restore(ruleset: Ruleset, script: str) -> Ruleset:
    """The nat table after ``iptables-restore --noflush`` of ``script``, all or nothing.

    Refused says which line failed and why, as iptables-restore does."""
    table: str | None = None
    committed = False
    chains = ruleset
    number = 0
    lines = [ln.strip() for ln in script.splitlines()]
    if not any(ln and not ln.startswith("#") for ln in lines):
        return ruleset  # nothing to do, as iptables-restore says for empty input
    for number, line in enumerate(lines, start=1):
        if not line or line.startswith("#"):
            continue
        try:
            if line.startswith("*"):
                if table is not None:
                    raise Refused("no COMMIT before the next table")
                if line != "*nat":
                    raise Refused(f"the fake holds the nat table only, not {line[1:]}")
                table, committed = line[1:], False
            elif line == "COMMIT":
                if table is None:
                    raise Refused("COMMIT outside a table")
                table, committed = None, True
            elif table is None:
                raise Refused("no table given (*nat)")
            else:
                op = _line_op(line, ruleset.family, set(chains.chains))
                chains = chains if op is None else apply_ops(chains, [op])
        except (Refused, ValueError) as error:
            raise Refused(f"line {number} failed: {error}") from None
    if table is not None or not committed:
        raise Refused(f"COMMIT expected at line {number + 1}")
    return chains


def _with_counters(text: str, rule: Rule) -> str:
    """``-c PACKETS BYTES`` where ``-S -v`` prints it: before the target."""
    count = rule.counters
    packets, nbytes = (count.packets, count.bytes) if count is not None else (0, 0)
    head, jump, target = text.rpartition(" -j ")
    counters = f"-c {packets} {nbytes}"
    return f"{head} {counters}{jump}{target}" if jump else f"{text} {counters}"


def chain_listing(ruleset: Ruleset, name: str, *, counters: bool = False) -> str | None:
    """What ``-S NAME [-v]`` prints for the chain (None: it does not exist)."""
    chain = ruleset.chain(name)
    if chain is None:
        return None
    head = f"-P {name} ACCEPT" if name in BUILTIN_CHAINS else f"-N {name}"
    lines = [head + (" -c 0 0" if counters and name in BUILTIN_CHAINS else "")]
    for rule in chain.rules:
        text = f"-A {name} {render_spec(rule)}"
        lines.append(_with_counters(text, rule) if counters else text)
    return "".join(line + "\n" for line in lines)


def save(ruleset: Ruleset) -> str:
    """``iptables-save -t nat`` of the table."""
    names = sorted(ruleset.chains, key=lambda n: (n not in BUILTIN_CHAINS, n))
    declared = [f":{n} ACCEPT [0:0]" if n in BUILTIN_CHAINS else f":{n} - [0:0]" for n in names]
    rules = [f"-A {n} {render_spec(r)}" for n in names for r in ruleset.chains[n].rules]
    return "".join(line + "\n" for line in ["*nat", *declared, *rules, "COMMIT"])


def _missing(binary: str, chain: str) -> str:
    if "-nft" in binary:  # what iptables-nft 1.8.9 says for a chain that does not exist
        return f"iptables v1.8.9 (nf_tables): chain `{chain}' in table `nat' is incompatible\n"
    return "iptables: No chain/target/match by that name.\n"


@dataclass
class FakeIptables:
    """iptables over a model of each family's nat table; records every call.

    ``restore_results`` (exit code, stderr) entries are popped per restore: a non-zero
    code fails that restore without reading it (a failure the model cannot produce, such
    as a held lock); 0 lets the model decide.  ``after_restore`` runs after each accepted
    restore: another writer moving the chain in between.
    """

    rulesets: dict[Family, Ruleset] = field(
        default_factory=lambda: {f: empty_nat(f) for f in FAMILIES}
    )
    version: str = "iptables v1.8.9 (nf_tables)\n"
    restore_results: list[tuple[int, str]] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    stdin: list[str] = field(default_factory=list)
    after_restore: Callable[[FakeIptables], None] | None = None

    @classmethod
    def holding(cls, *rulesets: Ruleset) -> FakeIptables:
        """A fake whose nat tables hold ``rulesets`` (the other family's is empty)."""
        fake = cls()
        fake.rulesets.update({r.family: r for r in rulesets})
        return fake

    def __call__(
        self, argv: list[str], stdin: Stdin = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append(argv)
        binary = argv[0]
        family: Family = "ipv6" if binary.startswith("ip6tables") else "ipv4"
        if binary.endswith("-restore"):
            script = stdin if isinstance(stdin, str) else ""
            self.stdin.append(script)
            return self._restore(argv, family, script)
        if "--version" in argv:
            return Completed(tuple(argv), 0, self.version, "")
        if binary.endswith("-save"):
            if argv[1:] not in ([], ["-t", "nat"]):
                return Completed(tuple(argv), 2, "", "the fake saves the nat table only\n")
            return Completed(tuple(argv), 0, save(self.rulesets[family]), "")
        return self._list(argv, family)

    def _restore(self, argv: list[str], family: Family, script: str) -> Completed:
        code, err = self.restore_results.pop(0) if self.restore_results else (0, "")
        if code != 0:
            return Completed(tuple(argv), code, "", err)
        try:
            self.rulesets[family] = restore(self.rulesets[family], script)
        except Refused as error:
            return Completed(tuple(argv), 1, "", f"{argv[0]}: {error}\n")
        if self.after_restore is not None:
            self.after_restore(self)
        return Completed(tuple(argv), 0, "", "")

    def _list(self, argv: list[str], family: Family) -> Completed:
        words = [w for w in argv[1:] if not w.startswith("--wait")]
        counters = words[-1:] == ["-v"]
        words = words[:-1] if counters else words
        if words[:3] != ["-t", "nat", "-S"] or len(words) != 4:
            if words[:2] == ["-t", "nat"] or words[:1] != ["-t"]:
                return Completed(tuple(argv), 2, "", f"the fake cannot answer {argv}\n")
            return Completed(tuple(argv), 1, "", _missing(argv[0], words[-1]))
        text = chain_listing(self.rulesets[family], words[3], counters=counters)
        if text is None:
            return Completed(tuple(argv), 1, "", _missing(argv[0], words[3]))
        return Completed(tuple(argv), 0, text, "")

    def ruleset(self, family: Family = "ipv4") -> Ruleset:
        return self.rulesets[family]

    def binaries(self) -> list[str]:
        return [c[0] for c in self.calls]


@dataclass
class FakeKernel:
    """Answers the cheap kernel questions (netlink, /proc) instead of the host.

    ``chains`` None means "cannot tell", so the agent falls back to listing with the fake
    iptables; ``legacy`` lists the x_tables tables (none: no legacy leftovers possible).
    """

    gen: int | None = None
    tables: set[tuple[str, str]] = field(default_factory=set)
    chains: set[tuple[str, str, str]] | None = None
    legacy: frozenset[str] = frozenset()

    def generation(self) -> int | None:
        return self.gen

    def table_exists(self, family: str, name: str) -> bool | None:
        return (family, name) in self.tables

    def chain_exists(self, family: str, table: str, chain: str) -> bool | None:
        return None if self.chains is None else (family, table, chain) in self.chains

    def legacy_tables(self, family: str) -> frozenset[str] | None:
        return self.legacy
