"""desired_ruleset: the order of our chain, family separation, and v1's --to-ports spreading."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pvector

from masq.core.addresses import Family, IPNetwork, cidr_key, family_of, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.decision import LINK_LOCAL
from masq.core.iptables.codec import parse_save, render_restore
from masq.core.iptables.model import Ruleset
from masq.core.iptables.plan import plan
from masq.core.iptables.rules import (
    EXCEPTION_COMMENT,
    MASQ_COMMENT,
    RETURN_COMMENT,
    RulesetOptions,
    desired_ruleset,
    desired_rulesets,
    jump_comment,
)
from masq.core.names import POSTROUTING
from masq.core.nat import NatOptions, PortRange, parse_to_ports

EVERYWHERE: list[IPNetwork] = [ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")]
nets: st.SearchStrategy[IPNetwork] = st.one_of(
    st.builds(
        lambda v, p: ipaddress.IPv4Network((v, p), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda v, p: ipaddress.IPv6Network((v, p), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
    st.sampled_from([*LINK_LOCAL.values(), *EVERYWHERE]),
)
configs = st.builds(
    lambda non, masq, ll, ll6: MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(non),
        masquerade_cidrs=sorted_cidrs(masq),
        masq_link_local=ll,
        masq_link_local_ipv6=ll6,
    ),
    st.lists(nets, max_size=10),
    st.lists(nets, max_size=4),
    st.booleans(),
    st.booleans(),
)
options = st.builds(
    RulesetOptions,
    chain=st.sampled_from(["IP-MASQ-AGENT", "MY-MASQ"]),
    enable_ipv6=st.booleans(),
    nat=st.builds(
        NatOptions,
        random_fully=st.booleans(),
        to_ports=st.sampled_from(
            [(), parse_to_ports("1024-29999,32768-65535").unwrap(), (PortRange(7, 7),)]
        ),
    ),
)


def spelled(net: IPNetwork) -> IPNetwork | None:
    """A rule's destination as iptables-save shows it: none at all for a /0."""
    return None if net.prefixlen == 0 else net


@given(configs, st.sampled_from(["ipv4", "ipv6"]), options)
def test_chain_order(config: MasqConfig, family: Family, opts: RulesetOptions) -> None:
    """For any config, family and flags, our chain is: the family's masqueradeCIDRs exceptions (with
    --to-ports, each CIDR's tcp, udp and sctp port rules before its plain MASQUERADE), the
    link-local RETURN unless masqLinkLocal (masqLinkLocalIPv6) is set, the family's
    nonMasqueradeCIDRs RETURNs in canonical order (family, address, prefix; the link-local range
    written once), v1's --to-ports rules, and last the catch-all MASQUERADE without destination,
    with --random-fully as the flag says. A /0 is written without a destination, as iptables-save
    prints it. Every rule is distinct, and POSTROUTING holds exactly the one jump."""
    # Fails if RETURNs are emitted in config order instead of canonical order,
    # if link-local goes after them, or the final MASQUERADE is not last.
    ruleset = desired_ruleset(config, family, opts)
    rules = list(ruleset.chains[opts.chain].rules)
    kinds = [
        "exception"
        if r.comment == EXCEPTION_COMMENT
        else "return"
        if r.action == "RETURN"
        else "to-ports"
        if r.to_ports
        else "final"
        for r in rules
    ]
    assert kinds == sorted(kinds, key=["exception", "return", "to-ports", "final"].index)
    assert kinds[-1] == "final"
    assert rules[-1].comment == MASQ_COMMENT
    assert rules[-1].destination is None
    assert rules[-1].random_fully is opts.nat.random_fully
    link_local = LINK_LOCAL[family]
    masq_ll = config.masq_link_local if family == "ipv4" else config.masq_link_local_ipv6
    returns = [r.destination for r in rules if r.action == "RETURN"]
    assert all(r.comment == RETURN_COMMENT for r in rules if r.action == "RETURN")
    if masq_ll:
        expected = [n for n in config.non_masquerade_cidrs if family_of(n) == family]
    else:
        expected = [link_local] + [
            n for n in config.non_masquerade_cidrs if family_of(n) == family and n != link_local
        ]
    assert returns == [spelled(n) for n in expected]
    rest = [n for n in returns[0 if masq_ll else 1 :] if n is not None]
    assert rest == sorted(rest, key=cidr_key)
    assert len(set(rules)) == len(rules)
    exceptions = [r.destination for r in rules if r.comment == EXCEPTION_COMMENT]
    per_cidr = 1 + 3 * len(opts.nat.to_ports)
    assert exceptions == [
        spelled(n)
        for n in config.masquerade_cidrs
        if family_of(n) == family
        for _ in range(per_cidr)
    ]
    # With --to-ports, an exception masquerades tcp/udp/sctp into the ports too.
    assert all(r.to_ports or r.protocol is None for r in rules if r.comment == EXCEPTION_COMMENT)
    assert all((r.to_ports is not None) == (r.protocol is not None) for r in rules)
    assert ruleset.chains[POSTROUTING].rules[0].comment == jump_comment(opts.chain)
    assert len(ruleset.chains[POSTROUTING].rules) == 1


