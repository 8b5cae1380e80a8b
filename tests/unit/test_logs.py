"""Log lines: logfmt and JSON shapes, klog verbosity, the once-per-hour repeat reduction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_clock import FakeClock
from pyrsistent import pvector

from masq.shell import logs
from masq.shell.agent import Agent, NoMetrics
from masq.shell.options import LogFormat, Options

LOG = logging.getLogger("masq")


@pytest.fixture(autouse=True)
def _restore_logger() -> Iterator[None]:
    handlers, level, propagate = list(LOG.handlers), LOG.level, LOG.propagate
    yield
    LOG.handlers[:] = handlers
    LOG.setLevel(level)
    LOG.propagate = propagate


def capture(verbosity: int = 0, fmt: LogFormat = "text") -> tuple[io.StringIO, FakeClock]:
    buf, clock = io.StringIO(), FakeClock()
    logs.setup(verbosity, fmt, stream=buf, clock=clock)
    return buf, clock


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


LOGFMT_PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)')


def parse_logfmt(line: str) -> dict[str, str]:
    """Inverse of the text format: every token is key=value, quoted values are JSON strings."""
    pairs = LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line, f"not logfmt: {line!r}"
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


def test_text_line_has_time_level_msg_then_fields_in_order() -> None:
    buf, _ = capture()
    LOG.info("sync done", extra={"kv": {"family": "ipv4", "writes": 0, "ok": True}})
    (line,) = lines(buf)
    assert re.fullmatch(
        r'time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info msg="sync done" '
        r"family=ipv4 writes=0 ok=true",
        line,
    ), line


def test_text_quotes_spaces_quotes_and_newlines_and_stays_one_line() -> None:
    buf, _ = capture()
    tricky = 'a "quoted" value\nsecond line'
    LOG.warning("x", extra={"kv": {"error": tricky, "empty": "", "eq": "a=b", "plain": "p"}})
    (line,) = lines(buf)
    fields = parse_logfmt(line)
    assert fields["level"] == "warning"
    assert fields["error"] == tricky
    assert fields["empty"] == ""
    assert fields["eq"] == "a=b"
    assert fields["plain"] == "p"
    assert "plain=p" in line  # unquoted when nothing needs quoting


def test_text_renders_collections_comma_joined() -> None:
    buf, _ = capture()
    LOG.info("cfg", extra={"kv": {"cidrs": pvector(["10.0.0.0/8", "172.16.0.0/12"])}})
    assert parse_logfmt(lines(buf)[0])["cidrs"] == "10.0.0.0/8,172.16.0.0/12"


def test_exception_stays_on_one_line() -> None:
    buf, _ = capture()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        LOG.exception("failed")
    (line,) = lines(buf)
    fields = parse_logfmt(line)
    assert fields["level"] == "error"
    assert "RuntimeError: boom" in fields["exception"]
    assert "\n" in fields["exception"]  # the traceback survives, escaped


def test_json_format_is_one_object_per_line() -> None:
    buf, _ = capture(fmt="json")
    LOG.info("sync done", extra={"kv": {"family": "ipv4", "writes": 3, "cidrs": ("a", "b")}})
    LOG.error("bad", extra={"kv": {"msg": "must not override", "reason": "x y"}})
    first, second = (json.loads(line) for line in lines(buf))
    assert list(first)[:3] == ["time", "level", "msg"]
    assert first["level"] == "info"
    assert first["msg"] == "sync done"
    assert first["writes"] == 3
    assert first["cidrs"] == ["a", "b"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "error"
    assert second["msg"] == "bad"  # a field named like a fixed key never replaces it
    assert second["reason"] == "x y"


@pytest.mark.parametrize(
    ("verbosity", "shown"),
    [
        (0, ["info", "warning", "error"]),
        (1, ["v1", "info", "warning", "error"]),
        (2, ["debug", "v1", "info", "warning", "error"]),
        (4, ["v4", "debug", "v1", "info", "warning", "error"]),
    ],
)
def test_klog_verbosity(verbosity: int, shown: list[str]) -> None:
    buf, _ = capture(verbosity)
    LOG.log(logs.vlevel(5), "v5")
    LOG.log(logs.vlevel(4), "v4")
    LOG.debug("debug")
    LOG.log(logs.vlevel(1), "v1")
    LOG.info("info")
    LOG.warning("warning")
    LOG.error("error")
    assert [parse_logfmt(line)["msg"] for line in lines(buf)] == shown


def test_identical_record_repeats_at_most_once_per_hour() -> None:
    buf, clock = capture()
    for _ in range(5):
        LOG.info("steady", extra={"kv": {"writes": 0}})
    assert len(lines(buf)) == 1
    clock.now += logs.REPEAT_SECONDS - 1
    LOG.info("steady", extra={"kv": {"writes": 0}})
    assert len(lines(buf)) == 1
    clock.now += 1
    LOG.info("steady", extra={"kv": {"writes": 0}})
    assert len(lines(buf)) == 2


def test_reduction_keys_on_level_message_and_fields() -> None:
    buf, _ = capture()
    LOG.info("steady", extra={"kv": {"writes": 0}})
    LOG.info("steady", extra={"kv": {"writes": 1}})  # other fields
    LOG.warning("steady", extra={"kv": {"writes": 0}})  # other level
    LOG.info("other", extra={"kv": {"writes": 0}})  # other message
    LOG.info("steady", extra={"kv": {"writes": 0}})  # the first again: dropped
    assert len(lines(buf)) == 4


@pytest.mark.parametrize("verbosity", [1, 2])
def test_no_reduction_above_default_verbosity(verbosity: int) -> None:
    buf, _ = capture(verbosity)
    for _ in range(3):
        LOG.info("steady")
    assert len(lines(buf)) == 3


def test_repeat_filter_memory_stays_bounded() -> None:
    clock = FakeClock()
    f = logs.RepeatFilter(clock=clock)
    for i in range(10_000):
        clock.now += 1.0  # the oldest fall out of the hour window as we go
        record = logging.LogRecord("masq", logging.INFO, __file__, 1, f"m{i}", None, None)
        assert f.filter(record)
    assert len(f._last) <= 4097


def test_setup_is_idempotent() -> None:
    buf, _ = capture()
    buf2, _ = capture()
    LOG.info("once")
    assert lines(buf) == []
    assert len(lines(buf2)) == 1
    assert len([h for h in LOG.handlers if h.get_name() == "masq-observability"]) == 1


def test_child_loggers_use_the_same_format() -> None:
    buf, _ = capture()
    logging.getLogger("masq.backend").info("chosen", extra={"kv": {"backend": "nft"}})
    assert parse_logfmt(lines(buf)[0])["backend"] == "nft"


@pytest.mark.parametrize(
    ("config", "shown"),
    [("", "1m0s"), ("resyncInterval: 1m30s\n", "1m30s"), ("resyncInterval: 500ms\n", "500ms")],
)
def test_config_loaded_line_spells_resync_interval_as_a_go_duration(
    tmp_path: Path, config: str, shown: str
) -> None:
    """The "config loaded" line shows resyncInterval as the config file spells it (Go's
    duration), as the start-up line spells flags: not a Python float such as 60.0."""
    if config:
        (tmp_path / "ip-masq-agent").write_text(config)
    buf, _ = capture()
    Agent(Options(config_dir=str(tmp_path), iptables_backend="nft"), NoMetrics()).load()
    loaded = [line for line in lines(buf) if 'msg="config loaded"' in line]
    assert [re.findall(r" resyncInterval=(\S+)", line) for line in loaded] == [[shown]]
