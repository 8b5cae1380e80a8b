"""desired_ruleset: the order of our chain, family separation, and v1's --to-ports spreading."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from masq.core.addresses import Family, IPNetwork, cidr_key, family_of, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.decision import LINK_LOCAL
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

nets: st.SearchStrategy[IPNetwork] = st.one_of(
    st.builds(
        lambda v, p: ipaddress.IPv4Network((v, p), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(1, 32),
    ),
    st.builds(
        lambda v, p: ipaddress.IPv6Network((v, p), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(1, 128),
    ),
    st.sampled_from(list(LINK_LOCAL.values())),
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


@given(configs, st.sampled_from(["ipv4", "ipv6"]), options)
def test_chain_order(config: MasqConfig, family: Family, opts: RulesetOptions) -> None:
    """For any config, family and flags, our chain is: the family's masqueradeCIDRs exceptions (with
    --to-ports, each CIDR's tcp, udp and sctp port rules before its plain MASQUERADE), the
    link-local RETURN unless masqLinkLocal (masqLinkLocalIPv6) is set, the family's
    nonMasqueradeCIDRs RETURNs in canonical order (family, address, prefix; the link-local range
    written once), v1's --to-ports rules, and last the catch-all MASQUERADE without destination,
    with --random-fully as the flag says. Every rule is distinct, and POSTROUTING holds exactly the
    one jump."""
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
    assert returns == expected
    rest = [n for n in returns[0 if masq_ll else 1 :] if n is not None]
    assert rest == sorted(rest, key=cidr_key)
    assert len(set(rules)) == len(rules)
    exceptions = [r.destination for r in rules if r.comment == EXCEPTION_COMMENT]
    per_cidr = 1 + 3 * len(opts.nat.to_ports)
    assert exceptions == [
        n for n in config.masquerade_cidrs if family_of(n) == family for _ in range(per_cidr)
    ]
    # With --to-ports, an exception masquerades tcp/udp/sctp into the ports too.
    assert all(r.to_ports or r.protocol is None for r in rules if r.comment == EXCEPTION_COMMENT)
    assert all((r.to_ports is not None) == (r.protocol is not None) for r in rules)
    assert ruleset.chains[POSTROUTING].rules[0].comment == jump_comment(opts.chain)
    assert len(ruleset.chains[POSTROUTING].rules) == 1


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
