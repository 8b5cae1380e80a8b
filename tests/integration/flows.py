"""Many new flows at once, pod -> dest: bursts, and a steady prober that runs while the agent
changes things under it.

Every flow is one UDP packet from its own pod source port (each port used once per call,
after a conntrack flush in node), so each is a new conntrack entry: a new NAT decision, and
exactly one packet on the counter of whatever rule or set element decided it.  A sink in
dest records, per destination address, the source address and port of every flow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from integration.agent import AGENT_PYTHON
from integration.topology import Topology

FIRST_SOURCE_PORT = 10000
PORT = 9999  # the sink's port in dest

_SINK = r"""
import json, select, signal, socket, sys, time
port, want, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = {}
for dest in sys.argv[4:]:
    fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((dest, port))
    socks[s] = dest
seen = {dest: [] for dest in socks.values()}
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
print("ready", flush=True)
end = time.monotonic() + timeout
while not stop and time.monotonic() < end and (want == 0 or sum(map(len, seen.values())) < want):
    try:
        ready, _, _ = select.select(list(socks), [], [], 0.05)
    except InterruptedError:
        continue
    for s in ready:
        _, addr = s.recvfrom(2048)
        seen[socks[s]].append([addr[0], addr[1]])
for s in socks:  # what arrived before the stop is still queued: drain it
    s.setblocking(False)
    while True:
        try:
            _, addr = s.recvfrom(2048)
        except BlockingIOError:
            break
        seen[socks[s]].append([addr[0], addr[1]])
print(json.dumps(seen), flush=True)
"""

_SENDER = r"""
import json, signal, socket, sys, time
port, first, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
interval, dests = float(sys.argv[4]), sys.argv[5:]
sent = dict.fromkeys(dests, 0)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
source = first
print("sending", flush=True)
while not stop and (rounds == 0 or source - first < rounds * len(dests)):
    for dest in dests:  # one flow to each destination per round, each from a new source port
        fam = socket.AF_INET6 if ":" in dest else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", source))
            s.sendto(b"flow", (dest, port))
        source += 1
        sent[dest] += 1
    if interval:
        time.sleep(interval)
print(json.dumps(sent), flush=True)
"""

Seen = dict[str, list[tuple[str, int]]]


def _start(topo: Topology, ns: str, script: str, *args: object) -> subprocess.Popen[bytes]:
    """Start a helper and wait for its first line (it is listening, or sending)."""
    argv = [AGENT_PYTHON, "-I", "-S", "-c", script, *map(str, args)]
    proc = subprocess.Popen(
        topo.in_ns(ns, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
    )
    assert proc.stdout is not None
    # Byte by byte: a buffered readline could swallow the result line too, and then
    # communicate() would never see it.
    first = b""
    while not first.endswith(b"\n") and (byte := os.read(proc.stdout.fileno(), 1)):
        first += byte
    if first.strip() not in (b"ready", b"sending"):
        proc.kill()
        raise RuntimeError(f"flow helper in {ns} failed: {proc.communicate(timeout=5)}")
    return proc


def _finish(proc: subprocess.Popen[bytes], timeout: float, *, stop: bool = True) -> object:
    """The helper's JSON result; ``stop``: ask it to stop now rather than wait for its end."""
    if stop and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"flow helper exited {proc.returncode}: {err.decode().strip()}")
    return json.loads(lines[-1])


def _seen(raw: object) -> Seen:
    assert isinstance(raw, dict)
    return {dest: [(str(a), int(p)) for a, p in pairs] for dest, pairs in raw.items()}


def burst(topo: Topology, dests: Sequence[str], count: int, *, timeout: float = 20.0) -> Seen:
    """``count`` new flows to each of ``dests``; per destination, the sources dest saw."""
    topo.conntrack_flush()
    want = count * len(dests)
    sink = _start(topo, topo.dest, _SINK, PORT, want, timeout, *dests)
    try:
        sender = _start(topo, topo.pod, _SENDER, PORT, FIRST_SOURCE_PORT, count, 0, *dests)
        _finish(sender, timeout, stop=False)
        return _seen(_finish(sink, timeout, stop=False))
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait(timeout=5)


@dataclass
class Probe:
    """What a steady prober sent and what dest saw, filled in when the prober stops."""

    sent: dict[str, int] = field(default_factory=dict)
    seen: Seen = field(default_factory=dict)


@contextmanager
def prober(topo: Topology, dests: Sequence[str], interval: float = 0.01) -> Iterator[Probe]:
    """A new flow to each of ``dests`` every ``interval`` seconds while the block runs."""
    topo.conntrack_flush()
    probe = Probe()
    sink = _start(topo, topo.dest, _SINK, PORT, 0, 600, *dests)
    sender: subprocess.Popen[bytes] | None = None
    try:
        sender = _start(topo, topo.pod, _SENDER, PORT, FIRST_SOURCE_PORT, 0, interval, *dests)
        yield probe
        sent = _finish(sender, 10)
        assert isinstance(sent, dict)
        probe.sent = {str(d): int(n) for d, n in sent.items()}
        time.sleep(0.2)  # the last flows are on their way
        probe.seen = _seen(_finish(sink, 10))
    finally:
        for proc in (sink, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
