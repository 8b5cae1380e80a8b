"""Knowing without listing: who touched what the agent owns, told by nf_tables itself.

A dataplane on nf_tables subscribes to ``NFNLGRP_NFTABLES`` (``nft_elements.Listener``)
before its first listing.  Every commit in the namespace ends in a ``NEWGEN`` message
naming the committing process; the pure ``Watch`` folds the object notifications before
it into the commits that changed a watched table.  A commit by the agent (its pid) or by
an ``nft`` it started (their pids, registered with ``own``) is not news; any other that
names what the agent owns, or a lost notification (the socket's buffer overflowed),
makes the watch ``dirty``: the next sync lists and repairs.  A clean watch proves nothing
touched what the agent owns since it last looked, whatever other tables do, so the sync
lists nothing and writes nothing.

``RepairBackoff`` keeps two agents that disagree (an old pod during a rolling update)
from repairing each other's writes in a busy loop: the same objects repaired again soon
after wait longer each time.

``Elements`` is the way to the kernel for set elements (``NetlinkElements``: netlink;
a fake in unit tests).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Final, Protocol

from pyrsistent import pmap

from masq.core.addresses import Family
from masq.core.nftables.model import NftSet, NftTable
from masq.core.nftables.netlink import (
    Event,
    ForeignCommit,
    NftProto,
    ObjectChanged,
    RawElement,
    SetContents,
    SetEdit,
    Watch,
    intervals,
    raw_elements,
)
from masq.core.traffic import Counters
from masq.shell.nft_elements import Listener, NetlinkError, Written, read_set, write_elements

NOTIFY_RCVBUF_ENV: Final = "IP_MASQ_AGENT_NOTIFY_RCVBUF"
"""Test hook: the notification socket's receive buffer in bytes (tiny: notifications are
lost, and the agent must notice)."""
NOTIFY_RCVBUF: Final = 64 << 20
"""The kernel queues a whole commit's notifications at once, two per interval (~16 MB for
the agent's own first load of 100,000 CIDRs): what overflows is lost, and costs a listing.
Kernel memory, charged only while queued; the agent drains it right away."""
OWN_PORTS: Final = 64
"""The agent's recent netlink ports (one per element batch, one per ``nft``) kept as its own."""
NO_NETLINK: Final = frozenset(
    {
        errno.EPERM,
        errno.EACCES,
        errno.EPROTONOSUPPORT,
        errno.EAFNOSUPPORT,
        errno.EOPNOTSUPP,
        errno.ENOSYS,
    }
)
"""What a kernel or a sandbox without netlink access to nf_tables answers: the agent then
keeps to the ``nft`` CLI."""


def no_netlink(error: OSError | NetlinkError) -> bool:
    """Whether ``error`` says netlink to nf_tables is not available here at all."""
    return error.errno in NO_NETLINK


class Source(Protocol):
    """Notifications as they arrive: ``nft_elements.Listener`` or a fake."""

    def fileno(self) -> int: ...
    def read(self, *, skip: Container[int] = ...) -> list[Event]:
        """What is queued; object notifications sent from a port in ``skip`` (the
        agent's own) may be left out, never a NEWGEN."""
        ...

    def close(self) -> None: ...


class Elements(Protocol):
    """Set elements read and written without ``nft``, and the notification source."""

    def read(self, proto: NftProto, table: str, set_name: str, family: Family) -> SetContents:
        """One set's elements with their counters (NetlinkError ENOENT: no such set)."""
        ...

    def write(self, edits: Sequence[SetEdit]) -> Written | None:
        """Every edit in one batch, all or nothing, deletions first; the generation it made
        and the netlink port it came from (None: nothing to write)."""
        ...

    def listen(self) -> Source:
        """Subscribe to nf_tables notifications (NetlinkError when not allowed)."""
        ...


def _rcvbuf() -> int:
    text = os.environ.get(NOTIFY_RCVBUF_ENV, "")
    return int(text) if text.isdigit() else NOTIFY_RCVBUF


