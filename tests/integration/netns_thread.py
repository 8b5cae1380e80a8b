"""Run Python code of this process inside a namespace: ``with inside(ns): ...``.

Netlink sockets belong to the network namespace of the thread that opens them, so the
agent's netlink code can be tested in-process: the calling thread enters ``ns`` (one the
test created), the block opens its sockets there, and the thread returns to its own
namespace on exit.  If it cannot return, the process aborts rather than go on in the
wrong namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """The calling thread in network namespace ``ns`` (``ip netns`` name) for the block."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            try:
                _setns(home)
            except OSError:
                os.abort()
    finally:
        os.close(home)
