"""Per-CIDR counters fresh at scrape time, bounded series, and a scraper that hangs up."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from masq.core.config import MIN_RESYNC_SECONDS, MasqConfig, effective_resync
from masq.core.traffic import OTHER_CIDRS, CidrTraffic
from masq.shell import http, logs
from masq.shell.metrics import TRAFFIC_MAX_AGE_SECONDS, Metrics, capped
from masq.shell.options import BindAddress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


RESET_ON_CLOSE = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # SO_LINGER on, 0 s


def row(cidr: str, packets: int, family: str = "ipv4", action: str = "RETURN") -> CidrTraffic:
    return CidrTraffic(family, cidr, action, packets, packets * 100)  # type: ignore[arg-type]


def packets(m: Metrics) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        if fam.name == "ip_masq_agent_packets":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    out[s.labels["cidr"]] = s.value
    return out


def test_a_scrape_reads_counters_older_than_five_seconds_and_only_then() -> None:
    """Counters the sync listed are served as they are while fresh; once older than 5 s a
    scrape reads them anew, once, and scrapes in the next 5 s reuse that read."""
    clock = Clock()
    m = Metrics(clock=clock)
    reads: list[float] = []

    def refresh() -> dict[str, tuple[CidrTraffic, ...]]:
        reads.append(clock.now)
        return {"ipv4": (row("10.0.0.0/8", len(reads) * 10),)}

    m.refresh_with(refresh)  # type: ignore[arg-type]
    m.traffic({"ipv4": (row("10.0.0.0/8", 1),)})  # the sync's own listing
    assert packets(m) == {"10.0.0.0/8": 1} and reads == []
    clock.now += TRAFFIC_MAX_AGE_SECONDS - 0.1
    assert packets(m) == {"10.0.0.0/8": 1} and reads == []
    clock.now += 0.2
    assert packets(m) == {"10.0.0.0/8": 10} and len(reads) == 1
    for _ in range(5):
        assert packets(m) == {"10.0.0.0/8": 10}
    assert len(reads) == 1
    clock.now += TRAFFIC_MAX_AGE_SECONDS
    assert packets(m) == {"10.0.0.0/8": 20} and len(reads) == 2


def test_concurrent_scrapers_share_one_read_and_the_sync_never_waits() -> None:
    """Ten scrapers at once cause one listing; a sync reporting counters meanwhile is not
    held up by the listing in progress."""
    clock = Clock()
    m = Metrics(clock=clock)
    started, release = threading.Event(), threading.Event()
    reads = []

    def slow_refresh() -> dict[str, tuple[CidrTraffic, ...]]:
        reads.append(1)
        started.set()
        release.wait(5)
        return {"ipv4": (row("10.0.0.0/8", 5),)}

    m.refresh_with(slow_refresh)  # type: ignore[arg-type]
    scrapers = [threading.Thread(target=m.exposition) for _ in range(10)]
    for t in scrapers:
        t.start()
    assert started.wait(5)
    began = time.monotonic()
    m.traffic({"ipv6": (row("fd00::/8", 3, "ipv6"),)})  # the sync thread
    assert time.monotonic() - began < 0.5
    release.set()
    for t in scrapers:
        t.join(5)
    assert len(reads) == 1


def test_a_failed_read_serves_the_last_counters_and_waits_before_trying_again() -> None:
    clock = Clock()
    m = Metrics(clock=clock)
    calls = []

    def broken() -> dict[str, tuple[CidrTraffic, ...]]:
        calls.append(1)
        raise RuntimeError("iptables: lock held")

    m.refresh_with(broken)  # type: ignore[arg-type]
    m.traffic({"ipv4": (row("10.0.0.0/8", 4),)})
    clock.now += 10
    assert packets(m) == {"10.0.0.0/8": 4}
    assert packets(m) == {"10.0.0.0/8": 4}
    assert len(calls) == 1


def test_series_are_capped_per_family_in_canonical_order_with_the_rest_summed() -> None:
    """At most N CIDR series per family, chosen by CIDR order (not traffic, so membership
    changes only with the config); the rest add up, per action, under cidr="other"."""
    rows = [row(f"10.{i}.0.0/16", i) for i in range(10, 0, -1)]
    rows += [
        row("0.0.0.0/0", 50, action="MASQUERADE"),
        row("10.200.0.0/16", 7, action="MASQUERADE"),
    ]
    rows += [row("fd00::/8", 9, "ipv6")]
    out = capped(rows, 3)
    v4 = [(t.cidr, t.action, t.packets) for t in out if t.family == "ipv4"]
    assert v4[:3] == [
        ("0.0.0.0/0", "MASQUERADE", 50),
        ("10.1.0.0/16", "RETURN", 1),
        ("10.2.0.0/16", "RETURN", 2),
    ]
    assert ("other", "RETURN", sum(range(3, 11))) in v4
    assert ("other", "MASQUERADE", 7) in v4
    assert [(t.cidr, t.packets) for t in out if t.family == "ipv6"] == [("fd00::/8", 9)]
    total = sum(t.packets for t in rows)
    assert sum(t.packets for t in out) == total
    assert capped(rows, 100) == sorted(capped(rows, 100), key=lambda t: (t.family, 0))  # stable
    assert OTHER_CIDRS not in {t.cidr for t in capped(rows, 100)}


def test_resync_interval_has_a_floor() -> None:
    """A config asking for 1ns (or a flag for 0.01 s) resyncs every second, not back to back."""
    assert effective_resync(60, MasqConfig(resync_interval=1e-9)) == MIN_RESYNC_SECONDS == 1.0
    assert effective_resync(0.01, MasqConfig()) == 1.0
    assert effective_resync(60, MasqConfig(resync_interval=30)) == 30
    assert effective_resync(20, MasqConfig(resync_interval=30)) == 20


GONE = "http: client went away"


def hang_up(port: int, *, mid_response: bool) -> str:
    """GET /metrics, then reset the connection (``mid_response``: once the status line is in,
    with a receive window too small for the body, so the server is still writing); returns
    the client's address as the server logs it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mid_response:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    s.connect(("127.0.0.1", port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    if mid_response:
        assert s.recv(17) == b"HTTP/1.1 200 OK\r\n"
    client = "{}:{}".format(*s.getsockname())
    s.close()  # RST: the server's next write (or read) fails
    return client


