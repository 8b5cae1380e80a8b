"""The YAML reader's run of string scalars reads a list as the event-by-event path does.

``load_yaml`` takes the entries of a list that can only be strings (quoted, or plain with
a "/") in a tight loop; every other event, and every refusal (anchors, aliases, tags),
goes through ``_Builder.event``.  The reference here feeds every event to
``_Builder.event``, as the reader did before the loop existed.
"""

from __future__ import annotations

import yaml
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from masq.core.errors import invalid
from masq.core.plain import Loaded
from masq.core.yaml_reader import _Builder, _Loader, _yaml_problem, load_yaml


def event_by_event(text: str) -> Loaded:
    """Every event through ``_Builder.event``: the general path."""
    loader = _Loader(text)
    builder = _Builder()
    try:
        while loader.check_event():
            taken = builder.event(loader, loader.get_event())
            if isinstance(taken, Failure):
                return taken
    except yaml.YAMLError as error:
        return Failure(invalid("not valid YAML or JSON: " + _yaml_problem(error)))
    finally:
        loader.dispose()
    return Success(builder.root)


# Entries as a list in a file may spell them: plain and quoted CIDRs, plain scalars the
# resolver types (no "/"), tags (YAML's, the non-specific "!", a local one), anchors and
# aliases, nested collections, and text that is not YAML at all.
ENTRIES = st.sampled_from(
    [
        "10.0.0.0/8", "fd00::/8", "a/b", "/", "'10.0.0.0/8'", '"10.0.0.0/8"', "'yes'", '"1"',
        "yes", "1", "1.5", "~", "null", "2020-01-01", "pods", "''", "10.0.0.0",
        "!!str 10.0.0.0/8", "!!str yes", "!!int 1", "!!int 1/2", "! 10.0.0.0/8", "! 1",
        "!local 10.0.0.0/8", "!!binary aGk=", "&a 10.0.0.0/8", "&b yes", "*a", "[1, x/y]",
        "{k: v/w}", "- 10.0.0.0/8", "{", "'", "10.0.0.0/8 # a comment", "!!seq [a/b]",
        "&c [a/b]", "!!map {a: b/c}",
    ]
)  # fmt: skip


@given(st.lists(ENTRIES, max_size=8), st.booleans(), st.booleans())
def test_a_list_reads_the_same_as_event_by_event(
    entries: list[str], flow: bool, nested: bool
) -> None:
    """For any list of such entries, in block or flow style, at the top level or as a
    mapping's value, ``load_yaml`` gives exactly what feeding every event to the builder
    gives: the same plain values, or the same refusal."""
    if flow:
        body = "[" + ", ".join(entries) + "]"
    else:
        body = "".join(f"\n  - {entry}" for entry in entries) or " []"
    text = f"key:{' ' if flow else ''}{body}\n" if nested else body.replace("\n  ", "\n") + "\n"
    assert load_yaml(text) == event_by_event(text)
