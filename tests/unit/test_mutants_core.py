"""Examples that pin core behaviour a hand-made mutant once changed without a test failing.

Each test names, in its comment, the change it catches; benchmarks/mutants.py applies those
changes (and more) one at a time and reports which the suites kill.  They go through the
public API (``masq``, ``masq.nftables``) where it reaches the behaviour.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from pyrsistent import pvector

from masq import Conflict, Fragment, merge, nftables
from masq.core.traffic import Counters


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# Fails if adjacent masquerade spans are not joined: 10.0.0.0/9 and 10.128.0.0/9 touch
# without overlapping, and only their union covers 10.0.0.0/8.
def test_two_adjacent_masquerade_cidrs_cover_a_non_masquerade_one() -> None:
    """masqueradeCIDRs [10.0.0.0/9, 10.128.0.0/9] in one file and nonMasqueradeCIDRs
    [10.0.0.0/8] in another: exactly one conflict, on the /8, naming both /9s."""
    merged = merge(
        [
            Fragment("a.yaml", masquerade_cidrs=pvector([net("10.0.0.0/9"), net("10.128.0.0/9")])),
            Fragment("b.yaml", non_masquerade_cidrs=pvector([net("10.0.0.0/8")])),
        ]
    ).unwrap()
    assert list(merged.conflicts) == [
        Conflict(
            "nonMasqueradeCIDRs",
            pvector(
                [
                    ("a.yaml", "masqueradeCIDRs 10.0.0.0/9"),
                    ("a.yaml", "masqueradeCIDRs 10.128.0.0/9"),
                    ("b.yaml", "nonMasqueradeCIDRs 10.0.0.0/8"),
                ]
            ),
            "10.0.0.0/8 has no effect: masqueradeCIDRs cover it whole (masquerade wins)",
            net("10.0.0.0/8"),
        )
    ]


# Fails if the supernet search stops one prefix short: 10.0.0.0/8 is the immediate
# supernet of 10.128.0.0/9, and the conflict would lose the file that covers it.
def test_the_covering_immediate_supernet_is_named() -> None:
    """masqueradeCIDRs [10.0.0.0/8] against nonMasqueradeCIDRs [10.128.0.0/9]: the conflict
    names the covering 10.0.0.0/8 and its file."""
    merged = merge(
        [
            Fragment("a.yaml", masquerade_cidrs=pvector([net("10.0.0.0/8")])),
            Fragment("b.yaml", non_masquerade_cidrs=pvector([net("10.128.0.0/9")])),
        ]
    ).unwrap()
    assert [str(c) for c in merged.conflicts] == [
        "conflict on nonMasqueradeCIDRs: a.yaml=masqueradeCIDRs 10.0.0.0/8,"
        " b.yaml=nonMasqueradeCIDRs 10.128.0.0/9; 10.128.0.0/9 has no effect:"
        " masqueradeCIDRs cover it whole (masquerade wins)"
    ]


# Fails if positions count from 0: --explain would then print "rule 4" for the fifth rule.
def test_positions_in_the_default_table_count_from_one() -> None:
    """In the default table (RFC 1918, link-local kept) the base chain reads: local return,
    masquerade set, link-local return, non-masquerade set, catch-all; 8.8.8.8 is decided by
    the catch-all at position 5, in first_match and in the explanation alike, 10.1.2.3 by
    rule 4 and 169.254.1.1 by rule 3."""
    table = nftables.desired_table(merge([]).unwrap().config, nftables.TableOptions())
    for address, position in [("8.8.8.8", 5), ("10.1.2.3", 4), ("169.254.1.1", 3)]:
        ip = ipaddress.ip_address(address)
        match = nftables.first_match(table, ip)
        assert match is not None and match.position == position, address
        assert nftables.explain(ip, table=table).position == position, address


# Fails if the catch-all's counters are filed under ipv4 whatever its nfproto: an inet table
# has one catch-all per family, and IPv6 traffic would be reported as 0.0.0.0/0.
def test_inet_catch_all_counters_are_reported_per_family() -> None:
    """In an inet table, the counters of the ``meta nfproto ipv6`` catch-all are reported as
    ipv6 ::/0 and those of the ``meta nfproto ipv4`` one as ipv4 0.0.0.0/0."""
    table = nftables.desired_table(
        merge([]).unwrap().config, nftables.TableOptions(enable_ipv6=True)
    )
    chain = table.chains["postrouting"]
    counted = {"ipv4": Counters(3, 300), "ipv6": Counters(7, 700)}
    rules = pvector(
        replace(r, counters=counted[r.nfproto]) if r.nfproto is not None else r for r in chain.rules
    )
    assert sum(r.nfproto is not None for r in rules) == 2
    traffic = nftables.traffic_of(
        replace(table, chains=table.chains.set(chain.name, replace(chain, rules=rules)))
    )
    catch_alls = {
        (row.family, row.cidr): (row.packets, row.bytes)
        for rows in traffic.values()
        for row in rows
        if row.cidr in ("0.0.0.0/0", "::/0")
    }
    assert catch_alls == {("ipv4", "0.0.0.0/0"): (3, 300), ("ipv6", "::/0"): (7, 700)}


# Fails if the evaluator ignores "meta nfproto": in an inet table an IPv6 address would
# then be decided by the ipv4 catch-all, and --explain would name (and count) the wrong rule.
def test_each_family_reaches_its_own_catch_all_in_an_inet_table() -> None:
    """In the default inet table the catch-alls come last, ipv4's (rule 8) before ipv6's
    (rule 9); 8.8.8.8 is decided by rule 8 and 2001:db8::1 by rule 9, in first_match and in
    the explanation alike."""
    options = nftables.TableOptions(enable_ipv6=True)
    table = nftables.desired_table(merge([], enable_ipv6=True).unwrap().config, options)
    for address, position, family in [("8.8.8.8", 8, "ipv4"), ("2001:db8::1", 9, "ipv6")]:
        ip = ipaddress.ip_address(address)
        match = nftables.first_match(table, ip)
        assert match is not None and match.position == position, address
        assert match.rule.nfproto == family
        assert nftables.explain(ip, table=table).position == position, address


# Fails if a CIDR whose last address is that of a CIDR covering it counts as uncovered
# (10.255.0.0/16 ends where 10.0.0.0/8 ends): the set would hold overlapping elements,
# which an interval set refuses, and the whole table write would fail.
def test_a_cidr_ending_where_its_cover_ends_is_not_stored() -> None:
    """nonMasqueradeCIDRs [10.0.0.0/8, 10.255.0.0/16, 10.255.255.255/32] and the IPv6 pair
    [fd00::/8, fdff::/16]: each set stores only the covering CIDR."""
    config = merge(
        [
            Fragment(
                "a.yaml",
                non_masquerade_cidrs=pvector(
                    [net(n) for n in ("10.0.0.0/8", "10.255.0.0/16", "10.255.255.255/32")]
                    + [net("fd00::/8"), net("fdff::/16")]
                ),
            )
        ],
        enable_ipv6=True,
    ).unwrap()
    table = nftables.desired_table(config.config, nftables.TableOptions(enable_ipv6=True))
    assert table.sets["non-masquerade-v4"].elements == {net("10.0.0.0/8")}
    assert table.sets["non-masquerade-v6"].elements == {net("fd00::/8")}
