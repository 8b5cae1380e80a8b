"""Packets through the topology: send from pod, see in dest which source address arrived.

``source_seen`` is the oracle of every decision test: the pod's own address means the
packet was not masqueraded, the node's uplink address means it was.  The listener and
sender are small Python scripts run inside the namespaces (no extra tools needed).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from typing import Literal

from integration.topology import NODE_UPLINK, NODE_UPLINK6, POD_IP, POD_IP6, Topology

_PYTHON = [sys.executable, "-I", "-S", "-c"]
_ports = itertools.count(20000)

_LISTENER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
kind = socket.SOCK_STREAM if sys.argv[4] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
if kind == socket.SOCK_STREAM:
    s.listen(1)
print("ready", flush=True)
try:
    if kind == socket.SOCK_STREAM:
        c, addr = s.accept()
        c.close()
    else:
        _, addr = s.recvfrom(2048)
    print(addr[0], addr[1], flush=True)
except OSError:
    print("timeout", flush=True)
"""

_SENDER = r"""
import socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
if sys.argv[3] == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(float(sys.argv[4]))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.close()
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:  # same socket: one conntrack entry, one NAT decision
        s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
        time.sleep(0.1)
"""


_HTTP_GET = r"""
import json, sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode()]))
except OSError as e:
    print(json.dumps([0, str(e)]))
"""


def source_seen(
    topo: Topology,
    dest_ip: str,
    port: int | None = None,
    *,
    proto: Literal["udp", "tcp"] = "udp",
    timeout: float = 5.0,
    flush: bool = True,
) -> str:
    """Send from pod to ``dest_ip``; return the source address the listener in dest saw.

    ``POD_IP``/``POD_IP6`` means not masqueraded, ``NODE_UPLINK``/``NODE_UPLINK6``
    means masqueraded.  NAT is decided per connection, so each probe uses a fresh port
    and (by default) flushes conntrack in node first.
    """
    return source_seen_with_port(topo, dest_ip, port, proto=proto, timeout=timeout, flush=flush)[0]


def source_seen_with_port(
    topo: Topology,
    dest_ip: str,
    port: int | None = None,
    *,
    proto: Literal["udp", "tcp"] = "udp",
    timeout: float = 5.0,
    flush: bool = True,
) -> tuple[str, int]:
    """``source_seen``, plus the source port the listener saw (``--to-ports`` checks)."""
    if flush:
        topo.conntrack_flush()
    port = next(_ports) if port is None else port
    family = "6" if ":" in dest_ip else "4"
    listener = subprocess.Popen(
        topo.in_ns(topo.dest, [*_PYTHON, _LISTENER, family, str(port), str(timeout), proto]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sender: subprocess.Popen[str] | None = None
    try:
        assert listener.stdout is not None
        ready = listener.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(f"listener in {topo.dest} failed: {listener.stderr}")
        sender = subprocess.Popen(
            topo.in_ns(topo.pod, [*_PYTHON, _SENDER, dest_ip, str(port), proto, str(timeout)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = listener.communicate(timeout=timeout + 5)
    finally:
        for proc in (listener, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    seen = out.strip()
    if seen in ("", "timeout") or " " not in seen:
        raise AssertionError(
            f"no {proto} packet from pod reached {dest_ip}:{port} within {timeout}s "
            f"(listener stderr: {err.strip()!r})\nnode nat table:\n{topo.save()}"
        )
    address, seen_port = seen.split()
    return address, int(seen_port)


def http_get(topo: Topology, url: str) -> tuple[int, str]:
    """GET ``url`` from inside node (where the agent listens); status 0 = no answer."""
    argv = topo.in_ns(topo.node, [*_PYTHON, _HTTP_GET, url])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    status, body = json.loads(proc.stdout)
    return int(status), str(body)


def verdicts(topo: Topology, *dests: str) -> dict[str, str]:
    """Per destination: 'kept' (dest saw the pod) or 'masq' (dest saw the node)."""
    out = {}
    for dest in dests:
        seen = source_seen(topo, dest)
        if seen in (POD_IP, POD_IP6):
            out[dest] = "kept"
        elif seen in (NODE_UPLINK, NODE_UPLINK6):
            out[dest] = "masq"
        else:
            out[dest] = f"unexpected source {seen}"
    return out
