"""The one error type the core returns (never raises) for input it rejects."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from returns.result import Failure, Result, Success

_T = TypeVar("_T")
_E = TypeVar("_E")


@dataclass(frozen=True, slots=True)
class ConfigError:
    """Why an input was rejected, precise enough to fix it without reading code.

    Every expected input error of the core is one of these, inside a ``Failure``:
    a config file, a flag value (``--to-ports``), an address given to ``--explain``,
    a kernel listing the codec cannot read.  ``source`` names where the input came
    from (a file name, a flag, a command); ``key`` and ``index`` locate the value in
    it when there is one.  ``str()`` gives the single line the agent prints before
    exiting non-zero.

    Low-level parsers do not know where their text came from: they return an error
    with an empty ``source`` and callers place it with ``at``.
    """

    source: str
    message: str
    key: str | None = None
    index: int | None = None
    value: str | None = None

    def at(self, source: str, key: str | None = None, index: int | None = None) -> ConfigError:
        """This error, located in ``source`` (and ``key[index]`` when given)."""
        return replace(
            self,
            source=source,
            key=self.key if key is None else key,
            index=self.index if index is None else index,
        )

    def __str__(self) -> str:
        # A file name may carry control characters; the message must stay one line.
        where = self.source.encode("unicode_escape").decode("ascii")
        if self.key is not None:
            where += f": {self.key}" if where else self.key
            if self.index is not None:
                where += f"[{self.index}]"
        if self.value is not None:
            where += f": {self.value!r}" if where else repr(self.value)
        text = f"{where}: {self.message}" if where else self.message
        return text.replace("\n", "\\n").replace("\r", "\\r")


def invalid(message: str, value: str | None = None) -> ConfigError:
    """An error not yet placed in a source (see ``ConfigError.at``)."""
    return ConfigError("", message, value=value)


def collect(results: Iterable[Result[_T, _E]]) -> Result[tuple[_T, ...], _E]:
    """Every value in order, or the first failure (the rest are not looked at).

    ``returns``' ``Fold.collect`` gives the same answer but builds the tuple by
    concatenation, one copy per item: quadratic, 0.4 s for a 10,000-entry list
    (this loop: under 5 ms; see README, "Libraries and their cost").
    """
    values: list[_T] = []
    for result in results:
        if isinstance(result, Failure):
            return result
        values.append(result.unwrap())
    return Success(tuple(values))
