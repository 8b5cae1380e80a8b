"""Upstream rule cases (v2 TestSyncMasqRules/TestSyncMasqRulesIPv6, v1 TestWriteMasqRules),
ported as examples, plus round trips through the real kernel in a throwaway netns.

Where we differ from upstream on purpose:
- RETURNs come in canonical order (family, address, prefix), not file order: v2 writes
  the reserved ranges as listed (10/8, 172.16/12, 192.168/16, 100.64/10, ...).
- ``--random-fully`` is on by default (v1's default; v2 never sets it).
- ``masqueradeCIDRs`` exceptions come first (neither upstream has them).
- The expected text is what ``iptables-save`` prints (option order normalised), since
  that is what a steady-state sync compares against; upstream tests compare the
  argument order they wrote.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence

import pytest
from ci import cannot_run
from integration.expected import RESERVED, RFC1918
from integration.topology import namespace
from pyrsistent import pmap, pvector

from masq.core.addresses import Family, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save, render_restore, render_rule
from masq.core.iptables.model import Chain, Rule, Ruleset
from masq.core.iptables.plan import cleanup_ops, plan
from masq.core.iptables.rules import RulesetOptions, desired_ruleset, jump_rule
from masq.core.names import POSTROUTING
from masq.core.nat import PROBABILITY_SCALE, NatOptions, parse_to_ports

CHAIN = "IP-MASQ-AGENT"
JUMP = (
    '-A POSTROUTING -m comment --comment "ip-masq-agent: ensure nat POSTROUTING directs all'
    ' non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain"'
    " -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT"
)
RET = '-m comment --comment "ip-masq-agent: local traffic is not subject to MASQUERADE" -j RETURN'
MASQ = (
    '-m comment --comment "ip-masq-agent: outbound traffic is subject to MASQUERADE'
    ' (must be last in chain)"'
)


def config(
    non: Sequence[str],
    masq: Sequence[str] = (),
    *,
    masq_link_local: bool = False,
    masq_link_local_ipv6: bool = False,
) -> MasqConfig:
    return MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(ipaddress.ip_network(c) for c in non),
        masquerade_cidrs=sorted_cidrs(ipaddress.ip_network(c) for c in masq),
        masq_link_local=masq_link_local,
        masq_link_local_ipv6=masq_link_local_ipv6,
    )


def lines(
    cfg: MasqConfig, family: Family = "ipv4", *, random_fully: bool = True, to_ports: str = ""
) -> list[str]:
    ports = parse_to_ports(to_ports).unwrap() if to_ports else ()
    options = RulesetOptions(chain=CHAIN, nat=NatOptions(random_fully, ports))
    ruleset = desired_ruleset(cfg, family, options)
    return [
        render_rule(name, rule)
        for name in (POSTROUTING, CHAIN)
        for rule in ruleset.chains[name].rules
    ]


def returns(*cidrs: str) -> list[str]:
    return [f"-A {CHAIN} -d {c} {RET}" for c in cidrs]


FINAL = f"-A {CHAIN} {MASQ} -j MASQUERADE --random-fully"


# --- v2 TestSyncMasqRules ---


def test_v2_empty_config() -> None:
    assert lines(config([])) == [JUMP, *returns("169.254.0.0/16"), FINAL]


def test_v2_rfc1918_defaults() -> None:
    assert lines(config(RFC1918)) == [JUMP, *returns("169.254.0.0/16", *RFC1918), FINAL]


def test_v2_reserved_ranges_in_canonical_order() -> None:
    # v2 keeps list order; we sort by address, so 100.64/10 comes before 172.16/12.
    canonical = sorted(RESERVED, key=lambda c: int(ipaddress.ip_network(c).network_address))
    assert canonical != list(RESERVED)
    assert lines(config(RESERVED)) == [JUMP, *returns("169.254.0.0/16", *canonical), FINAL]


def test_v2_mixed_families_ipv4_half() -> None:
    cfg = config(["10.244.0.0/16", "fc00::/7"])
    assert lines(cfg) == [JUMP, *returns("169.254.0.0/16", "10.244.0.0/16"), FINAL]


def test_random_fully_off_where_unsupported() -> None:
    assert lines(config([]), random_fully=False)[-1] == f"-A {CHAIN} {MASQ} -j MASQUERADE"


def test_masquerade_exceptions_come_first() -> None:
    got = lines(config(["10.0.0.0/8"], ["10.240.0.0/16"]))
    assert got[1] == (
        f"-A {CHAIN} -d 10.240.0.0/16 -m comment --comment"
        ' "ip-masq-agent: destination is in masqueradeCIDRs" -j MASQUERADE --random-fully'
    )
    assert got[2:] == [*returns("169.254.0.0/16", "10.0.0.0/8"), FINAL]


# --- v2 TestSyncMasqRulesIPv6 ---


def test_v2_ipv6_empty_config() -> None:
    assert lines(config([]), "ipv6") == [JUMP, *returns("fe80::/10"), FINAL]


def test_v2_ipv6_mixed_families() -> None:
    cfg = config(["10.244.0.0/16", "fc00::/7"])
    assert lines(cfg, "ipv6") == [JUMP, *returns("fe80::/10", "fc00::/7"), FINAL]


def test_v2_ipv6_masq_link_local() -> None:
    assert lines(config([], masq_link_local_ipv6=True), "ipv6") == [JUMP, FINAL]
    # The IPv4 flag does not leak into IPv6 (nor the reverse).
    assert lines(config([], masq_link_local=True), "ipv6") == [JUMP, *returns("fe80::/10"), FINAL]


# --- v1 TestWriteMasqRules (--to-ports) ---


def to_ports_rules(to_ports: str) -> list[tuple[str, float | None, str]]:
    options = RulesetOptions(nat=NatOptions(to_ports=parse_to_ports(to_ports).unwrap()))
    ruleset = desired_ruleset(config([]), "ipv4", options)
    return [
        (r.protocol, r.probability, str(r.to_ports))
        for r in ruleset.chains[CHAIN].rules
        if r.protocol is not None and r.to_ports is not None
    ]


@pytest.mark.parametrize(
    ("to_ports", "v1_probabilities"),
    [
        ("1024-29999", [None]),
        ("1024-29999,32768-65535", [0.469292562840114, None]),
        ("1024-29999,32768-49151,61000-65535", [0.5807279140612474, 0.7831739961759082, None]),
        ("1024,65535", [0.5, None]),
    ],
)
def test_v1_to_ports(to_ports: str, v1_probabilities: list[float | None]) -> None:
    # v1 writes the probability at full precision; the kernel keeps lround(p * 2**31),
    # so equal kernel values are what matters (and what iptables-save prints back).
    got = to_ports_rules(to_ports)
    ranges = to_ports.split(",")
    assert [(proto, ports) for proto, _, ports in got] == [
        (proto, r) for proto in ("tcp", "udp", "sctp") for r in ranges
    ]
    for (_, ours, _), theirs in zip(got, v1_probabilities * 3, strict=True):
        if theirs is None:
            assert ours is None
        else:
            assert ours is not None
            assert round(ours * PROBABILITY_SCALE) == round(theirs * PROBABILITY_SCALE)
    text = lines(config([]), to_ports="1024,65535")
    assert text[2] == (
        f"-A {CHAIN} -p tcp {MASQ} -m statistic --mode random --probability 0.50000000000"
        " -j MASQUERADE --to-ports 1024 --random-fully"
    )


# --- through the real kernel ---------------------------------------------

BACKENDS = ["nft", "legacy"]
TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        cannot_run("needs root and iproute2 to create a throwaway network namespace")
    with namespace("upstream-rules") as name:
        yield name


def run(ns: str, argv: list[str], stdin: str | None = None) -> str:
    if shutil.which(argv[0]) is None:
        cannot_run(f"{argv[0]} is not installed")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def kernel_apply(ns: str, backend: str, family: Family, script: str) -> None:
    run(ns, [f"{TOOLS[family]}-{backend}-restore", "--noflush", "-w"], script)


def kernel_save(ns: str, backend: str, family: Family, counters: bool = False) -> str:
    argv = [f"{TOOLS[family]}-{backend}-save", "-t", "nat"]
    return run(ns, [*argv, "-c"] if counters else argv)


def observe(ns: str, backend: str, family: Family, chain: str = CHAIN) -> Ruleset:
    return parse_save(kernel_save(ns, backend, family, counters=True), chain, family).unwrap()


KERNEL_CONFIG = config(
    [*RESERVED, "fd00::/8", "::ffff:1.2.3.0/120", "2001:db8::1/128", "1.2.3.4/32"],
    ["10.240.0.0/16", "fd00:1::/32"],
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_round_trip_byte_for_byte(netns: str, backend: str, family: Family) -> None:
    ports = parse_to_ports("1024-29999,32768-65535").unwrap()
    options = RulesetOptions(chain=CHAIN, nat=NatOptions(to_ports=ports))
    desired = desired_ruleset(KERNEL_CONFIG, family, options)
    empty = parse_save(kernel_save(netns, backend, family), CHAIN, family).unwrap()
    assert CHAIN not in empty.chains
    ops = plan(desired, empty)
    kernel_apply(netns, backend, family, render_restore(ops))
    saved = kernel_save(netns, backend, family)
    ours = [ln for ln in saved.splitlines() if ln.startswith(("-A POSTROUTING", f"-A {CHAIN}"))]
    expected = [
        render_rule(name, rule)
        for name in (POSTROUTING, CHAIN)
        for rule in desired.chains[name].rules
    ]
    assert ours == expected
    observed = observe(netns, backend, family)
    assert observed == desired
    assert plan(desired, observed) == ()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_incremental_and_cleanup(netns: str, backend: str) -> None:
    family: Family = "ipv4"
    before = desired_ruleset(KERNEL_CONFIG, family, RulesetOptions(chain=CHAIN))
    kernel_apply(
        netns, backend, family, render_restore(plan(before, observe(netns, backend, family)))
    )
    # Strays: v2's quoted jump, a duplicate jump, a foreign rule in our chain and in POSTROUTING.
    kernel_apply(
        netns,
        backend,
        family,
        "*nat\n"
        '-A POSTROUTING -m comment --comment "\\"ip-masq-agent: ensure nat POSTROUTING directs'
        ' all non-LOCAL destination traffic to our custom IP-MASQ-AGENT chain\\""'
        " -m addrtype ! --dst-type LOCAL -j IP-MASQ-AGENT\n"
        "-A POSTROUTING -o eth9 -j MASQUERADE\n"
        f"{JUMP}\n"
        f"-I {CHAIN} 3 -s 1.2.3.4/32 -j ACCEPT\n"
        "COMMIT\n",
    )
    after_cfg = config([*RESERVED[1:], "11.0.0.0/8"], ["10.240.0.0/16"])
    after = desired_ruleset(after_cfg, family, RulesetOptions(chain=CHAIN))
    observed = observe(netns, backend, family)
    ops = plan(after, observed)
    kernel_apply(netns, backend, family, render_restore(ops))
    assert observe(netns, backend, family) == after
    assert "-A POSTROUTING -o eth9 -j MASQUERADE" in kernel_save(netns, backend, family)
    # -S listings (the shell's cheap path) parse to the same ruleset, counters included.
    listing = run(netns, [f"iptables-{backend}", "-t", "nat", "-S", "POSTROUTING"]) + run(
        netns, [f"iptables-{backend}", "-t", "nat", "-S", CHAIN, "-v"]
    )
    from_listing = parse_save(listing, CHAIN, family).unwrap()
    assert from_listing == after
    assert all(r.counters is not None for r in from_listing.chains[CHAIN].rules)
    kernel_apply(netns, backend, family, render_restore(cleanup_ops(from_listing, CHAIN)))
    gone = kernel_save(netns, backend, family)
    assert CHAIN not in gone
    assert "-A POSTROUTING -o eth9 -j MASQUERADE" in gone


# Comments that need quoting or escaping, and a chain name iptables prints bare though it
# holds "." and ":" (so does the jump's comment, which names the chain).
TRICKY_COMMENTS = [
    "it's",
    "v1.2",
    "a:b",
    'say "hi"',
    "back\\slash",
    "plain_-1",
    'all: it\'s "v1.2" \\ done',
]
TRICKY_CHAIN = "MASQ.V1:x"


@pytest.mark.parametrize("backend", BACKENDS)
def test_kernel_prints_comments_and_chain_names_as_we_render_them(netns: str, backend: str) -> None:
    """iptables-save (libxtables' xtables_save_string) prints a comment bare only when it is
    made of [A-Za-z0-9_-] alone, so "." and ":" are quoted, and escapes ", \\ and ' inside
    the quotes; a chain name is printed bare. Rules with such comments and chain names,
    rendered by render_rule, are byte for byte what iptables-save prints (nft and legacy),
    and read back equal."""
    rules = [
        Rule(action="RETURN", comment=c, destination=ipaddress.IPv4Network(f"10.{i}.0.0/16"))
        for i, c in enumerate(TRICKY_COMMENTS)
    ]
    desired = Ruleset(
        "ipv4",
        pmap(
            {
                POSTROUTING: Chain(POSTROUTING, pvector([jump_rule(TRICKY_CHAIN)])),
                TRICKY_CHAIN: Chain(TRICKY_CHAIN, pvector(rules)),
            }
        ),
    )
    empty = observe(netns, backend, "ipv4", TRICKY_CHAIN)
    kernel_apply(netns, backend, "ipv4", render_restore(plan(desired, empty)))
    saved = kernel_save(netns, backend, "ipv4").splitlines()
    ours = [ln for ln in saved if ln.startswith(("-A POSTROUTING", f"-A {TRICKY_CHAIN} "))]
    assert ours == [
        render_rule(name, rule)
        for name in (POSTROUTING, TRICKY_CHAIN)
        for rule in desired.chains[name].rules
    ]
    assert observe(netns, backend, "ipv4", TRICKY_CHAIN) == desired
