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
from dataclasses import dataclass
from typing import Final

import yaml
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.cidrs import parse_cidr
from masq.core.duration import parse_duration_ns
from masq.core.errors import ConfigError
from masq.core.model import DEFAULT_CIDR_LIMIT, IPNetwork, sorted_cidrs

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


class _Rejected(Exception):
    """Raised inside the loader only; always turned into a ``Failure`` before returning."""


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


def _scalar(loader: yaml.SafeLoader | yaml.CSafeLoader, event: yaml.ScalarEvent) -> object:
    tag = event.tag
    if tag is None or tag == "!":
        if event.implicit[0]:
            tag = loader.resolve(  # type: ignore[no-untyped-call]
                yaml.ScalarNode, event.value, (True, False)
            )
        else:
            tag = _TAG + "str"
    if tag not in _SCALAR_TAGS:
        raise _Rejected(_tag_message(tag))
    if tag == _TAG + "str":
        return event.value
    if tag == _TAG + "timestamp":
        return _Date(event.value)
    node = yaml.ScalarNode(tag, event.value)
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError, yaml.YAMLError) as error:
        raise _Rejected(f"unparsable {tag.removeprefix(_TAG)} value: {error}") from None


def _load_yaml(text: str) -> object:
    """The single document's value (``None`` for an empty stream); iterative, no recursion."""
    loader = _Loader(text)
    try:
        documents = 0
        root: object = None
        # Stack of open containers: a list, or a list of pairs plus a pending key.
        stack: list[list[object] | tuple[list[tuple[object, object]], list[object]]] = []

        def add(value: object) -> None:
            nonlocal root
            if not stack:
                root = value
                return
            top = stack[-1]
            if isinstance(top, list):
                top.append(value)
            else:
                pairs, pending = top
                if pending:
                    pairs.append((pending.pop(), value))
                else:
                    pending.append(value)

        while loader.check_event():
            event = loader.get_event()
            anchor = getattr(event, "anchor", None)
            if isinstance(event, yaml.AliasEvent) or anchor is not None:
                raise _Rejected("YAML anchors and aliases are not allowed")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _Rejected("more than one YAML document")
            elif isinstance(event, yaml.ScalarEvent):
                add(_scalar(loader, event))
            elif isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
                if event.tag not in (None, "!", _TAG + kind):
                    raise _Rejected(_tag_message(event.tag))
                stack.append([] if kind == "seq" else ([], []))
            elif isinstance(event, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                done = stack.pop()
                add(list(done) if isinstance(done, list) else _Map(tuple(done[0])))
        return root
    finally:
        loader.dispose()


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


def _load(text: str) -> object:
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
            return _to_plain(loaded)
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


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, _Date):
        return "a date"
    if isinstance(value, list):
        return "a list"
    return "a mapping"


def _suggest(key: str) -> str:
    by_lower = {k.lower(): k for k in KNOWN_KEYS}
    close = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {by_lower[close[0]]}?"
    return "unknown key; known keys are " + ", ".join(KNOWN_KEYS)


_Parsed = PVector[IPNetwork] | bool | float | int


def _cidr_list(source: str, key: str, value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, list):
        return Failure(
            ConfigError(
                source,
                f"wrong type: expected a list of CIDR strings, got {_kind(value)}",
                key=key,
                value=_show(value),
            )
        )
    nets: list[IPNetwork] = []
    for index, entry in enumerate(value):
        if entry is None or entry == "":
            what = "null" if entry is None else "empty"
            return Failure(
                ConfigError(source, f"{what} entry: expected a CIDR string", key=key, index=index)
            )
        if not isinstance(entry, str):
            return Failure(
                ConfigError(
                    source,
                    f"wrong type: expected a CIDR string, got {_kind(entry)}",
                    key=key,
                    index=index,
                    value=_show(entry),
                )
            )
        parsed = parse_cidr(entry)
        if isinstance(parsed, Failure):
            return Failure(
                ConfigError(source, parsed.failure(), key=key, index=index, value=_show(entry))
            )
        nets.append(parsed.unwrap())
    return Success(sorted_cidrs(nets))