def read_back(desired: Ruleset, chain: str) -> Ruleset:
    """The ruleset written to an empty table as one restore script, read back as iptables
    text (the script is a listing the parser accepts: chain declarations and -A lines)."""
    empty = parse_save("", chain, desired.family).unwrap()
    return parse_save(render_restore(plan(desired, empty)), chain, desired.family).unwrap()


@given(configs, st.sampled_from(["ipv4", "ipv6"]), options)
def test_desired_ruleset_reads_back_equal(
    config: MasqConfig, family: Family, opts: RulesetOptions
) -> None:
    """For any config (CIDRs of both families from /0 to host routes), family and flags, the
    desired ruleset, written as iptables text and parsed back, is equal to itself, so planning
    against what was written is empty: a sync after a sync writes nothing."""
    desired = desired_ruleset(config, family, opts)
    observed = read_back(desired, opts.chain)
    assert observed == desired
    assert plan(desired, observed) == ()


@pytest.mark.parametrize("everywhere", EVERYWHERE, ids=str)
@pytest.mark.parametrize("key", ["non_masquerade_cidrs", "masquerade_cidrs"])
@pytest.mark.parametrize("to_ports", ["", "1024-29999,32768-65535"])
def test_a_slash_zero_destination_is_written_and_read_as_any(
    everywhere: IPNetwork, key: str, to_ports: str
) -> None:
    """0.0.0.0/0 or ::/0 in nonMasqueradeCIDRs or masqueradeCIDRs gives rules without a
    destination (iptables-save prints no -d for a /0), which parse back equal, so the next
    plan is empty."""
    config = MasqConfig(**{key: pvector([everywhere])})  # type: ignore[arg-type]
    family = family_of(everywhere)
    nat = NatOptions(to_ports=parse_to_ports(to_ports).unwrap() if to_ports else ())
    desired = desired_ruleset(config, family, RulesetOptions(nat=nat))
    rules = desired.chains["IP-MASQ-AGENT"].rules
    from_config = [r for r in rules if r.role != "default" and r.destination != LINK_LOCAL[family]]
    assert from_config and all(r.destination is None for r in from_config)
    observed = read_back(desired, "IP-MASQ-AGENT")
    assert observed == desired
    assert plan(desired, observed) == ()


@given(configs, options)
def test_family_separation(config: MasqConfig, opts: RulesetOptions) -> None:
    """There is an IPv4 ruleset, and an IPv6 one after it only with --enable-ipv6; no rule in a
    family's chain has a destination of the other family."""
    # Fails if desired_ruleset forgets the family filter (an IPv6 CIDR in iptables).
    rulesets = desired_rulesets(config, opts)
    assert [r.family for r in rulesets] == (["ipv4", "ipv6"] if opts.enable_ipv6 else ["ipv4"])
    for ruleset in rulesets:
        for rule in ruleset.chains[opts.chain].rules:
            assert rule.destination is None or family_of(rule.destination) == ruleset.family


def test_probabilities_follow_v1() -> None:
    """With --to-ports 1024-29999,32768-65535 each protocol gets v1's two rules, in v1's protocol
    order tcp, udp, sctp: the first range with probability 28976 / (28976 + 32768) (to the kernel's
    resolution of 2**-31), the last range unconditional."""
    rules = (
        desired_ruleset(
            MasqConfig(),
            "ipv4",
            RulesetOptions(
                nat=NatOptions(to_ports=(PortRange(1024, 29999), PortRange(32768, 65535)))
            ),
        )
        .chains["IP-MASQ-AGENT"]
        .rules
    )
    tcp = [r for r in rules if r.protocol == "tcp"]
    assert [str(r.to_ports) for r in tcp] == ["1024-29999", "32768-65535"]
    share = 28976 / (28976 + 32768)
    assert tcp[0].probability is not None
    assert abs(tcp[0].probability - share) < 2**-31
    assert tcp[1].probability is None
    assert [r.protocol for r in rules if r.protocol] == ["tcp"] * 2 + ["udp"] * 2 + ["sctp"] * 2
