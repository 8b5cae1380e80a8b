"""iptables text: rules parse back as rendered, and scripts do not depend on hash seeds."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from masq.core.addresses import Family, IPNetwork
from masq.core.iptables.codec import (
    _simple_words,
    parse_save,
    quote,
    render_restore,
    render_rule,
    render_spec,
    split_words,
    split_words_slow,
)
from masq.core.iptables.model import Action, Rule
from masq.core.iptables.rules import (
    EXCEPTION_COMMENT,
    MASQ_COMMENT,
    RETURN_COMMENT,
    jump_comment,
)
from masq.core.names import POSTROUTING
from masq.core.nat import PROBABILITY_SCALE, PortRange
from masq.core.traffic import Counters

CHAIN = "IP-MASQ-AGENT"
comments = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60
)


def nets(family: Family) -> st.SearchStrategy[IPNetwork | None]:
    """A destination: a network of the family, or None ("any") where a /0 is drawn, since
    iptables prints no -d for a /0 and the model spells that as destination None."""
    bits = 32 if family == "ipv4" else 128
    cls = ipaddress.IPv4Network if family == "ipv4" else ipaddress.IPv6Network
    return st.builds(
        lambda v, p: cls((v, p), strict=False) if p else None,
        st.integers(0, 2**bits - 1),
        st.sampled_from((0, bits)) | st.integers(0, bits),
    )


interfaces = st.sampled_from(["eth0", "eth*", "bond0.100", "wl*", "e", "en-p_1@x"])


def to_sources(family: Family) -> st.SearchStrategy[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return st.ip_addresses(v=4 if family == "ipv4" else 6)


@st.composite
def model_rules(draw: st.DrawFn, family: Family) -> Rule:
    rule = draw(_model_rules(family))
    if rule.action not in ("MASQUERADE", "SNAT", "RETURN"):
        return rule
    # egress selection: -s and -o on any rule of our chain
    return replace(
        rule,
        source=draw(st.none() | nets(family)),
        out_interface=draw(st.none() | interfaces),
    )


@st.composite
def _model_rules(draw: st.DrawFn, family: Family) -> Rule:
    kind = draw(st.sampled_from(["RETURN", "MASQUERADE", "TOPORTS", "JUMP", "SNAT"]))
    comment = draw(comments)
    if kind == "SNAT":
        ports = draw(
            st.none()
            | st.builds(
                lambda a, b: PortRange(min(a, b), max(a, b)),
                st.integers(1, 65535),
                st.integers(1, 65535),
            )
        )
        return Rule(
            action="SNAT",
            comment=comment,
            destination=draw(st.none() | nets(family)),
            protocol=draw(st.none() | st.sampled_from(["tcp", "udp"])) if ports else None,
            to_source=draw(to_sources(family)),
            to_ports=ports,
            random_fully=draw(st.booleans()),
        )
    if kind == "RETURN":
        return Rule(action="RETURN", comment=comment, destination=draw(nets(family)))
    if kind == "JUMP":
        return Rule(action="JUMP", comment=comment, not_local=True, jump_chain=CHAIN)
    if kind == "MASQUERADE":
        return Rule(
            action="MASQUERADE",
            comment=comment,
            destination=draw(st.none() | nets(family)),
            random_fully=draw(st.booleans()),
        )
    first = draw(st.integers(1, 65535))
    last = draw(st.integers(first, 65535))
    return Rule(
        action="MASQUERADE",
        comment=comment,
        protocol=draw(st.sampled_from(["tcp", "udp", "sctp"])),
        probability=draw(
            st.none() | st.integers(1, PROBABILITY_SCALE - 1).map(lambda k: k / PROBABILITY_SCALE)
        ),
        to_ports=PortRange(first, last),
        random_fully=draw(st.booleans()),
    )


opaque_rules = st.sampled_from(
    [
        Rule(action="OTHER", comment="", spec="-s 1.2.3.4/32 -j ACCEPT"),
        Rule(action="OTHER", comment="", spec='-m comment --comment "a \\"b\\"" -j DROP'),
        Rule(action="OTHER", comment="", spec="! -d 10.0.0.0/8 -j RETURN"),
    ]
)


@given(
    family=st.sampled_from(["ipv4", "ipv6"]),
    data=st.data(),
    with_counters=st.sampled_from(["none", "save", "inline"]),
)
def test_render_parse_round_trip(family: Family, data: st.DataObject, with_counters: str) -> None:
    """Any modelled rules (RETURN, MASQUERADE with or without a destination, --to-ports rules with a
    probability, SNAT --to-source with or without ports, any of them with egress selection's -s
    and -o, a trailing-* interface written as +, the jump to our chain) and opaque ones,
    rendered as iptables-save lines without counters, with [packets:bytes] prefixes or with
    inline -c counters, parse back to the same rules in the same order, carrying the counters
    given."""
    # Fails if quote() forgets to escape '"' or '\\', if the parser drops a
    # prefix length, or if probability is printed with fewer than 11 decimals.
    rules = data.draw(st.lists(st.one_of(model_rules(family), opaque_rules), max_size=8))
    jump = data.draw(model_rules(family).filter(lambda r: r.action == "JUMP"))
    counts = data.draw(st.lists(st.integers(0, 2**40), min_size=2, max_size=2))
    lines = ["*nat", ":POSTROUTING ACCEPT [0:0]", f":{CHAIN} - [0:0]"]
    for chain, rule in [(POSTROUTING, jump), *((CHAIN, r) for r in rules)]:
        text = render_rule(chain, rule)
        if with_counters == "save":
            text = f"[{counts[0]}:{counts[1]}] {text}"
        elif with_counters == "inline":
            head, _, target = text.rpartition(" -j ")
            text = f"{head} -c {counts[0]} {counts[1]} -j {target}"
        lines.append(text)
    parsed = parse_save("\n".join([*lines, "COMMIT", ""]), CHAIN, family).unwrap()
    assert list(parsed.chains[CHAIN].rules) == rules
    assert list(parsed.chains[POSTROUTING].rules) == [jump]
    if with_counters != "none":
        assert all(r.counters == Counters(counts[0], counts[1]) for r in parsed.chains[CHAIN].rules)


@given(comments)
def test_quote_round_trips_through_the_restore_tokenizer(comment: str) -> None:
    """Any printable comment, spelled by quote(), is a single word to iptables-restore's tokenizer
    and reads back unchanged."""
    # Fails if quote() leaves a space or quote bare, splitting the word.
    words = split_words(f"--comment {quote(comment)} -j RETURN").unwrap()
    assert [w for w, _, _ in words] == ["--comment", comment, "-j", "RETURN"]


@pytest.mark.parametrize(
    ("comment", "spelled"),
    [
        ("plain_-1", "plain_-1"),
        ("v1.2", '"v1.2"'),
        ("a:b", '"a:b"'),
        ("two words", '"two words"'),
        ("it's", '"it\\\'s"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_quote_spells_comments_as_iptables_save_does(comment: str, spelled: str) -> None:
    """A comment stays bare only when made of [A-Za-z0-9_-] alone ("." and ":" are quoted),
    and inside the quotes each ", \\ and ' is escaped with a backslash: libxtables'
    xtables_save_string.  test_upstream_rules checks the same comments against the text a
    real iptables-save prints, for both backends."""
    assert quote(comment) == spelled


@given(st.text(alphabet=' \t"\\ab-', max_size=30))
def test_fast_tokenizer_agrees_with_the_general_one(line: str) -> None:
    """Whenever the fast tokenizer accepts a line, it splits it exactly as the general,
    character-by-character tokenizer does."""
    # Fails if the fast path accepts a mid-word quote or a backslash it cannot interpret.
    fast = _simple_words(line)
    if fast is not None:
        assert split_words_slow(line).unwrap() == fast


def test_option_like_comments_stay_comments() -> None:
    """A comment that reads like an option (-c, -j, -c 1 2) is read back as that comment, never as
    inline counters or a target, in a modelled rule and in an opaque one."""
    # Found by the ci profile: a bare comment "-c" was taken for inline counters.
    for comment in ["-c", "-j", "-c 1 2"]:
        rule = Rule(action="RETURN", comment=comment)
        text = f"*nat\n:{CHAIN} - [0:0]\n{render_rule(CHAIN, rule)} \nCOMMIT\n"
        assert list(parse_save(text, CHAIN, "ipv4").unwrap().chains[CHAIN].rules) == [rule]
    opaque = Rule(action="OTHER", comment="", spec="-m comment --comment -j -j DROP")
    text = f"*nat\n:{CHAIN} - [0:0]\n{render_rule(CHAIN, opaque)}\nCOMMIT\n"
    assert list(parse_save(text, CHAIN, "ipv4").unwrap().chains[CHAIN].rules) == [opaque]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '*nat\n-A IP-MASQ-AGENT -m comment --comment "open -j RETURN\nCOMMIT\n',
            "line 2: '-A IP-MASQ-AGENT -m comment --comment \"open -j RETURN':"
            " unterminated quote or escape",
        ),
        ("*nat\nthis is not iptables\nCOMMIT\n", "line 2: 'this is not iptables': unexpected text"),
        (
            "*nat\n-A IP-MASQ-AGENT -c 1 -j RETURN\nCOMMIT\n",
            "line 2: '-A IP-MASQ-AGENT -c 1 -j RETURN': malformed counters",
        ),
        ("*nat\n-A\nCOMMIT\n", "line 2: '-A': unexpected text"),
    ],
)
def test_parse_save_rejects_malformed_text(text: str, message: str) -> None:
    """Text that is not iptables-save output (an unterminated quote, a line that is not a
    rule or chain declaration, ``-c`` without two counters, a bare ``-A``) is refused with a
    message naming the line number and quoting the line."""
    result = parse_save(text, CHAIN, "ipv4")
    assert isinstance(result, Failure)
    assert str(result.failure()) == message


SCRIPT = """
import ipaddress
from pyrsistent import pvector
from masq.core.addresses import sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.iptables.plan import plan, replace_ops
from masq.core.iptables.codec import render_restore, parse_save
from masq.core.iptables.rules import RulesetOptions, desired_rulesets
from masq.core.nat import NatOptions, parse_to_ports
nets = [ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(40)]
nets += [ipaddress.ip_network(f"fd00:{i:x}::/32") for i in range(40)]
config = MasqConfig(non_masquerade_cidrs=sorted_cidrs(set(nets)),
                    masquerade_cidrs=sorted_cidrs({nets[3], nets[50]}))