class NetlinkElements:
    """The kernel's nf_tables over netlink (``masq.shell.nft_elements``)."""

    def read(self, proto: NftProto, table: str, set_name: str, family: Family) -> SetContents:
        return read_set(proto, table, set_name, family)

    def write(self, edits: Sequence[SetEdit]) -> Written | None:
        return write_elements(edits)

    def listen(self) -> Source:
        return Listener(rcvbuf=_rcvbuf())


def process_name(pid: int | None, said: str | None) -> str | None:
    """The committing process's name: as the kernel said, else /proc/PID/comm if it runs."""
    if said or pid is None:
        return said
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def _describe(change: ObjectChanged) -> str:
    verb = "added" if change.added else "deleted"
    name = f" {change.name}" if change.name is not None else ""
    return f"{change.kind}{name} {verb}"


@dataclass(frozen=True, slots=True)
class Burst:
    """Foreign changes to what the agent owns, seen together; ``lost``: notifications were
    dropped, so anything may have changed."""

    commits: tuple[ForeignCommit, ...] = ()
    lost: bool = False

    def __bool__(self) -> bool:
        return self.lost or bool(self.commits)

    def merged(self, other: Burst) -> Burst:
        return Burst(self.commits + other.commits, self.lost or other.lost)

    def objects(self) -> frozenset[str]:
        """What was touched (``set nomasq-v4``, ``table``), the key of repair back-off."""
        found = {
            f"{c.kind} {c.name}" if c.name is not None else c.kind
            for commit in self.commits
            for c in commit.changes
        }
        return frozenset(found | ({"notifications lost"} if self.lost else set()))

    def who(self) -> str:
        """The committing processes, ``pid 123 (nft)``; ``unknown`` when the kernel is silent."""
        seen: dict[str, None] = {}
        for commit in self.commits:
            name = process_name(commit.pid, commit.process)
            pid = "pid ?" if commit.pid is None else f"pid {commit.pid}"
            seen[f"{pid} ({name})" if name else pid] = None
        return ", ".join(seen) or "unknown"

    def changes(self, limit: int = 5) -> str:
        """The changes, as one short text (``element nomasq-v4 deleted, chain ...``; the
        kernel tells of an interval's two boundary elements apart, so no counts)."""
        parts = list(dict.fromkeys(_describe(c) for commit in self.commits for c in commit.changes))
        if self.lost:
            parts.append("notifications lost")
        more = f", and {len(parts) - limit} more" if len(parts) > limit else ""
        return ", ".join(parts[:limit]) + more


Relevant = Callable[[ObjectChanged], bool]


def _everything(change: ObjectChanged) -> bool:
    return True


class TableWatch:
    """Whether anyone else touched the watched tables since the agent last looked.

    ``dirty`` starts true (nothing seen yet); ``settle()`` is called just before a
    listing, so what the listing shows is known and whatever comes after is news.
    ``relevant`` narrows a table to the objects the agent owns in it (iptables-nft:
    its chain and the POSTROUTING jump in table ``nat``).
    """

    def __init__(
        self,
        source: Source,
        tables: Iterable[tuple[str, str]],
        relevant: Relevant = _everything,
        own: Iterable[int] = (),
    ) -> None:
        self._source = source
        self._relevant = relevant
        self._watch = Watch(frozenset(tables), frozenset({os.getpid(), *own}))
        self._ports: list[int] = []
        self.dirty = True
        self.foreign: list[ForeignCommit] = []
        """The foreign commits since the last ``settle``, in order."""
        self.lost = False
        """Whether notifications were lost since the last ``settle``."""

    def fileno(self) -> int:
        return self._source.fileno()

    def own(self, *, pid: int | None = None, portid: int | None = None) -> None:
        """A process the agent started (an ``nft``: its pid, which is also its netlink
        port) or a netlink socket it wrote from (its port) commits as the agent.  Only the
        last ``OWN_PORTS`` ports are kept: a write's notifications come right after it."""
        ports = [p for p in (pid, portid) if p is not None]
        if not ports:
            return
        self._ports = [*self._ports, *ports][-OWN_PORTS:]
        w = self._watch
        pids = w.own_pids | ({pid} if pid is not None else set())
        self._watch = Watch(w.tables, pids, frozenset(self._ports), w.pending)

    def poll(self) -> Burst:
        """Read what is queued; the foreign changes it holds (they make the watch dirty)."""
        events = self._source.read(skip=self._watch.own_portids)
        if not events:
            return Burst()
        self._watch, seen = self._watch.feed(events)
        if seen.lost:  # what follows a loss may be the tail of a commit whose NEWGEN was
            self._forget_pending()  # dropped: never lay it at the next committer's door
        commits = []
        for commit in seen.foreign:
            changes = tuple(c for c in commit.changes if self._relevant(c))
            if changes:
                commits.append(replace(commit, changes=changes))
        burst = Burst(tuple(commits), seen.lost)
        if burst:
            self.dirty = True
            self.foreign += commits
            self.lost |= seen.lost
        return burst

    def settle(self) -> None:
        """About to list (right after a poll): everything read so far is in the listing."""
        self.dirty = False
        self.foreign, self.lost = [], False
        self._forget_pending()

    def _forget_pending(self) -> None:
        w = self._watch
        self._watch = Watch(w.tables, w.own_pids, w.own_portids, ())

    def close(self) -> None:
        self._source.close()


