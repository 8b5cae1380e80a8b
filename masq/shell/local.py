"""Whether an address is one of this node's own: a bind tells, no listing needed."""

from __future__ import annotations

import socket

from masq.core.addresses import IPAddress


def local_address(ip: IPAddress) -> bool | None:
    """Whether ``ip`` is an address of this host (the kernel's LOCAL type), by binding to it.

    Binding succeeds only for local addresses (including all of 127.0.0.0/8); with
    ``ip_nonlocal_bind`` set it succeeds for any, and we cannot tell (None).  One syscall,
    cheap enough for every config change.
    """
    if ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    sysctl = f"/proc/sys/net/ipv{ip.version}/ip_nonlocal_bind"
    try:
        with open(sysctl, encoding="ascii") as f:
            if f.read().strip() not in ("", "0"):
                return None
    except OSError:
        pass
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(ip), 0))
    except OSError:
        return False
    return True


def is_local_address(ip: IPAddress) -> bool:
    """``local_address``, with "cannot tell" as "not local" (``--explain``'s reading)."""
    return local_address(ip) is True
