"""Properties of the element-level planner and the kernel model (masq/core/nftables/plan.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pyrsistent import pmap, pvector
from returns.result import Success
from strategies import cidrs, configs, egress_configs, fragment_histories, table_options

from masq.core.addresses import IPNetwork, cidr_key, family_of, uncovered
from masq.core.config import MasqConfig
from masq.core.fragment import Fragment
from masq.core.merge import merge
from masq.core.nftables.codec import state_of
from masq.core.nftables.model import (
    AddElements,
    BaseChain,
    DeleteElements,
    DeleteTable,
    NftChain,
    NftRule,
    NftSet,
    NftState,
    NftTable,
    ReplaceChain,
    ReplaceSet,
    ReplaceTable,
)
from masq.core.nftables.plan import (
    SET_RELOAD_AFTER_EDITS,
    apply_ops,
    cleanup_ops,
    load_stages,
    plan,
    replace_ops,
)
from masq.core.nftables.table import TableOptions, desired_table


@st.composite
def decayed(draw: st.DrawFn, table: NftTable) -> NftState:
    """What the kernel may hold instead of ``table``: elements lost or foreign ones added
    (still disjoint, as the kernel keeps them), chains flushed or with a foreign rule, a
    set or the table gone, the other family's table left behind."""
    sets = dict(table.sets)
    for name, s in sorted(table.sets.items()):
        kept = [e for e in sorted(s.elements, key=str) if draw(st.booleans())]
        extra = draw(st.lists(cidrs(s.family), max_size=3))
        added = [e for e in uncovered(extra) if not any(e.overlaps(k) for k in kept)]
        sets[name] = replace(s, elements=frozenset([*kept, *added]))
    chains = dict(table.chains)
    for name, c in sorted(table.chains.items()):
        how = draw(st.sampled_from(["keep", "flush", "foreign", "drop-last", "swap", "edited"]))
        if how == "flush":
            chains[name] = replace(c, rules=pvector())
        elif how == "foreign":
            foreign = NftRule(verdict=None, text='[{"accept": null}]')
            chains[name] = replace(c, rules=c.rules.append(foreign))
        elif how == "drop-last" and c.rules:
            chains[name] = replace(c, rules=c.rules.delete(len(c.rules) - 1))
        elif how == "swap" and len(c.rules) > 1:  # same rules, another order
            chains[name] = replace(c, rules=c.rules.set(0, c.rules[1]).set(1, c.rules[0]))
        elif how == "edited" and c.rules:  # same length, one rule changed
            chains[name] = replace(c, rules=c.rules.set(0, replace(c.rules[0], counter=True)))
    if draw(st.booleans()) and sets:
        del sets[draw(st.sampled_from(sorted(sets)))]
    if draw(st.booleans()):
        sets["foreign-set"] = NftSet("foreign-set", "ipv4")
    tables = []
    if draw(st.booleans()):
        tables.append(replace(table, sets=pmap(sets), chains=pmap(chains)))
    if draw(st.booleans()):
        other = "ip" if table.family == "inet" else "inet"
        tables.append(NftTable(other, table.name))  # type: ignore[arg-type]
    return state_of(tables)


