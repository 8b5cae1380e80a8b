"""The agent's one HTTP server: /healthz, /readyz, /metrics.

stdlib ``ThreadingHTTPServer`` in a daemon thread: no framework, and a scrape or
probe never blocks the reconcile loop (the handlers only read ``Metrics``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from masq.shell.errors import ServerError
from masq.shell.metrics import Health, Metrics
from masq.shell.options import BindAddress

LOG = logging.getLogger("masq")
# What generate_latest writes; spelled out because newer clients advertise 1.0.0,
# which Prometheus 2 servers do not know (legacy metric names read the same in both).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics  # set on the per-server subclass
    server_version = "ip-masq-agent"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            self._route(path, body=body)
        except (BrokenPipeError, ConnectionResetError) as e:
            _client_gone(self.client_address, e)

    def _route(self, path: str, *, body: bool) -> None:
        try:
            if path == "/metrics":
                self._reply(200, self.metrics.exposition(), CONTENT_TYPE, body=body)
            elif path in ("/healthz", "/livez"):
                self._probe(self.metrics.healthz(), body=body)
            elif path == "/readyz":
                self._probe(self.metrics.readyz(), body=body)
            else:
                self._reply(404, b"not found: try /healthz, /readyz or /metrics\n", body=body)
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as e:  # a broken scrape must not kill the server thread
            LOG.debug("http: %s failed", path, exc_info=True)
            self._reply(500, f"internal error: {e}\n".encode(), body=body)

    def _probe(self, health: Health, *, body: bool) -> None:
        self._reply(200 if health.ok else 503, (health.reason + "\n").encode(), body=body)

    def _reply(
        self,
        code: int,
        payload: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        body: bool,
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Probes arrive every few seconds: keep them out of the agent's log unless asked."""
        LOG.debug("http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    timeout = 0  # ``handle_request`` is called once the socket is ready: never wait in it

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._wake_read, self._wake_write = os.pipe()  # first: a failed bind closes them
        self._stopping = False
        super().__init__(address, handler)

    def serve(self) -> None:
        """Serve until ``stop``, asleep in one ``select`` on the socket and a wake-up pipe.

        socketserver's ``serve_forever`` wakes every ``poll_interval`` to look for a
        shutdown request: five wake-ups a second for nothing, a few ms of CPU per second
        of an otherwise idle agent (the stdlib's own comment there suggests a wake-up fd).
        """
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake_read, selectors.EVENT_READ)
            while not self._stopping:
                ready = selector.select()
                if not self._stopping and any(key.fileobj is self for key, _ in ready):
                    self.handle_request()

    def stop(self) -> None:
        """Make ``serve`` return (from any thread)."""
        self._stopping = True
        with contextlib.suppress(OSError):  # closed already: nothing left to wake
            os.write(self._wake_write, b"x")

    def server_close(self) -> None:
        super().server_close()
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)

    def handle_error(self, request: object, client_address: object) -> None:
        """One line, never socketserver's traceback, for a connection that failed."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            _client_gone(client_address, error)
        else:
            LOG.warning(
                "http: request failed",
                extra={"kv": {"client": _peer(client_address), "error": repr(error)}},
            )


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


def _client_gone(address: object, error: OSError) -> None:
    """A scraper that disconnected mid-response: worth one line at most, not a traceback."""
    LOG.info(
        "http: client went away",
        extra={"kv": {"client": _peer(address), "error": type(error).__name__}},
    )


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running server; ``shutdown`` stops the thread and closes the socket."""

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.server_address[1])

    def shutdown(self) -> None:
        self._server.stop()
        self._thread.join(timeout=1.0)
        self._server.server_close()


def start_server(bind: BindAddress | None, metrics: Metrics) -> MetricsServer | None:
    """Serve in a daemon thread on ``bind``; None disables it (returns None).

    Raises ``ServerError`` (one line) when the address cannot be bound.
    """
    if bind is None:
        return None
    handler = type("Handler", (_Handler,), {"metrics": metrics})
    server_class = _Server6 if ":" in bind.host else _Server
    try:
        server = server_class((bind.host, bind.port), handler)
    except OSError as e:
        raise ServerError(
            f"cannot serve /metrics on {bind}: {e.strerror or e} (set --metrics-bind-address)"
        ) from None
    thread = threading.Thread(target=server.serve, name="masq-http", daemon=True)
    thread.start()
    running = MetricsServer(server, thread)
    LOG.info(
        "serving /healthz, /readyz and /metrics",
        extra={"kv": {"address": str(BindAddress(bind.host, running.port))}},
    )
    return running
