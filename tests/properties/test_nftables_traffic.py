"""Per-CIDR traffic from the nftables table (masq/core/nftables/traffic.py): a scrape that
reads only the series it shows gives what a full listing, capped, gives."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap, pvector
from strategies import configs, table_options

from masq.core.config import MasqConfig
from masq.core.decision import decide
from masq.core.nftables.model import POSTROUTING_CHAIN, NftTable
from masq.core.nftables.table import TableOptions, desired_table
from masq.core.nftables.traffic import scrape_plan, scraped, traffic_of
from masq.core.traffic import Counters
from masq.shell.metrics import capped

counters = st.builds(Counters, st.integers(0, 10**6), st.integers(0, 10**9))


def _counted(table: NftTable, data: st.DataObject) -> NftTable:
    """``table`` as the kernel would count it: each element and counted rule some traffic,
    each set lookup rule exactly the sum of its set's elements."""
    sets = {
        name: replace(s, counters={e: data.draw(counters) for e in s.elements})
        for name, s in table.sets.items()
    }
    chain = table.chains[POSTROUTING_CHAIN]
    rules = []
    for rule in chain.rules:
        if rule.counter and rule.daddr_set is not None:
            counted = sets[rule.daddr_set].counters.values()
            total = Counters(sum(c.packets for c in counted), sum(c.bytes for c in counted))
            rules.append(replace(rule, counters=total))
        elif rule.counter:
            rules.append(replace(rule, counters=data.draw(counters)))
        else:
            rules.append(rule)
    chains = table.chains.set(POSTROUTING_CHAIN, replace(chain, rules=pvector(rules)))
    return replace(table, sets=pmap(sets), chains=chains)


# Fails if the shown series are not the first ones in the cap's order, if "other" misses a
# rule's own counter or counts a shown series twice, or if a family whose series all fit
# gets an "other" series.
@given(config=configs(), options=table_options(), cap=st.integers(0, 12), data=st.data())
def test_a_scrape_of_the_shown_series_equals_the_capped_listing(
    config: MasqConfig, options: TableOptions, cap: int, data: st.DataObject
) -> None:
    """For any config and cap, reading only the elements of the series the cap shows plus
    the base chain's rule counters, and taking ``other`` as each action's lookup and rule
    totals minus the shown series, gives exactly the capped series of a full listing."""
    desired = desired_table(config, options)
    kernel = _counted(desired, data)
    decisions = [decide(config, f) for f in options.families]
    expected = capped([t for rows in traffic_of(kernel, decisions).values() for t in rows], cap)
    plan = scrape_plan(desired, config, options.families, cap)
    elements = {
        name: {net: kernel.sets[name].counters.get(net) for net in nets}
        for name, nets in plan.reads.items()
    }
    rules = [r.counters for r in kernel.chains[POSTROUTING_CHAIN].rules]
    got = scraped(plan, desired, elements, rules)
    assert capped([t for rows in got.values() for t in rows], cap) == expected
    assert all(len(nets) <= cap for nets in plan.reads.values())