def gone_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == GONE]


def test_a_scraper_that_hangs_up_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    """A client resetting the connection mid-response (the server blocked writing a long
    /metrics) or right after its request is exactly one info line naming the client and the
    error, never a traceback; a clean scrape and junk are none, and the server keeps
    answering."""
    m = Metrics(max_cidr_series=10_000)
    rows = tuple(row(f"10.{i // 256}.{i % 256}.0/24", i) for i in range(1500))
    m.traffic({"ipv4": rows})
    body = m.exposition()
    assert len(body) > 200_000  # far more than the socket buffers hold: the write blocks
    server = http.start_server(BindAddress("127.0.0.1", 0), m)
    assert server is not None
    try:
        with caplog.at_level(logging.DEBUG, logger="masq"):
            mid = [hang_up(server.port, mid_response=True) for _ in range(5)]
            early = [hang_up(server.port, mid_response=False) for _ in range(5)]
            clients = mid + early
            assert wait_until(lambda: len(gone_lines(caplog)) >= len(clients))
            status, text = scrape(server.port, "/metrics")  # a clean scrape: no line
            assert status == 200 and len(text) == len(body)
            junk = socket.create_connection(("127.0.0.1", server.port))
            junk.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            assert b"Error response" in junk.recv(200)  # the stdlib's 400, HTTP/0.9 style
            junk.close()
            assert scrape(server.port, "/healthz") == (200, "ok\n")
            time.sleep(0.3)  # a second line for any connection would be in by now
        lines = gone_lines(caplog)
        by_client = sorted(r.kv["client"] for r in lines)  # type: ignore[attr-defined]
        assert by_client == sorted(clients)  # exactly one line per hung-up connection
        for r in lines:
            assert r.levelno == logging.INFO and r.exc_info is None
            assert r.kv["error"] in ("BrokenPipeError", "ConnectionResetError")  # type: ignore[attr-defined]
            line = logs.TextFormatter().format(r)
            assert "\n" not in line and f"client={r.kv['client']}" in line  # type: ignore[attr-defined]
        assert "Traceback" not in caplog.text
        assert all(r.exc_info is None for r in caplog.records)
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        server.shutdown()


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def scrape(port: int, path: str) -> tuple[int, str]:
    """One GET read to its end, the connection then closed normally."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read().decode()


def test_a_write_makes_the_listed_counters_stale() -> None:
    """Counters listed before a write (the first sync lists an empty chain, then writes
    it) are not served as fresh: the next scrape reads the kernel."""
    clock = Clock()
    m = Metrics(clock=clock)
    m.refresh_with(lambda: {"ipv4": (row("10.0.0.0/8", 3),)})
    m.traffic({"ipv4": ()})
    m.counters_stale()
    assert packets(m) == {"10.0.0.0/8": 3}


def test_a_sync_listing_older_than_a_scrapes_read_never_turns_a_counter_back() -> None:
    """A sync that listed before a scrape's refresh and reports after it must not replace
    the scrape's newer counters (Prometheus would see a counter reset); one that listed
    after it does."""
    clock = Clock()
    m = Metrics(clock=clock)
    reads = iter((50, 55, 57))
    m.refresh_with(lambda: {"ipv4": (row("10.0.0.0/8", next(reads)),)})
    listed_at = m.stamp()  # the sync starts listing ...
    clock.now += TRAFFIC_MAX_AGE_SECONDS + 1
    assert packets(m) == {"10.0.0.0/8": 50}  # ... a scrape refreshes meanwhile ...
    clock.now += 0.5
    m.traffic({"ipv4": (row("10.0.0.0/8", 40),)}, listed_at)  # ... and the sync reports late
    assert packets(m) == {"10.0.0.0/8": 50}
    m.traffic({"ipv4": (row("10.0.0.0/8", 60),)}, m.stamp())  # a listing after the scrape
    assert packets(m) == {"10.0.0.0/8": 60}


def test_a_refresh_that_started_before_a_newer_sync_listing_is_dropped() -> None:
    clock = Clock()
    m = Metrics(clock=clock)

    def refresh() -> dict[str, tuple[CidrTraffic, ...]]:
        clock.now += 1  # the read takes a while; a sync reports a newer listing meanwhile
        m.traffic({"ipv4": (row("10.0.0.0/8", 70),)}, clock.now - 0.5)
        return {"ipv4": (row("10.0.0.0/8", 65),)}

    m.refresh_with(refresh)  # type: ignore[arg-type]
    assert packets(m) == {"10.0.0.0/8": 70}
