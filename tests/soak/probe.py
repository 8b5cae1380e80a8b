"""Prober (pod namespace) and listener (dest namespace); stdlib only, run with ``python -S``.

Each probe is a new flow: a fresh socket bound to the next source port of a 40,000-port
cycle, so the node's conntrack sees it as NEW and its nat table decides it afresh (a
(port, destination) pair comes back only after 40,000 probes, long after conntrack's
30 s UDP timeout).  The datagram carries its sequence number, destination index and
CLOCK_MONOTONIC send time; network namespaces share that clock, so the listener's receive
time and the driver's event times are on the same axis.

    python -S probe.py send INTERVAL PORT DEST...   (prints "sent N" when stopped)
    python -S probe.py listen PORT OUTFILE          (prints "ready"; writes one line a datagram:
                                                     seq dest-index sent received source)
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import time
from types import FrameType

PAYLOAD = struct.Struct("!QdB")  # seq, send time, destination index
FIRST_PORT = 20000
PORTS = 40000


class _Stop:
    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.stopped = True


def send(interval: float, port: int, dests: list[str]) -> int:
    stop = _Stop()
    seq = 0
    next_at = time.monotonic()
    while not stop.stopped:
        now = time.monotonic()
        if next_at > now:
            time.sleep(next_at - now)
            continue
        next_at = max(next_at + interval, now - 10 * interval)  # no burst after a stall
        index = seq % len(dests)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("0.0.0.0", FIRST_PORT + seq % PORTS))
                s.sendto(PAYLOAD.pack(seq, time.monotonic(), index), (dests[index], port))
            except OSError as e:  # counted as lost by the checker; say why once in a while
                if seq % 1000 == 0:
                    print(f"send {seq}: {e}", file=sys.stderr, flush=True)
        seq += 1
    print(f"sent {seq}", flush=True)
    return 0


def listen(port: int, out_path: str) -> int:
    stop = _Stop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    print("ready", flush=True)
    with open(out_path, "w") as out:
        flushed = time.monotonic()
        while not stop.stopped:
            try:
                data, addr = s.recvfrom(256)
            except TimeoutError:
                continue
            received = time.monotonic()
            if len(data) == PAYLOAD.size:
                seq, sent, index = PAYLOAD.unpack(data)
                out.write(f"{seq} {index} {sent:.6f} {received:.6f} {addr[0]}\n")
            if received - flushed > 0.5:
                out.flush()
                flushed = received
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["send"]:
        return send(float(argv[1]), int(argv[2]), argv[3:])
    if argv[:1] == ["listen"]:
        return listen(int(argv[1]), argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
