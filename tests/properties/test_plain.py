"""A config file's text as plain values: JSON and YAML of one document read the same.

The two readers are separate code (``json`` with a pairs hook, and the YAML event
reader), yet the validator after them sees only their output: any difference between
them would make one spelling of a ConfigMap mean something the other does not.
"""

from __future__ import annotations

import json
import math

import yaml
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Success

from masq.core.plain import Pairs, load

# Control characters aside: PyYAML's dumper writes some (NEL) raw, which YAML reads as a
# line break; a dumper's quirk, not what a reader is asked to agree on.
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
# A document is a mapping or a list: text that starts otherwise is read as YAML (a config
# must be a mapping anyway), and YAML has no JSON-style surrogate-pair escapes.
DOCUMENTS = st.lists(VALUES, max_size=4) | st.dictionaries(TEXT, VALUES, max_size=4)


def plain(value: object) -> object:
    """What the readers make of ``value``: mappings as their ordered pairs."""
    if isinstance(value, dict):
        return Pairs(tuple((k, plain(v)) for k, v in value.items()))
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@given(DOCUMENTS)
def test_json_and_yaml_of_one_document_read_the_same(document: object) -> None:
    expected = Success(plain(document))
    assert load(json.dumps(document)) == expected
    assert load(yaml.safe_dump(document, allow_unicode=True, sort_keys=False)) == expected
    assert load(yaml.safe_dump(document, default_flow_style=True, sort_keys=False)) == expected


# Fails if load lets json.loads turn NaN, Infinity or -Infinity into floats: they are not
# JSON, and no YAML spelling of them (.nan, .inf) is one either in the YAML 1.1 core we read.
@given(DOCUMENTS, st.sampled_from(["NaN", "Infinity", "-Infinity"]))
def test_json_constants_never_become_floats(document: object, constant: str) -> None:
    """Any JSON document with NaN, Infinity or -Infinity put in as a value loads (as YAML,
    since it is not JSON) with that value read as the string written, and holds no float
    that is not finite anywhere."""
    # ensure_ascii=False: YAML has no surrogate-pair escapes; "key" comes last, so its value
    # is the text's end.
    text = json.dumps({"x": document, "key": 0}, ensure_ascii=False).removesuffix("0}")
    text += constant + "}"
    loaded = load(text)
    assert isinstance(loaded, Success)
    values = loaded.unwrap()
    assert isinstance(values, Pairs)
    assert dict(values.pairs)["key"] == constant
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in leaves(values))


def leaves(value: object) -> list[object]:
    if isinstance(value, Pairs):
        return [leaf for pair in value.pairs for v in pair for leaf in leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in leaves(v)]
    return [value]
