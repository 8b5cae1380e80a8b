"""Logging setup: key=value or JSON lines on stderr, klog-style verbosity, log reduction.

Convention for every caller: ``log.info("event text", extra={"kv": {"key": value}})``;
the formatter renders ``kv`` as ``key=value`` pairs (or JSON fields).  One event is
always one line, so log shippers never split a record.

Verbosity follows klog: ``--v=0`` shows info, warnings and errors; ``log.log(vlevel(n),
...)`` shows at ``--v=n`` and above; ``log.debug`` is ``vlevel(2)``.  At ``--v=0`` an
identical record (same level, message and fields) is written at most once per hour, so a
steady state that keeps saying the same thing does not fill the node's disk (upstream v1
issue #164).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import TextIO

from masq.shell.options import LogFormat

LOG = logging.getLogger("masq")
REPEAT_SECONDS = 3600.0
_MAX_REMEMBERED = 4096
_HANDLER_NAME = "masq-observability"
_LEVEL_NAMES = {
    logging.CRITICAL: "critical",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
}


def vlevel(n: int) -> int:
    """The logging level of klog's ``V(n)``: 0 is INFO, 1 sits between, 2 and up are DEBUG."""
    if n <= 0:
        return logging.INFO
    if n == 1:
        return logging.INFO - 5
    return max(logging.DEBUG - (n - 2), 1)


def _level_name(levelno: int) -> str:
    if levelno in _LEVEL_NAMES:
        return _LEVEL_NAMES[levelno]
    if levelno > logging.INFO:
        return "warning" if levelno < logging.ERROR else "error"
    return "info" if levelno > logging.DEBUG else "debug"


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    kv = getattr(record, "kv", None)
    return kv if isinstance(kv, Mapping) else {}


def _plain(value: object) -> object:
    """A JSON-ready value: scalars as they are, collections as lists, anything else as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, AbstractSet):
        return sorted((_plain(v) for v in value), key=str)
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_plain(v) for v in value]
    return str(value)


def _text_value(value: object) -> str:
    plain = _plain(value)
    if plain is None:
        text = "null"
    elif isinstance(plain, bool):
        text = "true" if plain else "false"
    elif isinstance(plain, list):
        text = ",".join(_text_value(v) for v in plain)
    elif isinstance(plain, dict):
        text = json.dumps(plain, separators=(",", ":"), sort_keys=True)
    else:
        text = str(plain)
    if text == "" or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)  # quoted and escaped: newlines become \n, one line stays one
    return text


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return None


class TextFormatter(logging.Formatter):
    """``time=... level=... msg="..." key=value ...`` (logfmt), one line per record."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"time={_timestamp(record.created)}",
            f"level={_level_name(record.levelno)}",
            f"msg={_text_value(record.getMessage())}",
        ]
        for key, value in _fields(record).items():
            parts.append(f"{key}={_text_value(value)}")
        exc = _exception_text(self, record)
        if exc is not None:
            parts.append(f"exception={_text_value(exc)}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``msg``, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": _level_name(record.levelno),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            out.setdefault(str(key), _plain(value))
        exc = _exception_text(self, record)
        if exc is not None:
            out.setdefault("exception", exc)
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False, default=str)


class RepeatFilter(logging.Filter):
    """Passes an identical record (level, message, fields) at most once per ``interval``.

    The clock is injectable so tests need not wait an hour.  Memory stays bounded: when
    too many distinct records are remembered, those older than the interval are forgotten.
    """

    def __init__(
        self, interval: float = REPEAT_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[int, str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            key = (
                record.levelno,
                record.getMessage(),
                json.dumps(_plain(dict(_fields(record))), sort_keys=True, default=str),
            )
        except Exception:
            return True  # a record we cannot key is better written than lost
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        if len(self._last) > _MAX_REMEMBERED:
            self._last = {k: t for k, t in self._last.items() if now - t < self.interval}
        return True


def make_handler(
    verbosity: int = 0,
    fmt: LogFormat = "text",
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> logging.Handler:
    """The one handler ``setup`` installs (exposed so tests can point it at a buffer)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if verbosity <= 0:
        handler.addFilter(RepeatFilter(clock=clock))
    return handler


def setup(
    verbosity: int = 0,
    fmt: LogFormat = "text",
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Route the ``masq`` logger to stderr in ``fmt`` at klog verbosity ``verbosity``.

    Idempotent: calling it again replaces the previous handler (tests, re-exec).
    Records still propagate (the root logger has no handler in the agent, so nothing
    is written twice, and pytest's caplog keeps working).
    """
    for old in list(LOG.handlers):
        if old.get_name() == _HANDLER_NAME:
            LOG.removeHandler(old)
    LOG.addHandler(make_handler(verbosity, fmt, stream, clock))
    LOG.setLevel(vlevel(verbosity))