def _boolean(source: str, key: str, value: object) -> Result[_Parsed, ConfigError]:
    if isinstance(value, bool):
        return Success(value)
    return Failure(
        ConfigError(
            source,
            f"wrong type: expected true or false (unquoted), got {_kind(value)}",
            key=key,
            value=_show(value),
        )
    )


def _duration(source: str, key: str, value: object) -> Result[_Parsed, ConfigError]:
    if not isinstance(value, str):
        return Failure(
            ConfigError(
                source,
                f"wrong type: expected a Go duration string like 60s or 1m30s, got {_kind(value)}",
                key=key,
                value=_show(value),
            )
        )
    return (
        parse_duration_ns(value)
        .map(lambda ns: ns / 1_000_000_000)
        .alt(lambda why: ConfigError(source, why, key=key, value=_show(value)))
    )


def _limit(source: str, key: str, value: object) -> Result[_Parsed, ConfigError]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value >= 0:
            return Success(value)
        return Failure(ConfigError(source, "must not be negative", key=key, value=_show(value)))
    return Failure(
        ConfigError(
            source,
            f"wrong type: expected a non-negative integer, got {_kind(value)}",
            key=key,
            value=_show(value),
        )
    )


_CHECKS: dict[str, Callable[[str, str, object], Result[_Parsed, ConfigError]]] = {
    NON_MASQUERADE_CIDRS: _cidr_list,
    MASQUERADE_CIDRS: _cidr_list,
    MASQ_LINK_LOCAL: _boolean,
    MASQ_LINK_LOCAL_IPV6: _boolean,
    RESYNC_INTERVAL: _duration,
    CIDR_LIMIT: _limit,
}


def _fragment(source: str, document: object) -> Result[Fragment, ConfigError]:
    if document is None:
        return Success(Fragment(source))
    if not isinstance(document, _Map):
        return Failure(
            ConfigError(
                source,
                f"not a mapping: the top level must map keys to values, got {_kind(document)}",
                value=_show(document),
            )
        )
    found: dict[str, _Parsed] = {}
    for key, value in document.pairs:
        if not isinstance(key, str):
            return Failure(
                ConfigError(
                    source,
                    f"key is {_kind(key)}, expected one of " + ", ".join(KNOWN_KEYS),
                    value=_show(key),
                )
            )
        if key not in _CHECKS:
            return Failure(ConfigError(source, _suggest(key), key=key))
        if key in found:
            return Failure(ConfigError(source, "duplicate key", key=key))
        if value is None:
            return Failure(
                ConfigError(source, "null value: give a value or leave the key out", key=key)
            )
        checked = _CHECKS[key](source, key, value)
        if isinstance(checked, Failure):
            return Failure(checked.failure())
        found[key] = checked.unwrap()
    fragment = Fragment(
        source,
        non_masquerade_cidrs=found.get(NON_MASQUERADE_CIDRS),  # type: ignore[arg-type]
        masquerade_cidrs=found.get(MASQUERADE_CIDRS),  # type: ignore[arg-type]
        masq_link_local=found.get(MASQ_LINK_LOCAL),  # type: ignore[arg-type]
        masq_link_local_ipv6=found.get(MASQ_LINK_LOCAL_IPV6),  # type: ignore[arg-type]
        resync_interval=found.get(RESYNC_INTERVAL),  # type: ignore[arg-type]
        cidr_limit=found.get(CIDR_LIMIT),  # type: ignore[arg-type]
    )
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
            ConfigError(
                source, f"file is {len(raw)} bytes, over the limit of {MAX_FRAGMENT_BYTES} (1 MiB)"
            )
        )
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return Failure(ConfigError(source, f"not UTF-8 text (bad byte at offset {error.start})"))
    try:
        document = _load(decoded)
    except _Rejected as error:
        return Failure(ConfigError(source, str(error)))
    except yaml.YAMLError as error:
        return Failure(ConfigError(source, "not valid YAML or JSON: " + _yaml_problem(error)))
    return _fragment(source, document)


def _yaml_problem(error: yaml.YAMLError) -> str:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        return " ".join(f"{error.problem or 'syntax error'}{where}".split())
    return " ".join(str(error).split())[:200]
