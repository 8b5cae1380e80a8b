"""--explain: it agrees with should_masquerade, names the rule and the files behind it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap, pvector

from masq.core.addresses import Family, IPAddress, family_of, parse_ip
from masq.core.decision import LINK_LOCAL, should_masquerade
from masq.core.explain import Explanation, render_explanation
from masq.core.fragment import Fragment, parse_fragment
from masq.core.iptables.codec import render_rule
from masq.core.iptables.explain import explain
from masq.core.iptables.model import Chain, Rule, Ruleset
from masq.core.iptables.rules import RETURN_COMMENT, desired_ruleset
from masq.core.merge import Merged, merge
from masq.core.options import DataplaneOptions

CHAIN = "IP-MASQ-AGENT"
POOL4 = [
    "10.0.0.0/8",
    "10.240.0.0/16",
    "10.240.7.0/24",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "169.254.169.254/32",
    "100.64.0.0/10",
    "203.0.113.0/24",
    "0.0.0.0/0",
]
POOL6 = ["fd00::/8", "fd00:1::/32", "fe80::/10", "2001:db8::/32", "::/0"]
NETS = [ipaddress.ip_network(c) for c in POOL4 + POOL6]


def _nets(draw: st.DrawFn) -> object:
    chosen = draw(st.lists(st.sampled_from(NETS), max_size=4, unique=True))
    return pvector(chosen)


@st.composite
def fragment(draw: st.DrawFn, index: int) -> Fragment:
    maybe_bool = st.one_of(st.none(), st.booleans())
    return Fragment(
        source=f"ip-masq-{index}",
        non_masquerade_cidrs=_nets(draw) if draw(st.booleans()) else None,  # type: ignore[arg-type]
        masquerade_cidrs=_nets(draw) if draw(st.booleans()) else None,  # type: ignore[arg-type]
        masq_link_local=draw(maybe_bool),
        masq_link_local_ipv6=draw(maybe_bool),
    )


@st.composite
def configs(draw: st.DrawFn) -> tuple[list[Fragment], Merged]:
    count = draw(st.integers(0, 3))
    frags = [draw(fragment(i)) for i in range(count)]
    return frags, merge(frags, enable_ipv6=True).unwrap()


@st.composite
def addresses(draw: st.DrawFn, frags: list[Fragment], merged: Merged) -> IPAddress:
    """Edges of every CIDR in play (first, last and their neighbours) or anything."""
    nets = [*NETS, *merged.config.non_masquerade_cidrs, *LINK_LOCAL.values()]
    net = draw(st.sampled_from(nets))
    top = (1 << net.max_prefixlen) - 1
    edge = draw(
        st.sampled_from(
            [
                int(net.network_address) - 1,
                int(net.network_address),
                int(net.broadcast_address),
                int(net.broadcast_address) + 1,
                draw(st.integers(0, top)),
            ]
        )
    )
    value = min(max(edge, 0), top)
    return ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)


def desired(merged: Merged, family: Family) -> Ruleset:
    return desired_ruleset(merged.config, family, DataplaneOptions(enable_ipv6=True))


@given(st.data())
def test_explain_matches_should_masquerade(data: st.DataObject) -> None:
    """For any config of up to three files and any address (CIDR edges and their neighbours, or any
    address), explain on the desired rules gives the verdict should_masquerade gives, agrees with
    the config, and names the deciding rule of our chain."""
    # Mutation: reading the chain last-match (or ignoring the masquerade exceptions
    # that come first) makes the verdict differ for addresses in masqueradeCIDRs.
    frags, merged = data.draw(configs())
    ip = data.draw(addresses(frags, merged))
    family: Family = "ipv4" if ip.version == 4 else "ipv6"
    e = explain(ip, ruleset=desired(merged, family), fragments=frags, merged=merged)
    assert e.masquerade == should_masquerade(merged.config, ip)
    assert e.agrees is True
    assert e.rule_text is not None
    assert e.rule_text.startswith(f"-A {CHAIN} ")


@given(st.data())
def test_explain_names_exactly_the_files_that_put_the_rule_there(data: st.DataObject) -> None:
    """For any config and address, every origin explain gives for the deciding rule is one the
    config accounts for, and its CIDR contains the address: masqueradeCIDRs or nonMasqueradeCIDRs
    with exactly the files listing that CIDR in that key, the default ranges only when no file sets
    nonMasqueradeCIDRs, the built-in link-local range, or the final catch-all (a /0)."""
    # Mutation: taking sources from the other CIDR key (masquerade for a RETURN rule), or
    # dropping the "default" branch, breaks the file sets or leaves a desired rule unexplained.
    frags, merged = data.draw(configs())
    ip = data.draw(addresses(frags, merged))
    family: Family = "ipv4" if ip.version == 4 else "ipv6"
    e = explain(ip, ruleset=desired(merged, family), fragments=frags, merged=merged)
    assert e.origins
    assert all(o.kind not in ("not in config", "foreign rule", "no rule") for o in e.origins)
    for o in e.origins:
        if o.kind == "masqueradeCIDRs":
            want = {f.source for f in frags if o.cidr in (f.masquerade_cidrs or ())}
            assert set(o.sources) == want and want
        elif o.kind == "nonMasqueradeCIDRs":
            want = {f.source for f in frags if o.cidr in (f.non_masquerade_cidrs or ())}
            assert set(o.sources) == want and want
        elif o.kind == "default":
            assert all(f.non_masquerade_cidrs is None for f in frags)
        elif o.kind == "built-in link-local":
            assert o.cidr in LINK_LOCAL.values()
        else:
            assert o.kind == "final catch-all"
            assert o.cidr is not None and o.cidr.prefixlen == 0
        if o.cidr is not None:
            assert ip in o.cidr


@given(st.data())
def test_also_matches_lists_exactly_the_later_matching_rules(data: st.DataObject) -> None:
    """For any config and address, the "also matches" list is every rule after the deciding
    one, starting with the very next, that matches the address by its CIDR, in chain order."""
    frags, merged = data.draw(configs())
    ip = data.draw(addresses(frags, merged))
    ruleset = desired(merged, family_of(ip))
    e = explain(ip, ruleset=ruleset, fragments=frags, merged=merged)
    assert e.position is not None
    rules = ruleset.chains[CHAIN].rules
    assert e.shadowed == tuple(
        render_rule(CHAIN, r)
        for r in rules[e.position :]
        if r.role != "default" and (r.destination is None or ip in r.destination)
    )


def test_also_matches_lists_a_slash_zero_rule() -> None:
    """A 0.0.0.0/0 RETURN (written without -d) matches every address: when an exception
    decides first, it is listed; the catch-all never is."""
    frags, merged = _merged(
        ("ip-masq-a", "nonMasqueradeCIDRs: [0.0.0.0/0]\nmasqueradeCIDRs: [10.0.0.0/8]")
    )
    e = _explain("10.0.0.1", frags, merged)
    assert e.position == 1
    assert len(e.shadowed) == 1
    assert "-d " not in e.shadowed[0] and e.shadowed[0].endswith("-j RETURN")


def test_also_matches_starts_right_after_the_deciding_rule() -> None:
    """10.0.0.1 is decided by the 10.0.0.0/8 RETURN; the 10.0.0.0/16 RETURN right after it
    (canonical order puts the shorter prefix first) also matches, and is listed."""
    frags, merged = _merged(("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/16, 10.0.0.0/8]"))
    e = _explain("10.0.0.1", frags, merged)
    assert (e.position, e.rule_text) == (
        2,
        keep_rule("10.0.0.0/8"),
    )
    assert e.shadowed == (keep_rule("10.0.0.0/16"),)
    assert render_explanation(e, "desired").count("also matches (later, no effect): ") == 1


def keep_rule(cidr: str) -> str:
    """Our RETURN rule for ``cidr``, as iptables-save prints it."""
    return f'-A {CHAIN} -d {cidr} -m comment --comment "{RETURN_COMMENT}" -j RETURN'


def _merged(*texts: tuple[str, str]) -> tuple[list[Fragment], Merged]:
    frags = [parse_fragment(text, name).unwrap() for name, text in texts]
    return frags, merge(frags).unwrap()


def _explain(
    ip: str, frags: list[Fragment], merged: Merged, ruleset: Ruleset | None = None
) -> Explanation:
    address = parse_ip(ip).unwrap()
    rs = ruleset if ruleset is not None else desired(merged, "ipv4")
    return explain(address, ruleset=rs, fragments=frags, merged=merged)


def test_origins_by_kind() -> None:
    frags, merged = _merged(
        ("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqueradeCIDRs: [10.240.0.0/16]"),
        ("ip-masq-b", "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: false"),
    )
    e = _explain("10.240.0.9", frags, merged)
    assert (e.verdict, e.origins[0].kind, e.origins[0].sources) == (
        "masquerade",
        "masqueradeCIDRs",
        ("ip-masq-a",),
    )
    assert e.shadowed == (keep_rule("10.0.0.0/8"),)
    e = _explain("10.1.2.3", frags, merged)
    assert (e.verdict, e.origins[0].kind, e.origins[0].sources) == (
        "keep source",
        "nonMasqueradeCIDRs",
        ("ip-masq-a", "ip-masq-b"),
    )
    e = _explain("169.254.169.254", frags, merged)
    assert e.origins[0].kind == "built-in link-local"
    assert e.origins[0].sources == ("ip-masq-b",)
    assert "masqLinkLocal is set false by ip-masq-b" in e.origins[0].note
    e = _explain("8.8.8.8", frags, merged)
    assert (e.verdict, e.origins[0].kind, str(e.origins[0].cidr)) == (
        "masquerade",
        "final catch-all",
        "0.0.0.0/0",
    )


def test_default_ranges_are_named_as_defaults() -> None:
    frags, merged = _merged(("ip-masq-x", "masqLinkLocal: true"))
    e = _explain("172.20.0.1", frags, merged)
    assert e.origins[0].kind == "default"
    assert "RFC 1918" in e.origins[0].note
    assert e.masquerade is False


def test_live_rules_that_disagree_are_called_stale() -> None:
    frags, merged = _merged(("ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]"))
    live = desired(merged, "ipv4")
    chain = live.chains[CHAIN]
    stale = Rule("RETURN", RETURN_COMMENT, destination=ipaddress.ip_network("203.0.113.0/24"))
    live = Ruleset("ipv4", live.chains.set(CHAIN, Chain(CHAIN, pvector([stale, *chain.rules]))))
    e = _explain("203.0.113.7", frags, merged, live)
    assert e.verdict == "keep source"
    assert e.origins[0].kind == "not in config"
    assert e.config_masquerade is True
    assert e.agrees is False
    assert "next sync will change them" in render_explanation(e, "live")


def test_foreign_rule_makes_the_verdict_unknown() -> None:
    frags, merged = _merged()
    live = desired(merged, "ipv4")
    foreign = Rule("OTHER", "", spec="-s 1.2.3.4/32 -j ACCEPT")
    chain = live.chains[CHAIN]
    live = Ruleset("ipv4", live.chains.set(CHAIN, Chain(CHAIN, pvector([foreign, *chain.rules]))))
    e = _explain("8.8.8.8", frags, merged, live)
    assert e.verdict == "unknown" and e.masquerade is None and e.agrees is None
    assert e.origins[0].kind == "foreign rule"


def test_no_jump_no_chain_local_and_disabled_family() -> None:
    frags, merged = _merged()
    ip = parse_ip("8.8.8.8").unwrap()
    empty = Ruleset("ipv4", pmap())
    e = explain(ip, ruleset=empty, fragments=frags, merged=merged)
    assert e.masquerade is False and "does not jump" in e.origins[0].note
    e = explain(ip, ruleset=empty, fragments=frags, merged=merged, chain=CHAIN)
    assert e.masquerade is False and "does not exist" in e.origins[0].note
    # A LOCAL address skips the POSTROUTING jump: neither the rules nor the config masquerade
    # it, though the config alone would masquerade 8.8.8.8 as a remote destination.
    assert should_masquerade(merged.config, ip) is True
    e = explain(ip, ruleset=desired(merged, "ipv4"), merged=merged, local=True)
    assert e.masquerade is False and "LOCAL" in e.origins[0].note
    assert e.config_masquerade is False and e.agrees is True
    assert render_explanation(e, "live").endswith("config says: keep source\n")
    v6 = parse_ip("2001:db8::1").unwrap()
    e = explain(v6, ruleset=None, merged=merged)
    assert e.masquerade is False and e.config_masquerade is None
    with pytest.raises(ValueError, match=r"^2001:db8::1 is not an ipv4 address$"):
        explain(v6, ruleset=desired(merged, "ipv4"), merged=merged)