def followed(table: NftTable, commits: Sequence[ForeignCommit]) -> NftTable | None:
    """``table`` after foreign commits that only added or deleted elements of its sets, as
    their notifications tell (each element's key is in them); None when anything else
    changed, or the elements do not fit what the table holds: then it must be listed.

    A CIDR's two boundary elements arrive as separate messages, so a commit's elements
    are paired per set and verb; its deletions apply first, as in the agent's batches.
    """
    sets = dict(table.sets)
    for commit in commits:
        groups: dict[tuple[bool, str], list[RawElement]] = {}
        for change in commit.changes:
            known = sets.get(change.name or "")
            if change.kind != "element" or known is None or known.opaque or not change.body:
                return None
            groups.setdefault((change.added, known.name), []).extend(raw_elements(change.body))
        for (added, name), raws in sorted(groups.items(), key=lambda g: g[0]):
            moved = _moved(sets[name], raws, added)
            if moved is None:
                return None
            sets[name] = moved
    return NftTable(table.family, table.name, pmap(sets), table.chains)


def _moved(s: NftSet, raws: list[RawElement], added: bool) -> NftSet | None:
    found = intervals(raws, s.family)
    nets = found.elements
    if found.opaque or (nets & s.elements if added else nets - s.elements):
        return None
    if added:
        counters = {**s.counters, **dict.fromkeys(nets, Counters(0, 0))}
        return replace(s, elements=s.elements | nets, counters=MappingProxyType(counters))
    counters = {n: c for n, c in s.counters.items() if n not in nets}
    return replace(s, elements=s.elements - nets, counters=MappingProxyType(counters))


@dataclass(slots=True)
class RepairBackoff:
    """How long to wait before repairing ``objects``: 0 the first time; when the same
    objects need a repair again within ``window`` seconds of the last one, ``first``
    seconds, doubling each time, up to ``cap`` (the resync interval).

    A fight is the agent's writes undone again and again, so a sync that had nothing to
    write ends it (``calm``).  Notifications lost over and over on a busy node with a small
    buffer are not a fight: each costs one listing that finds the table whole, and a real
    change among them is repaired at once, not after a back-off grown by the others.
    """

    first: float = 0.5
    cap: float = 60.0
    window: float = 10.0
    repeats: int = 0
    _last: frozenset[str] | None = None
    _at: float = float("-inf")

    def delay(self, objects: frozenset[str], now: float) -> float:
        if objects == self._last and now - self._at < self.window:
            self.repeats += 1
        else:
            self.repeats = 0
        wait = 0.0 if self.repeats == 0 else min(self.first * 2 ** (self.repeats - 1), self.cap)
        self._last, self._at = objects, now + wait
        return wait

    def calm(self) -> None:
        """A sync wrote nothing: nobody is undoing the agent's writes."""
        self.repeats, self._last = 0, None
