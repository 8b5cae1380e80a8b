"""``--explain`` on the nftables dataplane: the deciding rule or element and its origin."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from strategies import configs, probe_addresses

from masq.core.config import MasqConfig
from masq.core.decision import should_masquerade
from masq.core.explain import render_explanation
from masq.core.fragment import parse_fragment
from masq.core.merge import Merged, merge
from masq.core.nftables.explain import explain as explain_nft
from masq.core.nftables.table import desired_table
from masq.core.options import DataplaneOptions
from masq.core.traffic import Counters

TEXT = (
    "nonMasqueradeCIDRs: [10.0.0.0/8, 10.244.0.0/16]\n"
    "masqueradeCIDRs: [10.240.0.0/16, 'fd00:1::/64']\n"
    "masqLinkLocalIPv6: true\n"
)


def merged_config() -> tuple[list[object], Merged]:
    fragment = parse_fragment(TEXT, "ip-masq-user").unwrap()
    return [fragment], merge([fragment], enable_ipv6=True).unwrap()


def test_each_step_names_its_rule_element_and_file() -> None:
    fragments, merged = merged_config()
    table = desired_table(merged.config, DataplaneOptions(enable_ipv6=True))
    s = table.sets["non-masquerade-v4"]
    counted = replace(s, counters={ipaddress.ip_network("10.0.0.0/8"): Counters(7, 700)})
    table = replace(table, sets=table.sets.set(s.name, counted))

    def explain(ip: str, local: bool = False) -> str:
        e = explain_nft(
            ipaddress.ip_address(ip),
            table=table,
            fragments=fragments,  # type: ignore[arg-type]
            merged=merged,
            local=local,
        )
        return render_explanation(e, "live")

    kept = explain("10.244.1.1")
    assert "masqueraded: no" in kept
    element = "(element 10.0.0.0/8, counter 7 packets 700 bytes)"
    assert f"@non-masquerade-v4 counter return {element}" in kept
    assert "nonMasqueradeCIDRs 10.0.0.0/8: listed in nonMasqueradeCIDRs of ip-masq-user" in kept
    assert "10.244.0.0/16 (covered by 10.0.0.0/8: not stored)" in kept
    exception = explain("10.240.0.1")
    assert "masqueraded: yes" in exception
    assert "@masquerade-v4 counter jump snat-to-node" in exception
    assert "masqueradeCIDRs 10.240.0.0/16: listed in masqueradeCIDRs of ip-masq-user" in exception
    link_local = explain("169.254.169.254")
    assert "ip daddr 169.254.0.0/16 counter return" in link_local
    assert "built-in link-local" in link_local
    assert "masqueraded: yes" in explain("fe80::1")  # masqLinkLocalIPv6: no link-local rule
    catch_all = explain("8.8.8.8")
    assert "meta nfproto ipv4 counter jump snat-to-node" in catch_all
    assert "final catch-all 0.0.0.0/0" in catch_all
    local = explain("10.244.1.1", local=True)
    assert "masqueraded: no" in local and "LOCAL address" in local
    assert "config says: keep source" in local


def test_no_table_masquerades_nothing() -> None:
    _, merged = merged_config()
    e = explain_nft(ipaddress.ip_address("8.8.8.8"), table=None, merged=merged)
    assert e.verdict == "keep source" and e.config_masquerade is True and e.agrees is False


@given(config=configs(), ipv6=st.booleans(), data=st.data())
def test_explained_verdict_is_should_masquerade(
    config: MasqConfig, ipv6: bool, data: st.DataObject
) -> None:
    """On the desired table, the explained verdict equals the config's decision for every
    address of an enabled family (the agent and --explain can never disagree in sync)."""
    options = DataplaneOptions(enable_ipv6=ipv6)
    table = desired_table(config, options)
    merged = Merged(config, merge([]).unwrap().conflicts)
    for ip in probe_addresses(config, data):
        if ip.version == 6 and not ipv6:
            continue
        e = explain_nft(ip, table=table, merged=merged)
        assert e.masquerade is should_masquerade(config, ip), ip
        assert e.agrees is True
