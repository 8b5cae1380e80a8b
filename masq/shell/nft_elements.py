"""Set elements and notifications of nf_tables over netlink, without starting ``nft``.

``nft`` downloads every element of an interval set before it adds or deletes one, so the
agent's cost would follow the size of its table; over netlink a one-CIDR change is one
small batch and a listing is one dump.  The bytes are built and parsed by the pure codec
``masq.core.nftables.netlink``; this module owns the sockets:

- ``read_set(proto, table, set, family)``: one ``NFT_MSG_GETSETELEM`` dump, returned as
  CIDRs with their counters, dumped again when a notification says the set changed
  meanwhile (the kernel does not flag such a dump);
- ``read_counters(proto, table, set, nets)``: chosen elements' counters, one small
  request each, for a scrape that shows a few elements of a large set;
- ``write_elements(edits)``: one nfnetlink batch for every set and both families, deletions
  first, applied by the kernel whole or not at all; every message is acknowledged, and a
  refusal raises ``NetlinkError`` naming the errno and the message's job in one line;
- ``Listener``: a non-blocking socket in ``NFNLGRP_NFTABLES`` with a ``fileno()`` for
  ``select``; ``read()`` returns the events parsed so far, and ``Lost`` when the kernel
  dropped notifications (``ENOBUFS``), after which anything may have changed.

Every socket is opened in the calling thread's network namespace, when it is opened.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from masq.core.addresses import Family, IPNetwork
from masq.core.nftables.netlink import (
    NETLINK_NETFILTER,
    NFNL_SUBSYS_NFTABLES,
    NFNLGRP_NFTABLES,
    NFTA_GEN_ID,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    Event,
    Lost,
    NftProto,
    ObjectChanged,
    RawElement,
    Reply,
    RuleCounter,
    SetContents,
    SetEdit,
    be32,
    dump_request,
    edit_batch,
    get_element_request,
    intervals,
    message,
    msg_type,
    notification,
    raw_elements,
    replies,
    rule_counter,
    rule_dump_request,
)
from masq.core.traffic import Counters
from masq.shell.errors import AgentError, TransientError

SOL_NETLINK: Final = 270
NETLINK_ADD_MEMBERSHIP: Final = 1
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33
NLM_F_DUMP_INTR: Final = 0x10
DEFAULT_TIMEOUT: Final = 5.0
_RECV_BYTES: Final = 1 << 20
_DUMP_ATTEMPTS: Final = 3
_GET_CHUNK: Final = 64
_GUARD_RCVBUF: Final = 4 << 20
TRANSIENT_ERRNOS: Final = frozenset(
    {errno.EBUSY, errno.EINTR, errno.EAGAIN, errno.ENOBUFS, errno.ENOMEM, errno.ETIMEDOUT}
)


class NetlinkError(AgentError):
    """The kernel refused or did not answer: ``str()`` is one line naming what and why."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"netlink: {what}: {os.strerror(code)} (errno {code})")
        self.errno = code
        self.what = what


class NetlinkBusy(NetlinkError, TransientError):
    """Worth retrying with backoff: a concurrent commit, a full buffer, a timeout."""


def _error(what: str, code: int) -> NetlinkError:
    return NetlinkBusy(what, code) if code in TRANSIENT_ERRNOS else NetlinkError(what, code)


def _setopt(sock: socket.socket, level: int, option: int, value: int) -> bool:
    try:
        sock.setsockopt(level, option, value)
    except OSError:
        return False
    return True


def _buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    """Ask for ``size`` bytes of buffer: forced past rmem_max/wmem_max when privileged."""
    if not _setopt(sock, socket.SOL_SOCKET, force, size):
        _setopt(sock, socket.SOL_SOCKET, plain, size)


