"""The one error type the core returns (never raises) for bad input."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigError:
    """Why a config input was rejected, precise enough to fix it without reading code.

    ``source`` is the file name (or another label the caller chose); ``key`` and
    ``index`` locate the offending value inside it when there is one.  ``str()``
    gives the single line the agent prints before exiting non-zero.
    """

    source: str
    message: str
    key: str | None = None
    index: int | None = None
    value: str | None = None

    def __str__(self) -> str:
        # A file name may carry control characters; the message must stay one line.
        where = self.source.encode("unicode_escape").decode("ascii")
        if self.key is not None:
            where += f": {self.key}"
            if self.index is not None:
                where += f"[{self.index}]"
        if self.value is not None:
            where += f": {self.value!r}"
        return f"{where}: {self.message}".replace("\n", "\\n").replace("\r", "\\r")