def _tables_named(ops: tuple[object, ...]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for op in ops:
        if isinstance(op, ReplaceTable):
            out.add((op.table.family, op.table.name))
        elif isinstance(op, DeleteTable):
            out.add((op.family, op.name))
        elif isinstance(op, AddElements | DeleteElements | ReplaceChain):
            out.add((op.family, op.table))
    return out


@given(
    before=configs() | egress_configs(),
    after=configs() | egress_configs(),
    options=table_options(),
    data=st.data(),
)
def test_plan_reaches_desired_from_any_state_and_touches_no_other_table(
    before: MasqConfig,
    after: MasqConfig,
    options: TableOptions,
    data: st.DataObject,
) -> None:
    """From any state the kernel may hold of the agent's table (decayed, foreign-edited,
    missing, or of the other family), applying the plan in the kernel model gives exactly
    the desired table and nothing else, every op names only the agent's own table, and
    within the batch every element delete comes before every element add."""
    # Fails if adds are planned before deletes (the model refuses the overlap), if a
    # flushed chain or a foreign rule is left as it is, or if the other family's table stays.
    desired = desired_table(after, options)
    observed = data.draw(decayed(desired_table(before, options)))
    ops = plan(desired, observed)
    assert apply_ops(observed, ops) == NftState(pmap({desired.family: desired}))
    assert _tables_named(ops) <= {("ip", desired.name), ("inet", desired.name)}
    kinds = [type(op) for op in ops if isinstance(op, AddElements | DeleteElements)]
    assert kinds == sorted(kinds, key=lambda k: k is AddElements)
    assert plan(desired, apply_ops(observed, ops)) == ()


@given(config=configs() | egress_configs(), options=table_options())
def test_plan_of_the_desired_table_is_empty(config: MasqConfig, options: TableOptions) -> None:
    """A steady state writes nothing: the desired table as observed plans no op."""
    desired = desired_table(config, options)
    assert plan(desired, state_of([desired])) == ()


@given(config=configs(), options=table_options(), data=st.data())
def test_one_cidr_that_overlaps_nothing_is_one_element_op(
    config: MasqConfig, options: TableOptions, data: st.DataObject
) -> None:
    """Adding (or removing) a CIDR that overlaps nothing in its list is exactly one element
    op carrying that one CIDR: every other element, and its counter, stays."""
    family = data.draw(st.sampled_from(options.families))
    kind = data.draw(st.sampled_from(["masquerade", "non-masquerade"]))
    listed = config.masquerade_cidrs if kind == "masquerade" else config.non_masquerade_cidrs
    net: IPNetwork = data.draw(cidrs(family))
    if any(net.overlaps(n) for n in listed if family_of(n) == family):
        return
    grown = listed.append(net)
    if kind == "masquerade":
        bigger = replace(config, masquerade_cidrs=grown)
    else:
        bigger = replace(config, non_masquerade_cidrs=grown)
    small, big = desired_table(config, options), desired_table(bigger, options)
    set_name = f"{kind}-v{4 if family == 'ipv4' else 6}"
    assert plan(big, state_of([small])) == (AddElements(big.family, big.name, set_name, (net,)),)
    assert plan(small, state_of([big])) == (
        DeleteElements(small.family, small.name, set_name, (net,)),
    )


@given(options=table_options(), data=st.data())
def test_model_refuses_overlapping_elements(options: TableOptions, data: st.DataObject) -> None:
    """Like the kernel, the model refuses an element that overlaps one the set holds or
    another in the same op (an equal element is no change), and a delete of an absent one."""
    table = desired_table(MasqConfig(), options)
    name = "non-masquerade-v4"
    a, b = data.draw(cidrs("ipv4")), data.draw(cidrs("ipv4"))
    state = apply_ops(state_of([table]), [AddElements(table.family, table.name, name, (a,))])
    add_b = AddElements(table.family, table.name, name, (b,))
    if a == b or not a.overlaps(b):
        assert b in apply_ops(state, [add_b]).tables[table.family].sets[name].elements
    else:
        with pytest.raises(ValueError, match="overlaps"):
            apply_ops(state, [add_b])
    if b != a:
        with pytest.raises(ValueError, match="does not exist"):
            apply_ops(state, [DeleteElements(table.family, table.name, name, (b,))])


def test_replace_and_cleanup_ops() -> None:
    """The full-sync fallback replaces the table whole and drops the other family's; cleanup
    deletes every table of ours and nothing else."""
    options = TableOptions(enable_ipv6=True)
    desired = desired_table(MasqConfig(), options)
    stale = NftTable("ip", desired.name)
    observed = state_of([stale, replace(desired, chains=pmap())])
    assert replace_ops(desired, observed) == (
        ReplaceTable(desired),
        DeleteTable("ip", desired.name),
    )
    assert apply_ops(observed, replace_ops(desired, observed)) == state_of([desired])
    assert cleanup_ops(observed) == (
        DeleteTable("inet", desired.name),
        DeleteTable("ip", desired.name),
    )
    assert apply_ops(observed, cleanup_ops(observed)) == NftState()


def test_chain_replacement_keeps_the_hook_and_needs_its_targets() -> None:
    """A chain edit keeps the chain's hook; a rule naming a missing set or chain is refused."""
    desired = desired_table(MasqConfig(), TableOptions())
    base = desired.chains["postrouting"]
    broken = NftChain(base.name, None, pvector([NftRule(verdict="jump", target="nowhere")]))
    with pytest.raises(ValueError, match="missing chain"):
        apply_ops(state_of([desired]), [ReplaceChain(desired.family, desired.name, broken)])
    emptied = apply_ops(
        state_of([desired]),
        [ReplaceChain(desired.family, desired.name, replace(base, rules=pvector()))],
    )
    assert emptied.tables["ip"].chains["postrouting"].base == base.base
    assert emptied.tables["ip"].chains["postrouting"].rules == pvector()


@given(config=configs(), options=table_options(), extra=st.integers(SET_RELOAD_AFTER_EDITS + 1, 40))
def test_many_edits_to_one_set_reload_it_whole(
    config: MasqConfig, options: TableOptions, extra: int
) -> None:
    """More than SET_RELOAD_AFTER_EDITS element changes in one set reload that set (flush
    and fill) instead of editing element by element, and still reach the desired table."""
    base = 0x64400000  # 100.64.0.0, outside the strategies' seeds
    nets = [ipaddress.IPv4Network((base + i * 256, 24)) for i in range(extra)]
    kept = [n for n in config.non_masquerade_cidrs if not any(n.overlaps(x) for x in nets)]
    bigger = replace(config, non_masquerade_cidrs=pvector([*kept, *nets]))
    small = replace(config, non_masquerade_cidrs=pvector(kept))
    before, after = desired_table(small, options), desired_table(bigger, options)
    ops = plan(after, state_of([before]))
    assert [type(op) for op in ops] == [ReplaceSet]
    assert apply_ops(state_of([before]), ops) == state_of([after])


@pytest.mark.parametrize(
    ("family", "rule", "why"),
    [
        ("ip", NftRule(verdict="return", nfproto="ipv4"), "meta nfproto is only useful"),
        (
            "ip",
            NftRule(verdict="return", family="ipv6", daddr=ipaddress.ip_network("fe80::/10")),
            "conflicting protocols",
        ),
        (
            "inet",
            NftRule(
                verdict="return",
                nfproto="ipv4",
                family="ipv6",
                daddr=ipaddress.ip_network("fe80::/10"),
            ),
            "conflicting protocols",
        ),
        (
            "inet",
            NftRule(verdict="return", family="ipv4", daddr_set="non-masquerade-v6"),
            "datatype mismatch",
        ),
    ],
)
def test_apply_ops_refuses_rules_whose_protocols_nft_refuses(
    family: str, rule: NftRule, why: str
) -> None:
    """As nft 1.0.6 does: ``meta nfproto`` outside an inet table, a payload of the other
    family than the table's or the rule's nfproto, a set of the other family; the same
    rules of the right family are accepted."""
    desired = desired_table(MasqConfig(), TableOptions(enable_ipv6=family == "inet"))
    chain = replace(desired.chains["postrouting"], rules=pvector([rule]))
    op = ReplaceChain(desired.family, desired.name, chain)
    with pytest.raises(ValueError, match=why):
        apply_ops(state_of([desired]), [op])
    with pytest.raises(ValueError, match=why):
        apply_ops(NftState(), [ReplaceTable(replace(desired, chains=pmap({chain.name: chain})))])
    right = replace(rule, nfproto=None, family=None if rule.daddr is None else "ipv4")
    right = replace(right, daddr=None if rule.daddr is None else ipaddress.ip_network("10.0.0.0/8"))
    ok = replace(chain, rules=pvector([replace(right, daddr_set=None)]))
    applied = apply_ops(state_of([desired]), [ReplaceChain(desired.family, desired.name, ok)])
    assert applied.tables[desired.family].chains["postrouting"] == ok


def _fresh_objects(table: NftTable) -> NftTable:
    """``table`` as a listing would give it: equal, but no elements object shared."""
    sets = {
        n: replace(s, elements=frozenset(set(s.elements)), index=None)
        for n, s in table.sets.items()
    }
    return replace(table, sets=pmap(sets))


# Fails if the delta a derived set records is taken against a kernel table it was not
# derived from, or if it is recorded backwards (stale for missing).
@given(data=st.data(), options=table_options())
def test_plan_from_the_previous_desired_table_equals_plan_from_a_listing(
    data: st.DataObject, options: TableOptions
) -> None:
    """For any sequence of incrementally merged configs, planning each derived table
    against the previous desired table (the kernel known to hold it, sharing its elements
    objects) gives the same ops as planning it against an equal table read from a listing,
    and applying them to the kernel model yields the desired table."""
    history = data.draw(fragment_histories(ipv6=options.enable_ipv6))
    previous: tuple[MasqConfig, NftTable] | None = None
    merged = None
    for frags in history:
        result = merge(frags, enable_ipv6=options.enable_ipv6, previous=merged)
        if not isinstance(result, Success):
            continue
        merged = result.unwrap()
        table = desired_table(merged.config, options, previous)
        if previous is not None:
            known = state_of([previous[1]])
            ops = plan(table, known)
            assert ops == plan(table, state_of([_fresh_objects(previous[1])]))
            assert apply_ops(known, ops).tables[table.family] == table
        previous = (merged.config, table)


class _NotCompared(frozenset[IPNetwork]):
    """Elements that must not be compared or walked (a plan of a derived set must not)."""

    def __sub__(self, other: object) -> frozenset[IPNetwork]:
        raise AssertionError("the plan compared every element")

    def __rsub__(self, other: object) -> frozenset[IPNetwork]:
        raise AssertionError("the plan compared every element")

    def __iter__(self) -> Iterator[IPNetwork]:
        raise AssertionError("the plan walked every element")


def test_plan_of_a_derived_set_compares_no_element() -> None:
    """A one-CIDR edit of a 2,000-CIDR config, planned against the desired table the
    kernel is known to hold, is one element op computed without comparing or walking
    the 2,000 elements that did not change."""
    nets = [ipaddress.IPv4Network((0x0B000000 + (i << 9), 24)) for i in range(2000)]
    options = TableOptions()
    first = merge([Fragment("a", pvector(nets), cidr_limit=5000)]).unwrap()
    known = desired_table(first.config, options)
    old = known.sets["non-masquerade-v4"]
    guarded = _NotCompared(old.elements)
    index = replace(old.index, of=guarded) if old.index is not None else None
    known = replace(
        known, sets=known.sets.set(old.name, replace(old, elements=guarded, index=index))
    )
    extra = ipaddress.IPv4Network("12.0.0.0/24")
    second = merge(
        [Fragment("a", pvector([*nets, extra]), cidr_limit=5000)], previous=first
    ).unwrap()
    table = desired_table(second.config, options, (first.config, known))
    assert plan(table, state_of([known])) == (
        AddElements("ip", known.name, "non-masquerade-v4", (extra,)),
    )


def slash24s(count: int) -> list[IPNetwork]:
    """``count`` disjoint /24s from 100.64.0.0, outside the strategies' seeds."""
    return [ipaddress.IPv4Network((0x64400000 + i * 256, 24)) for i in range(count)]


# Fails if the threshold is off by one (">=" for ">"): exactly SET_RELOAD_AFTER_EDITS
# changes would then reload the set and reset every element's counter.
@given(
    config=configs(),
    options=table_options(),
    edits=st.integers(1, SET_RELOAD_AFTER_EDITS),
    deletes=st.integers(0, SET_RELOAD_AFTER_EDITS),
)
@example(config=MasqConfig(), options=TableOptions(), edits=SET_RELOAD_AFTER_EDITS, deletes=3)
@example(config=MasqConfig(), options=TableOptions(), edits=SET_RELOAD_AFTER_EDITS, deletes=0)
def test_up_to_the_threshold_edits_stay_element_ops(
    config: MasqConfig, options: TableOptions, edits: int, deletes: int
) -> None:
    """Up to SET_RELOAD_AFTER_EDITS element changes in one set (deletes and adds counted
    together) are planned element by element: one delete op and one add op at most, carrying
    exactly the changed elements, and they reach the desired table."""
    stale = min(deletes, edits)
    nets = slash24s(edits)
    kept = [n for n in config.non_masquerade_cidrs if not any(n.overlaps(x) for x in nets)]
    before = desired_table(
        replace(config, non_masquerade_cidrs=pvector([*kept, *nets[:stale]])), options
    )
    after = desired_table(
        replace(config, non_masquerade_cidrs=pvector([*kept, *nets[stale:]])), options
    )
    ops = plan(after, state_of([before]))
    name = "non-masquerade-v4"
    expected = (
        [DeleteElements(after.family, after.name, name, tuple(nets[:stale]))] if stale else []
    ) + (
        [AddElements(after.family, after.name, name, tuple(nets[stale:]))] if edits > stale else []
    )
    assert list(ops) == expected
    assert apply_ops(state_of([before]), ops) == state_of([after])


# Fails if the planner ignores a set's opaque elements (a range, say): element edits cannot
# delete what the model cannot name, so the foreign element would stay in the kernel.
def test_a_set_with_opaque_elements_is_replaced_with_the_table() -> None:
    """A set holding an element the model cannot express (kept as opaque text) makes the
    plan replace the table whole, even when every element it can name is as desired."""
    desired = desired_table(
        MasqConfig(non_masquerade_cidrs=pvector([ipaddress.ip_network("10.0.0.0/8")])),
        TableOptions(),
    )
    name = "non-masquerade-v4"
    foreign = replace(desired.sets[name], opaque=('{"elem": {"range": ["1.0.0.1", "1.0.0.9"]}}',))
    observed = state_of([replace(desired, sets=desired.sets.set(name, foreign))])
    assert plan(desired, observed) == (ReplaceTable(desired),)
    assert apply_ops(observed, plan(desired, observed)) == state_of([desired])


# Fails if the model's overlap check misses an interval that touches another's last address
# (a strict "<" for "<="): the kernel refuses 10.0.0.255/32 beside 10.0.0.0/24.
def test_model_refuses_an_element_on_the_last_address_of_another() -> None:
    """10.0.0.255/32 overlaps 10.0.0.0/24 (its last address): the model refuses adding it to
    a set holding the /24, reloading a set with both, and a table whose set holds both;
    10.0.1.0/32, just past the /24, is accepted."""
    table = desired_table(MasqConfig(), TableOptions())
    name = "non-masquerade-v4"
    wide, last, past = map(ipaddress.IPv4Network, ["10.0.0.0/24", "10.0.0.255/32", "10.0.1.0/32"])
    state = apply_ops(state_of([table]), [AddElements(table.family, table.name, name, (wide,))])
    with pytest.raises(ValueError, match="overlaps"):
        apply_ops(state, [AddElements(table.family, table.name, name, (last,))])
    both = replace(table.sets[name], elements=frozenset({wide, last}))
    with pytest.raises(ValueError, match="overlaps"):
        apply_ops(state, [ReplaceSet(table.family, table.name, both)])
    with pytest.raises(ValueError, match="overlaps"):
        apply_ops(NftState(), [ReplaceTable(replace(table, sets=table.sets.set(name, both)))])
    grown = apply_ops(state, [AddElements(table.family, table.name, name, (past,))])
    assert grown.tables["ip"].sets[name].elements == {wide, past}


# Fails if the planner compares chains by their rules only: a base chain whose hook moved
# (another priority, say) would keep it, since a chain edit keeps the hook it finds.
@pytest.mark.parametrize(
    "moved",
    [BaseChain(priority=100), BaseChain(policy="drop"), BaseChain(hook="prerouting"), None],
    ids=["priority", "policy", "hook", "no hook"],
)
def test_a_moved_base_chain_hook_replaces_the_table(moved: BaseChain | None) -> None:
    """A base chain with the desired rules but another hook, priority or policy (or none)
    makes the plan replace the table whole, which puts the hook back."""
    desired = desired_table(MasqConfig(), TableOptions())
    chain = desired.chains["postrouting"]
    observed = state_of(
        [replace(desired, chains=desired.chains.set(chain.name, replace(chain, base=moved)))]
    )
    assert plan(desired, observed) == (ReplaceTable(desired),)
    assert apply_ops(observed, plan(desired, observed)) == state_of([desired])


@given(config=configs() | egress_configs(), options=table_options())
def test_a_load_in_stages_makes_the_table_and_decides_nothing_before_its_rules(
    config: MasqConfig, options: TableOptions
) -> None:
    """On a node without a table of ours, the three stages of ``load_stages`` applied in turn
    make exactly what ``ReplaceTable(desired)`` makes; until the last stage every base chain
    has no rule (the table decides nothing), and the elements go in canonical order."""
    desired = desired_table(config, options)
    structure, elements, rules = load_stages(desired)
    state = apply_ops(NftState(), structure)
    for step in ((), elements):
        state = apply_ops(state, step)
        table = state.tables[desired.family]
        assert all(not c.rules for c in table.chains.values() if c.base is not None)
        assert table.chains.keys() == desired.chains.keys()
    state = apply_ops(state, rules)
    assert state == apply_ops(NftState(), (ReplaceTable(desired),))
    for op in elements:
        assert list(op.elements) == sorted(op.elements, key=cidr_key)
