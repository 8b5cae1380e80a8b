"""YAML's event stream read into plain values (``plain``), libyaml when available.

Built here from events, with a stack instead of recursion, rather than by PyYAML's
constructor: that is what lets the reader refuse anchors and aliases (alias bombs) and
every tag that would construct an object.  Imported by ``plain.load`` only when a file
is YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from returns.result import Failure, Success

from masq.core.errors import invalid
from masq.core.plain import SHOWN_CHARS, Loaded, Pairs, Timestamp

_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


def _tag_message(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return (
        f"YAML tag {shown[:SHOWN_CHARS]!r} is not allowed (only plain values, lists and mappings)"
    )


def _scalar(loader: yaml.SafeLoader | yaml.CSafeLoader, event: yaml.ScalarEvent) -> Loaded:
    tag = event.tag
    if tag is None or tag == "!":
        if event.implicit[0] and "/" not in event.value:
            tag = loader.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, event.value, (True, False)
            )
        else:
            # Quoted, or a plain scalar with a "/" (a CIDR): no YAML 1.1 implicit type
            # (int, float, bool, null, timestamp) has one, so it is a string; skipping the
            # resolver's regexes halves the cost of a 50,000-entry list.
            tag = _TAG + "str"
    if tag not in _SCALAR_TAGS:
        return Failure(invalid(_tag_message(tag)))
    if tag == _TAG + "str":
        return Success(event.value)
    if tag == _TAG + "timestamp":
        return Success(Timestamp(event.value))
    node = yaml.ScalarNode(tag, event.value)
    try:
        return Success(loader.construct_object(node, deep=True))
    except (ValueError, OverflowError, yaml.YAMLError) as error:
        return Failure(invalid(f"unparsable {tag.removeprefix(_TAG)} value: {error}"))


class _Builder:
    """Plain values from YAML events, with a stack instead of recursion."""

    def __init__(self) -> None:
        self.root: object = None
        self.documents = 0
        # Open containers: a list, or a list of pairs plus a pending key.
        self._stack: list[list[object] | tuple[list[tuple[object, object]], list[object]]] = []

    def add(self, value: object) -> None:
        if not self._stack:
            self.root = value
            return
        top = self._stack[-1]
        if isinstance(top, list):
            top.append(value)
        else:
            pairs, pending = top
            if pending:
                pairs.append((pending.pop(), value))
            else:
                pending.append(value)

    def event(self, loader: yaml.SafeLoader | yaml.CSafeLoader, event: object) -> Loaded:
        """Take one event; a Failure for what the config format does not allow."""
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            return Failure(invalid("YAML anchors and aliases are not allowed"))
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                return Failure(invalid("more than one YAML document"))
        elif isinstance(event, yaml.ScalarEvent):
            return _scalar(loader, event).map(self.add)
        elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            if event.tag not in (None, "!", _TAG + kind):
                return Failure(invalid(_tag_message(event.tag)))
            self._stack.append([] if kind == "seq" else ([], []))
        elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
            done = self._stack.pop()
            self.add(list(done) if isinstance(done, list) else Pairs(tuple(done[0])))
        return Success(None)

    def strings(self, get_event: Callable[[], object]) -> object:
        """Append to the list just opened the run of events that can only be strings
        (quoted scalars, and plain ones with a "/": see ``_scalar``) carrying no anchor or
        tag, and return the first event that is not one, for ``event`` to take.

        A long CIDR list is one such run: no ``Result``, no type tests and no method
        calls per entry beyond reading the event.
        """
        items = self._stack[-1]
        assert isinstance(items, list)  # called right after a SequenceStartEvent
        append, scalar_event = items.append, yaml.ScalarEvent
        while True:
            event: Any = get_event()
            if (
                type(event) is not scalar_event
                or event.anchor is not None
                or event.tag is not None
                or (event.implicit[0] and "/" not in event.value)
            ):
                return event
            append(event.value)


def load_yaml(text: str) -> Loaded:
    """The single document's value (``None`` for an empty stream)."""
    loader = _Loader(text)
    builder = _Builder()
    get_event = loader.get_event
    try:
        event = get_event()
        while event is not None:
            taken = builder.event(loader, event)
            if isinstance(taken, Failure):
                return taken
            if type(event) is yaml.SequenceStartEvent:
                event = builder.strings(get_event)
            else:
                event = get_event()
    except yaml.YAMLError as error:
        return Failure(invalid("not valid YAML or JSON: " + _yaml_problem(error)))
    finally:
        loader.dispose()
    return Success(builder.root)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        return " ".join(f"{error.problem or 'syntax error'}{where}".split())
    return " ".join(str(error).split())[:200]
