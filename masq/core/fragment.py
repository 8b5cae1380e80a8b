"""One config file (a fragment of the effective config) and its strict parser.

The parser is the trust boundary: text from a ConfigMap becomes a ``Fragment``
only if every value is exactly what the key allows, so nothing downstream ever
re-validates.  YAML is read as an event stream (libyaml when available) and
built into plain values here, which is what lets us refuse anchors/aliases
(alias bombs) and every tag that would construct an object, without recursion.
An empty file, or one holding only ``null``, is a fragment with no opinion on
any key.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import yaml
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.addresses import IPNetwork, parse_cidr, sorted_cidrs
from masq.core.config import DEFAULT_CIDR_LIMIT
from masq.core.duration import parse_duration_ns
from masq.core.errors import ConfigError, invalid

MAX_FRAGMENT_BYTES = 1024 * 1024

NON_MASQUERADE_CIDRS: Final = "nonMasqueradeCIDRs"
MASQUERADE_CIDRS: Final = "masqueradeCIDRs"
MASQ_LINK_LOCAL: Final = "masqLinkLocal"
MASQ_LINK_LOCAL_IPV6: Final = "masqLinkLocalIPv6"
RESYNC_INTERVAL: Final = "resyncInterval"
CIDR_LIMIT: Final = "cidrLimit"
KNOWN_KEYS: Final = (
    NON_MASQUERADE_CIDRS,
    MASQUERADE_CIDRS,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    RESYNC_INTERVAL,
    CIDR_LIMIT,
)
_SHOWN_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Fragment:
    """A parsed, validated config file.  ``None`` means the file has no opinion on a key."""

    source: str
    non_masquerade_cidrs: PVector[IPNetwork] | None = None
    masquerade_cidrs: PVector[IPNetwork] | None = None
    masq_link_local: bool | None = None
    masq_link_local_ipv6: bool | None = None
    resync_interval: float | None = None  # seconds, from a Go duration string
    cidr_limit: int | None = None


# --- loading: text -> plain values (str, int, float, bool, None, _Date, list, _Map) ---


@dataclass(frozen=True, slots=True)
class _Map:
    """A mapping as its ordered pairs: YAML keys may be unhashable, and duplicates matter."""

    pairs: tuple[tuple[object, object], ...]


@dataclass(frozen=True, slots=True)
class _Date:
    """A YAML 1.1 timestamp scalar, kept as text only to be reported as a wrong type."""

    text: str


_Loader: type[yaml.SafeLoader] | type[yaml.CSafeLoader]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


def _tag_message(tag: str) -> str:
    shown = "!!" + tag.removeprefix(_TAG) if tag.startswith(_TAG) else tag
    return (
        f"YAML tag {shown[:_SHOWN_VALUE_CHARS]!r} is not allowed"
        " (only plain values, lists and mappings)"
    )


_Loaded = Result[object, ConfigError]
"""Plain values (str, int, float, bool, None, _Date, list, _Map), or why not."""


def _scalar(loader: yaml.SafeLoader | yaml.CSafeLoader, event: yaml.ScalarEvent) -> _Loaded:
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
        return Success(_Date(event.value))
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

    def event(self, loader: yaml.SafeLoader | yaml.CSafeLoader, event: object) -> _Loaded:
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
            self.add(list(done) if isinstance(done, list) else _Map(tuple(done[0])))
        return Success(None)


def _load_yaml(text: str) -> _Loaded:
    """The single document's value (``None`` for an empty stream)."""
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


def _to_plain(value: object) -> object:
    """JSON's values in the same shapes the YAML builder produces."""
    if isinstance(value, _JsonPairs):
        return _Map(tuple((k, _to_plain(v)) for k, v in value.pairs))
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class _JsonPairs:
    pairs: tuple[tuple[str, object], ...]


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def _load(text: str) -> _Loaded:
    """JSON first when it looks like JSON (exact number/duplicate handling), else YAML."""
    if text.lstrip(" \t\r\n\ufeff")[:1] in ("{", "["):
        try:
            loaded = json.loads(
                text.lstrip("\ufeff"),
                object_pairs_hook=lambda pairs: _JsonPairs(tuple(pairs)),
                parse_constant=_reject_constant,
            )
        except (ValueError, RecursionError):
            pass  # flow-style YAML such as {a: 1}; YAML gives the error if it is neither
        else:
            return Success(_to_plain(loaded))
    return _load_yaml(text)


# --- validation: plain values -> Fragment ---


def _show(value: object) -> str:
    """A bounded, single-line rendering of an offending value (ConfigError repr()s it)."""
    if isinstance(value, _Date):
        text = value.text
    elif isinstance(value, _Map):
        text = "{...}"
    elif isinstance(value, list):
        text = "[...]"
    else:
        text = str(value)
    if len(text) > _SHOWN_VALUE_CHARS:
        text = text[:_SHOWN_VALUE_CHARS] + "..."
    return text


_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"),
    (bool, "a boolean"),  # before int: a bool is an int
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (_Date, "a date"),
    (list, "a list"),
)


def _kind(value: object) -> str:
    """How an error message names the type of a value a file gave."""
    return next((name for cls, name in _KINDS if isinstance(value, cls)), "a mapping")


def _suggest(key: str) -> str:
    by_lower = {k.lower(): k for k in KNOWN_KEYS}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {by_lower[close[0]]}?"
    return "unknown key; known keys are " + ", ".join(KNOWN_KEYS)


_Parsed = PVector[IPNetwork] | bool | float | int


def _wrong_type(expected: str, value: object) -> ConfigError:
    return invalid(f"wrong type: expected {expected}, got {_kind(value)}", _show(value))


