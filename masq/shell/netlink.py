"""Cheap questions to the kernel, without starting a process: netlink and /proc.

- ``generation()``: the ruleset generation id of this network namespace.  Every
  nf_tables commit (nft, iptables-nft, kube-proxy in either mode) moves it; traffic
  does not.  An unchanged id proves nothing nf_tables holds changed, so a resync can
  skip listing what the agent owns.
- ``table_exists(family, name)`` and ``chain_exists(family, table, chain)``: is a
  table of ours left behind (iptables mode), or an iptables-nft chain of ours
  (nftables mode)?

- ``legacy_tables(family)``: the x_tables (iptables-legacy) tables instantiated here.

Each answers ``None`` when it cannot tell (no nf_tables, no permission, an odd
reply): callers then fall back to asking the tools, so this is an optimisation,
never a source of truth the agent cannot do without.  ``Kernel`` is the interface
the shell takes, so tests can answer for the kernel.
"""

from __future__ import annotations

import errno
import socket
from typing import Final, Literal, Protocol

from masq.core.addresses import Family
from masq.core.nftables.netlink import (
    GENMSG,
    NETLINK_NETFILTER,
    NFTA_GEN_ID,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    attr_map,
    be32,
    message,
    msg_type,
    replies,
    strz,
)

NFTA_TABLE_NAME: Final = 1
NFTA_CHAIN_TABLE: Final = 1
NFTA_CHAIN_NAME: Final = 3
_TIMEOUT_SECONDS = 1.0

Proto = Literal["inet", "ip", "ip6"]


def _request(kind: str, family: str, payload: bytes) -> tuple[int, bytes]:
    """One request; (0, reply body) or (errno, b"").  OSError if the socket fails."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(_TIMEOUT_SECONDS)
        sock.bind((0, 0))
        sock.send(message(msg_type(kind), NLM_F_REQUEST, 1, family, payload))
        while True:
            for reply in replies(sock.recv(65536)):
                if reply.seq != 1:
                    continue
                if reply.kind == NLMSG_ERROR:
                    return reply.error, b""
                if reply.kind == NLMSG_DONE:
                    return errno.ENODATA, b""
                return 0, reply.body


def generation() -> int | None:
    """The nf_tables ruleset generation id, or None when it cannot be read."""
    try:
        error, body = _request("GETGEN", "unspec", b"")
    except OSError:
        return None
    return be32(attr_map(body, GENMSG.size).get(NFTA_GEN_ID)) if error == 0 else None


def _exists(kind: str, family: Proto, payload: bytes) -> bool | None:
    try:
        error, _ = _request(kind, family, payload)
    except OSError:
        return None
    if error == 0:
        return True
    return False if error == errno.ENOENT else None


def table_exists(family: Proto, name: str) -> bool | None:
    """Whether nf_tables holds table ``family name`` (None: cannot tell)."""
    return _exists("GETTABLE", family, strz(NFTA_TABLE_NAME, name))


def chain_exists(family: Proto, table: str, chain: str) -> bool | None:
    """Whether nf_tables holds ``chain`` in ``family table`` (iptables-nft: ip/ip6 nat)."""
    payload = strz(NFTA_CHAIN_TABLE, table) + strz(NFTA_CHAIN_NAME, chain)
    return _exists("GETCHAIN", family, payload)


LEGACY_NAMES_FILES: Final[dict[Family, str]] = {
    "ipv4": "/proc/net/ip_tables_names",
    "ipv6": "/proc/net/ip6_tables_names",
}


def legacy_tables(family: Family) -> frozenset[str]:
    """x_tables tables of ``family`` in this namespace (none when the module is not loaded)."""
    return read_table_names(LEGACY_NAMES_FILES[family])


def read_table_names(path: str) -> frozenset[str]:
    """The table names listed in a ``/proc/net/*_tables_names`` file; none if unreadable
    (its module is not loaded).  The one reader of these files."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return frozenset(line.strip() for line in f if line.strip())
    except OSError:
        return frozenset()


class Kernel(Protocol):
    def generation(self) -> int | None: ...
    def table_exists(self, family: Proto, name: str) -> bool | None: ...
    def chain_exists(self, family: Proto, table: str, chain: str) -> bool | None: ...
    def legacy_tables(self, family: Family) -> frozenset[str] | None: ...


class SystemKernel:
    """The kernel of this process's network namespace."""

    def generation(self) -> int | None:
        return generation()

    def table_exists(self, family: Proto, name: str) -> bool | None:
        return table_exists(family, name)

    def chain_exists(self, family: Proto, table: str, chain: str) -> bool | None:
        return chain_exists(family, table, chain)

    def legacy_tables(self, family: Family) -> frozenset[str] | None:
        return legacy_tables(family)


SYSTEM = SystemKernel()
