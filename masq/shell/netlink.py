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
import struct
from collections.abc import Iterator
from typing import Final, Literal, Protocol

from masq.core.addresses import Family

NETLINK_NETFILTER: Final = 12
NFNL_SUBSYS_NFTABLES: Final = 10
NFT_MSG_GETTABLE: Final = 1
NFT_MSG_GETCHAIN: Final = 4
NFT_MSG_GETGEN: Final = 16
NFTA_GEN_ID: Final = 1
NFTA_TABLE_NAME: Final = 1
NFTA_CHAIN_TABLE: Final = 1
NFTA_CHAIN_NAME: Final = 3
NLM_F_REQUEST: Final = 0x1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NFPROTO: Final[dict[str, int]] = {"unspec": 0, "inet": 1, "ip": 2, "ip6": 10}
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, seq, pid
_GENMSG = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id
_TIMEOUT_SECONDS = 1.0

Proto = Literal["inet", "ip", "ip6"]


def _attr(kind: int, text: str) -> bytes:
    data = text.encode() + b"\0"
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _attrs(body: bytes) -> Iterator[tuple[int, bytes]]:
    at = 0
    while at + 4 <= len(body):
        length, kind = struct.unpack_from("=HH", body, at)
        if length < 4:
            return
        yield kind & 0x3FFF, body[at + 4 : at + length]
        at += (length + 3) & ~3


def _request(kind: int, family: str, payload: bytes) -> tuple[int, bytes]:
    """One request; (0, reply attributes) or (errno, b"").  OSError if the socket fails."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(_TIMEOUT_SECONDS)
        sock.bind((0, 0))
        body = _GENMSG.pack(NFPROTO[family], 0, 0) + payload
        header = _HEADER.pack(
            _HEADER.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST, 1, 0
        )
        sock.send(header + body)
        while True:
            data = sock.recv(65536)
            at = 0
            while at + _HEADER.size <= len(data):
                length, mtype, _flags, seq, _pid = _HEADER.unpack_from(data, at)
                message = data[at : at + length]
                at += (length + 3) & ~3
                if seq != 1 or length < _HEADER.size:
                    continue
                if mtype == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", message, _HEADER.size)
                    return -error, b""
                if mtype == NLMSG_DONE:
                    return errno.ENODATA, b""
                return 0, message[_HEADER.size + _GENMSG.size :]


def generation() -> int | None:
    """The nf_tables ruleset generation id, or None when it cannot be read."""
    try:
        error, body = _request(NFT_MSG_GETGEN, "unspec", b"")
    except OSError:
        return None
    found = dict(_attrs(body)).get(NFTA_GEN_ID) if error == 0 else None
    return int(struct.unpack(">I", found)[0]) if found is not None and len(found) == 4 else None


def _exists(kind: int, family: Proto, payload: bytes) -> bool | None:
    try:
        error, _ = _request(kind, family, payload)
    except OSError:
        return None
    if error == 0:
        return True
    return False if error == errno.ENOENT else None


def table_exists(family: Proto, name: str) -> bool | None:
    """Whether nf_tables holds table ``family name`` (None: cannot tell)."""
    return _exists(NFT_MSG_GETTABLE, family, _attr(NFTA_TABLE_NAME, name))


def chain_exists(family: Proto, table: str, chain: str) -> bool | None:
    """Whether nf_tables holds ``chain`` in ``family table`` (iptables-nft: ip/ip6 nat)."""
    payload = _attr(NFTA_CHAIN_TABLE, table) + _attr(NFTA_CHAIN_NAME, chain)
    return _exists(NFT_MSG_GETCHAIN, family, payload)


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