opts = RulesetOptions(
    enable_ipv6=True,
    nat=NatOptions(to_ports=parse_to_ports("1024-29999,32768-65535").unwrap()),
)
for d in desired_rulesets(config, opts):
    empty = parse_save("", opts.chain, d.family).unwrap()
    print(render_restore(plan(d, empty)), end="")
    print(render_restore(replace_ops(d, empty)), end="")
"""


def test_restore_script_is_identical_under_different_hash_seeds() -> None:
    """The restore scripts for a config with many CIDRs of both families are byte-identical under
    different PYTHONHASHSEED values: no output depends on the iteration order of a set or map."""
    # Fails if any output iterates a set or map unsorted (e.g. sorted_cidrs
    # replaced by list(set(...)), or chains rendered in PMap order).
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.startswith("*nat\n")
        outputs.add(done.stdout)
    assert len(outputs) == 1


def test_render_restore_of_no_ops_is_empty() -> None:
    """No ops is no transaction: the script is empty, so nothing is written."""
    assert render_restore(()) == ""


def test_readable_ops_show_every_op_once() -> None:
    """The --dry-run view shows each op once, in order, as its iptables-restore line after a sign: *
    for creating or flushing a chain, + for adding a rule, - for deleting one."""
    # Fails if the dry-run view drops ops or mislabels deletes as additions.
    from masq.core.iptables.codec import render_ops_readable
    from masq.core.iptables.model import (
        AppendRule,
        CreateChain,
        DeleteRule,
        DeleteRuleAt,
        InsertRule,
        Op,
    )

    rule = Rule(action="RETURN", comment="c d", destination=ipaddress.IPv4Network("10.0.0.0/8"))
    ops: list[Op] = [
        CreateChain(CHAIN),
        AppendRule(CHAIN, rule),
        InsertRule(CHAIN, 1, rule),
        DeleteRuleAt(CHAIN, 2),
        DeleteRule(POSTROUTING, rule),
    ]
    shown = render_ops_readable(ops).splitlines()
    assert [line[0] for line in shown] == ["*", "+", "+", "-", "-"]
    assert [line[2:] for line in shown] == render_restore(ops).splitlines()[1:-1]


def test_parse_save_gives_each_rule_its_role() -> None:
    """Roles come from what a rule does and its comment, so nothing downstream reads comments."""
    text = "\n".join(
        (
            f"-A POSTROUTING -m comment --comment {quote(jump_comment(CHAIN))}"
            f" -m addrtype ! --dst-type LOCAL -j {CHAIN}",
            f"-N {CHAIN}",
            f"-A {CHAIN} -d 10.9.0.0/16 -m comment --comment {quote(EXCEPTION_COMMENT)}"
            " -j MASQUERADE",
            f"-A {CHAIN} -d 169.254.0.0/16 -m comment --comment {quote(RETURN_COMMENT)} -j RETURN",
            f"-A {CHAIN} -d 10.0.0.0/8 -m comment --comment {quote(RETURN_COMMENT)} -j RETURN",
            f"-A {CHAIN} -d 10.1.0.0/16 -m comment --comment {quote('someone else')} -j RETURN",
            f"-A {CHAIN} -d 10.2.0.0/16 -m comment --comment {quote(MASQ_COMMENT)} -j RETURN",
            f"-A {CHAIN} -m comment --comment {quote(MASQ_COMMENT)} -j MASQUERADE",
        )
    )
    parsed = parse_save(text, CHAIN, "ipv4").unwrap()
    roles = [r.role for r in parsed.chains[POSTROUTING].rules]
    roles += [r.role for r in parsed.chains[CHAIN].rules]
    # a known comment on the wrong action is not ours: "foreign"
    assert roles == [
        "jump",
        "masquerade",
        "link-local",
        "non-masquerade",
        "foreign",
        "foreign",
        "default",
    ]


# Fails if render_spec prints "-d 0.0.0.0/0" for a /0 destination: iptables-save never
# prints it, so the rule would never read back equal (only direct API callers build one;
# the agent's own rules spell "any" as destination None).
@given(st.sampled_from(["0.0.0.0/0", "::/0"]), st.sampled_from(["RETURN", "MASQUERADE"]))
def test_a_zero_prefix_destination_renders_as_any(net: str, action: Action) -> None:
    """A rule whose destination is a /0 renders exactly as the same rule without one: no -d."""
    rule = Rule(action=action, comment=RETURN_COMMENT)
    zero = Rule(action=action, comment=RETURN_COMMENT, destination=ipaddress.ip_network(net))
    assert render_spec(zero) == render_spec(rule)
    assert "-d" not in render_spec(zero).split()


# Fails if the parser ignores words after the ones it models: the catch-all's comment with
# a trailing --random would read as the agent's own rule, and plan would keep a rule whose
# text differs from the one the agent writes.
@pytest.mark.parametrize("extra", ["--random", "--random-fully --random", "-p tcp"])
def test_a_modelled_rule_with_trailing_words_is_foreign(extra: str) -> None:
    """A rule spelled like the agent's catch-all but with words the agent never writes after
    its target is read as an opaque rule, kept word for word, with no role of ours."""
    spec = f"-m comment --comment {quote(MASQ_COMMENT)} -j MASQUERADE {extra}"
    text = f"*nat\n:{CHAIN} - [0:0]\n-A {CHAIN} {spec}\nCOMMIT\n"
    (rule,) = parse_save(text, CHAIN, "ipv4").unwrap().chains[CHAIN].rules
    assert rule == Rule(action="OTHER", comment="", spec=spec)
    assert rule.role == "foreign"


# Fails if parse_save keeps POSTROUTING rules that do not jump to the agent's chain (kube-
# proxy's, say): plan would then see them as stray jumps of ours and delete them.
def test_parse_save_keeps_only_our_jump_in_postrouting() -> None:
    """Of POSTROUTING, parse_save keeps only the rules that jump to the agent's chain (whatever
    their comment); every other rule there, modelled or not, is left out of the ruleset."""
    ours = f"-m comment --comment {quote(jump_comment(CHAIN))} -m addrtype ! --dst-type LOCAL"
    text = "\n".join(
        [
            "*nat",
            ":POSTROUTING ACCEPT [0:0]",
            f":{CHAIN} - [0:0]",
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules"'
            " -j KUBE-POSTROUTING",
            "-A POSTROUTING -s 10.0.0.0/8 -j MASQUERADE",
            "-A POSTROUTING -m comment --comment other -j RETURN",
            f"-A POSTROUTING {ours} -j {CHAIN}",
            f"-A POSTROUTING -m comment --comment v2 -j {CHAIN}",
            "-A POSTROUTING -j OTHER-CHAIN",
            "COMMIT",
            "",
        ]
    )
    post = parse_save(text, CHAIN, "ipv4").unwrap().chains[POSTROUTING].rules
    assert [r.jump_chain for r in post] == [CHAIN, CHAIN]
    assert [r.comment for r in post] == [jump_comment(CHAIN), "v2"]