def _cidr_entry(index: int, entry: object) -> Result[IPNetwork, ConfigError]:
    if entry is None or entry == "":
        what = "null" if entry is None else "empty"
        return Failure(ConfigError("", f"{what} entry: expected a CIDR string", index=index))
    if not isinstance(entry, str):
        return Failure(replace(_wrong_type("a CIDR string", entry), index=index))
    return parse_cidr(entry).alt(lambda e: replace(e, index=index, value=_show(entry)))


def _cidr_list(value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, list):
        return Failure(_wrong_type("a list of CIDR strings", value))
    nets: list[IPNetwork] = []
    for index, entry in enumerate(value):
        match _cidr_entry(index, entry):
            case Success(net):
                nets.append(net)
            case Failure(error):
                return Failure(error)
    return Success(sorted_cidrs(nets))


def _boolean(value: object) -> Result[_Parsed, ConfigError]:
    if isinstance(value, bool):
        return Success(value)
    return Failure(_wrong_type("true or false (unquoted)", value))


def _duration(value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, str):
        return Failure(_wrong_type("a Go duration string like 60s or 1m30s", value))
    return (
        parse_duration_ns(value)
        .map(lambda ns: ns / 1_000_000_000)
        .alt(lambda e: replace(e, value=_show(value)))
    )


def _limit(value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, int) or isinstance(value, bool):
        return Failure(_wrong_type("a non-negative integer", value))
    if value < 0:
        return Failure(invalid("must not be negative", _show(value)))
    return Success(value)


_Check = Callable[[object], Result[_Parsed, ConfigError]]
_KEYS: dict[str, tuple[_Check, str]] = {
    NON_MASQUERADE_CIDRS: (_cidr_list, "non_masquerade_cidrs"),
    MASQUERADE_CIDRS: (_cidr_list, "masquerade_cidrs"),
    MASQ_LINK_LOCAL: (_boolean, "masq_link_local"),
    MASQ_LINK_LOCAL_IPV6: (_boolean, "masq_link_local_ipv6"),
    RESYNC_INTERVAL: (_duration, "resync_interval"),
    CIDR_LIMIT: (_limit, "cidr_limit"),
}
"""Each key: how its value is checked, and the Fragment field it fills."""


def _entry(key: object, value: object, seen: set[str]) -> Result[tuple[str, _Parsed], ConfigError]:
    """One top-level ``key: value``, checked: the field to set and its value."""
    if not isinstance(key, str):
        return Failure(
            invalid(f"key is {_kind(key)}, expected one of " + ", ".join(KNOWN_KEYS), _show(key))
        )
    if key not in _KEYS:
        return Failure(ConfigError("", _suggest(key), key=key))
    if key in seen:
        return Failure(ConfigError("", "duplicate key", key=key))
    if value is None:
        return Failure(ConfigError("", "null value: give a value or leave the key out", key=key))
    seen.add(key)
    check, field_name = _KEYS[key]
    return check(value).map(lambda parsed: (field_name, parsed)).alt(lambda e: replace(e, key=key))


def _fragment(source: str, document: object) -> Result[Fragment, ConfigError]:
    if document is None:
        return Success(Fragment(source))
    if not isinstance(document, _Map):
        return Failure(
            invalid(
                f"not a mapping: the top level must map keys to values, got {_kind(document)}",
                _show(document),
            ).at(source)
        )
    fragment = Fragment(source)
    seen: set[str] = set()
    for key, value in document.pairs:
        match _entry(key, value, seen):
            case Success((field_name, parsed)):
                fragment = replace(fragment, **{field_name: parsed})
            case Failure(error):
                return Failure(error.at(source))
    return _within_own_limit(fragment)


def fragment_cidr_count(fragment: Fragment) -> int:
    """Distinct CIDRs the file lists, over both lists (duplicates count once)."""
    return len(set(fragment.non_masquerade_cidrs or ()) | set(fragment.masquerade_cidrs or ()))


def _within_own_limit(fragment: Fragment) -> Result[Fragment, ConfigError]:
    limit = DEFAULT_CIDR_LIMIT if fragment.cidr_limit is None else fragment.cidr_limit
    count = fragment_cidr_count(fragment)
    if count <= limit:
        return Success(fragment)
    origin = "its own" if fragment.cidr_limit is not None else "the default"
    return Failure(
        ConfigError(
            fragment.source,
            f"the file lists {count} distinct CIDRs ({NON_MASQUERADE_CIDRS} +"
            f" {MASQUERADE_CIDRS}), over {origin} {CIDR_LIMIT} of {limit}",
            key=CIDR_LIMIT,
            value=str(limit),
        )
    )


def parse_fragment(text: str | bytes, source: str) -> Result[Fragment, ConfigError]:
    """Parse one YAML/JSON config file; never raises, whatever the input."""
    try:
        return _parse(text, source)
    except Exception as error:  # a bug or a resource limit; still a clean one-line Failure
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:200]
        return Failure(ConfigError(source, f"could not read the file ({detail})"))


def _parse(text: str | bytes, source: str) -> Result[Fragment, ConfigError]:
    if isinstance(text, str):
        try:
            raw = text.encode("utf-8")
        except UnicodeEncodeError:
            return Failure(ConfigError(source, "not UTF-8 text (contains lone surrogates)"))
    else:
        raw = text
    if len(raw) > MAX_FRAGMENT_BYTES:
        return Failure(
            ConfigError(source, f"file is over the limit of {MAX_FRAGMENT_BYTES} bytes (1 MiB)")
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Failure(ConfigError(source, f"not UTF-8 text (bad byte at offset {error.start})"))
    return _load(decoded).alt(lambda e: e.at(source)).bind(lambda doc: _fragment(source, doc))


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        return " ".join(f"{error.problem or 'syntax error'}{where}".split())
    return " ".join(str(error).split())[:200]
