"""The HTTP server: /healthz, /readyz and /metrics as a client sees them, and start-up errors."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from fake_clock import FakeClock
from prometheus_client.parser import text_string_to_metric_families

from masq.shell import http
from masq.shell.errors import ServerError
from masq.shell.metrics import Metrics
from masq.shell.options import BindAddress


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    clock = FakeClock()
    m = Metrics(resync_interval=1.0, clock=clock)
    server = http.start_server(BindAddress("127.0.0.1", 0), m)
    assert isinstance(server, http.MetricsServer)
    try:
        yield m, server.port
    finally:
        server.shutdown()


def get(port: int, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_http_endpoints(served: tuple[Metrics, int]) -> None:
    m, port = served
    assert get(port, "/healthz")[0] == 200
    code, _, body = get(port, "/readyz")
    assert (code, body) == (503, "no successful sync yet\n")
    m.sync_finished(True, 0.01)
    assert get(port, "/readyz")[:1] == (200,)
    code, ctype, body = get(port, "/metrics")
    assert code == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    parsed = {f.name for f in text_string_to_metric_families(body)}
    assert "ip_masq_agent_syncs" in parsed
    assert get(port, "/nope")[0] == 404
    m._clock.now += 10  # type: ignore[attr-defined]
    code, _, body = get(port, "/healthz")
    assert code == 503
    assert "stalled" in body


def test_http_disabled_and_unassignable_address() -> None:
    assert http.start_server(None, Metrics()) is None
    with pytest.raises(ServerError) as raised:
        http.start_server(BindAddress("192.0.2.77", 9), Metrics())  # not an address of ours
    assert str(raised.value) == (
        "cannot serve /metrics on 192.0.2.77:9: Cannot assign requested address"
        " (set --metrics-bind-address)"
    )


def test_http_port_in_use_is_one_line_error(served: tuple[Metrics, int]) -> None:
    _, port = served
    with pytest.raises(ServerError, match=f"127.0.0.1:{port}"):
        http.start_server(BindAddress("127.0.0.1", port), Metrics())


def _wakeups(native_id: int) -> int:
    """How often the thread went to sleep and woke (voluntary context switches)."""
    with open(f"/proc/self/task/{native_id}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_an_idle_server_thread_sleeps_until_a_request_or_shutdown() -> None:
    """Between requests the server thread never wakes (socketserver's serve_forever polls
    for shutdown five times a second at poll_interval=0.2); a request and a shutdown
    still wake it at once."""
    server = http.start_server(BindAddress("127.0.0.1", 0), Metrics())
    assert server is not None
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "masq-http"]
        assert thread.native_id is not None
        time.sleep(0.1)  # asleep in its select by now
        before = _wakeups(thread.native_id)
        time.sleep(0.8)
        assert _wakeups(thread.native_id) - before <= 1
        assert get(server.port, "/healthz")[0] == 200
    finally:
        started = time.monotonic()
        server.shutdown()
    assert time.monotonic() - started < 0.5
    assert not thread.is_alive()
