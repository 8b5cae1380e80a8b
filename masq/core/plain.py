"""A config file's text as plain values, before any key means anything.

Plain values are str, int, float, bool, None, ``Timestamp``, list and ``Pairs``: the
shapes both JSON and YAML give, so one validator (``fragment``) reads either.  JSON is
tried first when the text looks like it (exact numbers, duplicate keys kept); anything
else is YAML, whose reader (and PyYAML) is imported on first use: an agent whose config
dir is empty or JSON never pays for it, which a short-lived ``--once`` notices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from returns.result import Result, Success

from masq.core.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Pairs:
    """A mapping as its ordered pairs: YAML keys may be unhashable, and duplicates matter."""

    pairs: tuple[tuple[object, object], ...]


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A YAML 1.1 timestamp scalar, kept as text only to be reported as a wrong type."""

    text: str


SHOWN_CHARS = 80
"""How much of an offending value (or YAML tag) an error message quotes."""

Loaded = Result[object, ConfigError]
"""Plain values, or why the text holds none the config format allows."""


@dataclass(frozen=True, slots=True)
class _JsonPairs:
    pairs: tuple[tuple[str, object], ...]


def _to_plain(value: object) -> object:
    """JSON's values in the same shapes the YAML reader produces."""
    if isinstance(value, _JsonPairs):
        return Pairs(tuple((k, _to_plain(v)) for k, v in value.pairs))
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed")


def load(text: str) -> Loaded:
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
    from masq.core.yaml_reader import load_yaml  # here: only a YAML file pays for PyYAML

    return load_yaml(text)