def open_socket(*, rcvbuf: int | None = None, sndbuf: int | None = None) -> socket.socket:
    """A NETLINK_NETFILTER socket bound in this thread's namespace; short acks, ext acks.
    NetlinkError when there is none to be had (no nfnetlink, no permission)."""
    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
    except OSError as exc:
        raise _error("open a netfilter netlink socket", exc.errno or errno.EIO) from None
    try:
        sock.bind((0, 0))
        _setopt(sock, SOL_NETLINK, NETLINK_CAP_ACK, 1)
        _setopt(sock, SOL_NETLINK, NETLINK_EXT_ACK, 1)
        if rcvbuf is not None:
            _buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            _buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, sndbuf)
    except OSError as exc:
        sock.close()
        raise _error("bind a netfilter netlink socket", exc.errno or errno.EIO) from None
    return sock


class _Exchange:
    """Requests and their replies on one socket, bounded by one deadline."""

    def __init__(self, sock: socket.socket, what: str, timeout: float) -> None:
        self.sock = sock
        self.what = what
        self.deadline = time.monotonic() + timeout
        self.buffer = bytearray(_RECV_BYTES)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise _error(self.what, exc.errno or errno.EIO) from None

    def receive(self) -> Iterator[Reply]:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _error(f"{self.what}: no answer in time", errno.ETIMEDOUT)
        self.sock.settimeout(remaining)
        try:
            size = self.sock.recv_into(self.buffer)
        except TimeoutError:
            raise _error(f"{self.what}: no answer in time", errno.ETIMEDOUT) from None
        except OSError as exc:
            raise _error(self.what, exc.errno or errno.EIO) from None
        return replies(bytes(self.buffer[:size]))

    def receive_queued(self) -> Iterator[Reply]:
        """``receive``, without the poll and timeout calls when a reply is queued already
        (the kernel answers a request inside ``send``): three syscalls down to one for
        each of a scrape's few hundred small answers."""
        try:
            size = self.sock.recv_into(self.buffer, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            found = self.receive()
            self.sock.settimeout(None)  # blocking again: a queued reply is one recv
            return found
        except OSError as exc:
            raise _error(self.what, exc.errno or errno.EIO) from None
        return replies(bytes(self.buffer[:size]))


def _dump_once(exchange: _Exchange, request: bytes, seq: int) -> list[RawElement] | None:
    """The dump's elements, decoded message by message as they arrive (no reply is
    kept), or None when the kernel marked the dump interrupted by a commit."""
    exchange.send(request)
    found: list[RawElement] = []
    interrupted = False
    kind = msg_type("NEWSETELEM")
    while True:
        for reply in exchange.receive():
            if reply.seq != seq:
                continue
            interrupted |= bool(reply.flags & NLM_F_DUMP_INTR)
            if reply.kind == NLMSG_ERROR:
                if reply.error:
                    raise _error(exchange.what, reply.error)
                continue
            if reply.kind == NLMSG_DONE:  # it carries the dump's own status
                if len(reply.body) >= 4 and reply.error:
                    raise _error(exchange.what, reply.error)
                return None if interrupted else found
            if reply.kind == kind:
                found.extend(raw_elements(reply.body))


def _touched(events: list[Event], proto: str, table: str, set_name: str) -> bool:
    """Whether any event may have changed the set (its table, itself, its elements)."""
    for event in events:
        if isinstance(event, Lost):
            return True
        if (
            isinstance(event, ObjectChanged)
            and (event.family, event.table) == (proto, table)
            and (
                event.kind == "table"
                or (event.kind in ("set", "element") and event.name == set_name)
            )
        ):
            return True
    return False


def read_set(
    proto: NftProto,
    table: str,
    set_name: str,
    family: Family,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> SetContents:
    """The elements of one interval set with their counters: one dump, consistent.

    The kernel neither locks a set for a dump nor flags a set-element dump that a commit
    changed (checked on Linux 6.18: a dump racing additions to the set comes back
    unflagged), so the dump runs under a subscription opened before it: when a
    notification named the set or its table, or some were lost, the set is dumped again,
    at most three times in all.  Other tables' commits do not matter.  NetlinkError when
    the kernel refuses (ENOENT: no such set), NetlinkBusy when the set kept changing.
    """
    what = f"list set {proto} {table} {set_name}"
    with open_socket() as sock, Listener(rcvbuf=_GUARD_RCVBUF) as guard:
        exchange = _Exchange(sock, what, timeout)
        for attempt in range(1, _DUMP_ATTEMPTS + 1):
            found = _dump_once(exchange, dump_request(proto, table, set_name, attempt), attempt)
            events = guard.drain()
            if found is not None and not _touched(events, proto, table, set_name):
                return intervals(found, family)
    raise _error(f"{what}: changed during each of {_DUMP_ATTEMPTS} dumps", errno.EAGAIN)


def read_counters(
    proto: NftProto,
    table: str,
    set_name: str,
    nets: Sequence[IPNetwork],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> dict[IPNetwork, Counters | None]:
    """The counters of the elements starting ``nets`` (None: no element starts there),
    one small request per element instead of a dump of the set: what a scrape that shows
    a few elements of a large set should pay.  Requests go out in chunks of
    ``_GET_CHUNK`` per ``send`` (each answer is its own message, and the receive buffer
    is finite); the kernel answers each by itself, so a missing element fails alone."""
    what = f"read elements of {proto} {table} {set_name}"
    found: dict[IPNetwork, Counters | None] = {}
    with open_socket(rcvbuf=_GET_CHUNK * 16384) as sock:
        exchange = _Exchange(sock, what, timeout)
        for first in range(0, len(nets), _GET_CHUNK):
            chunk = {first + i + 1: n for i, n in enumerate(nets[first : first + _GET_CHUNK])}
            exchange.send(
                b"".join(
                    get_element_request(proto, table, set_name, net, seq)
                    for seq, net in chunk.items()
                )
            )
            while chunk:
                for reply in exchange.receive_queued():
                    net = chunk.pop(reply.seq, None)
                    if net is None:
                        continue
                    if reply.kind == NLMSG_ERROR:
                        if reply.error not in (0, errno.ENOENT):
                            raise _error(f"{what} ({net})", reply.error)
                        found[net] = None
                        continue
                    starts = [e for e in raw_elements(reply.body) if not e.end]
                    key = int(net.network_address)
                    match = next((e for e in starts if e.key == key), None)
                    found[net] = None if match is None else (match.counters or Counters(0, 0))
    return found


@dataclass(frozen=True, slots=True)
class Written:
    """A batch the kernel committed: the generation it produced (None if unreadable) and
    the netlink port it was sent from, which its notifications carry (``Watch.owning``)."""

    generation: int | None
    portid: int


def write_elements(edits: Sequence[SetEdit], *, timeout: float = DEFAULT_TIMEOUT) -> Written | None:
    """Apply every edit in one nfnetlink batch: all of it or, on any error, none of it.

    The kernel processes a batch inside ``send``, so every acknowledgement is queued by
    the time a generation request sent after it is answered: that answer ends the wait
    and gives the generation id the commit produced.  None when there was nothing to
    write.  Raises NetlinkError (NetlinkBusy when worth retrying) naming the first refusal.
    """
    edits = [e for e in edits if not e.empty]
    if not edits:
        return None
    batch = edit_batch(edits, 1)
    what = "element batch (" + "; ".join(e.describe() for e in edits) + ")"
    probe_seq = batch.last_seq + 1
    probe = message(msg_type("GETGEN"), NLM_F_REQUEST, probe_seq, "unspec", b"")
    sndbuf = len(batch.data) + 65536
    rcvbuf = max(1 << 20, 4096 * (len(batch.parts) + 4))
    with open_socket(rcvbuf=rcvbuf, sndbuf=sndbuf) as sock:
        portid = int(sock.getsockname()[0])
        exchange = _Exchange(sock, what, timeout)
        exchange.send(batch.data)
        exchange.send(probe)
        jobs = {p.seq: p.what for p in batch.parts}
        answered: set[int] = set()
        refusals: list[tuple[str, int]] = []
        generation: int | None = None
        done = False
        while not done:
            for reply in exchange.receive():
                if reply.seq == probe_seq:
                    if reply.kind != NLMSG_ERROR:
                        generation = be32(reply.attributes.get(NFTA_GEN_ID))
                    done = True
                elif reply.kind == NLMSG_ERROR and batch.first_seq <= reply.seq <= probe_seq:
                    answered.add(reply.seq)
                    if reply.error:
                        refusals.append((jobs.get(reply.seq, what), reply.error))
    if refusals:
        job, code = refusals[0]
        raise _error(f"{job}: batch not applied", code)
    missing = set(jobs) - answered
    if missing:
        raise _error(f"{what}: {len(missing)} messages unanswered, state unknown", errno.EPROTO)
    return Written(generation, portid)


_NEWGEN: Final = msg_type("NEWGEN")


def _skippable(reply: Reply, ports: Container[int]) -> bool:
    """An nf_tables notification of a commit sent from one of ``ports``, but not its NEWGEN."""
    return (
        reply.portid in ports and reply.kind >> 8 == NFNL_SUBSYS_NFTABLES and reply.kind != _NEWGEN
    )


class Listener:
    """Notifications of every nf_tables commit in this namespace, non-blocking.

    Subscribe before the first listing: a change that lands between the listing and the
    subscription would otherwise go unseen.  ``read()`` drains what is queued.
    """

    def __init__(self, *, rcvbuf: int | None = None) -> None:
        self._sock = open_socket(rcvbuf=rcvbuf)
        try:
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            self._sock.setblocking(False)
        except OSError as exc:
            self._sock.close()
            raise _error("subscribe to nf_tables notifications", exc.errno or errno.EIO) from None
        self._buffer = bytearray(_RECV_BYTES)

    @property
    def portid(self) -> int:
        """This socket's netlink port id (not the one our own batches are sent from)."""
        return int(self._sock.getsockname()[0])

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self, limit: int = 10_000, *, skip: Container[int] = frozenset()) -> list[Event]:
        """Events queued now (at most about ``limit``); [] when none.  ``Lost`` when the
        kernel dropped some since the last read.

        Object notifications sent from a port in ``skip`` (the agent's own commits) are
        passed over unparsed; their commit's NEWGEN still comes.  The agent's first load of
        100,000 CIDRs notifies 200,000 elements: parsed, and held until that NEWGEN proved
        them ours, they cost 2.3 s of CPU and 70 MB of peak memory.
        """
        events: list[Event] = []
        while len(events) < limit:
            try:
                size = self._sock.recv_into(self._buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    events.append(Lost())
                    continue
                raise _error("read nf_tables notifications", exc.errno or errno.EIO) from None
            for reply in replies(bytes(self._buffer[:size])):
                if skip and _skippable(reply, skip):
                    continue
                event = notification(reply)
                if event is not None:
                    events.append(event)
        return events

    def drain(self) -> list[Event]:
        """Every event queued now, however many."""
        events: list[Event] = []
        while batch := self.read():
            events += batch
        return events

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def read_rule_counters(
    proto: NftProto, table: str, chain: str, *, timeout: float = DEFAULT_TIMEOUT
) -> list[RuleCounter]:
    """Each rule of one chain, in order: the set it looks up and its counter (one dump of
    the chain's rules, retried if a commit interrupted it; no set element is read)."""
    what = f"list rules of {proto} {table} {chain}"
    kind = msg_type("NEWRULE")
    with open_socket() as sock:
        exchange = _Exchange(sock, what, timeout)
        for seq in range(1, _DUMP_ATTEMPTS + 1):
            exchange.send(rule_dump_request(proto, table, chain, seq))
            found: list[RuleCounter] = []
            interrupted = False
            done = False
            while not done:
                for reply in exchange.receive():
                    if reply.seq != seq:
                        continue
                    interrupted |= bool(reply.flags & NLM_F_DUMP_INTR)
                    if reply.kind == NLMSG_ERROR and reply.error:
                        raise _error(what, reply.error)
                    if reply.kind == NLMSG_DONE:
                        done = True
                    elif reply.kind == kind:
                        found.append(rule_counter(reply.body))
            if not interrupted:
                return found
    raise _error(f"{what}: interrupted by commits {_DUMP_ATTEMPTS} times", errno.EINTR)
