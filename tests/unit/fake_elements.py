"""A stand-in for the netlink element channel (``nft_watch.Elements``) over ``FakeNft``'s state.

``read`` answers a set's elements as the fake kernel holds them; ``write`` applies the
edits with the core's ``apply_ops`` (all or nothing: a refused edit changes nothing) and
notifies as the kernel does: the object messages, then NEWGEN with the writer's pid.
``foreign`` is another program's commit, notified with its pid; ``lose`` drops
notifications.  Every read and write is recorded.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Container, Sequence
from dataclasses import dataclass, field

from fake_nft import FakeNft, Refused, run_batch

from masq.core.addresses import Family
from masq.core.nftables.model import AddElements, DeleteElements, NftOp
from masq.core.nftables.netlink import (
    Committed,
    Event,
    Lost,
    NftProto,
    ObjectChanged,
    SetContents,
    SetEdit,
)
from masq.core.nftables.plan import apply_ops
from masq.core.traffic import Counters
from masq.shell.nft_elements import NetlinkError, Written

OUR_PORT = 777
"""The netlink port the agent's element batches come from, in this fake."""


@dataclass
class FakeSource:
    """Queued notifications; ``read`` drains them."""

    queued: list[Event] = field(default_factory=list)
    closed: bool = False

    def fileno(self) -> int:
        return -1

    def read(self, *, skip: Container[int] = frozenset()) -> list[Event]:
        events, self.queued = self.queued, []
        return [e for e in events if not (isinstance(e, ObjectChanged) and e.portid in skip)]

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeElements:
    nft: FakeNft
    sources: list[FakeSource] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    writes: list[list[SetEdit]] = field(default_factory=list)
    refuse_listen: int | None = None

    def read(self, proto: NftProto, table: str, set_name: str, family: Family) -> SetContents:
        self.reads.append(f"{proto} {table} {set_name}")
        held = self.nft.find(proto, table)
        if held is None or set_name not in held.sets:
            raise NetlinkError(f"list set {proto} {table} {set_name}", errno.ENOENT)
        found = held.sets[set_name]
        counters = {n: found.counters.get(n, Counters(0, 0)) for n in found.elements}
        return SetContents(family, counters)

    def write(self, edits: Sequence[SetEdit]) -> Written:
        self.writes.append(list(edits))
        ops: list[NftOp] = []
        for e in edits:
            if e.delete:
                ops.append(DeleteElements(e.family, e.table, e.set, e.delete))  # type: ignore[arg-type]
        for e in edits:
            if e.add:
                ops.append(AddElements(e.family, e.table, e.set, e.add))  # type: ignore[arg-type]
        try:
            self.nft.state = apply_ops(self.nft.state, ops)
        except Exception as error:
            raise NetlinkError(f"element batch: {error}", errno.ENOENT) from None
        self.nft.generation += 1
        # The kernel names the host's pid, which an agent in a pod does not see: the port tells.
        self.notify(
            [ObjectChanged("element", True, e.family, e.table, e.set, OUR_PORT) for e in edits],
            None,
            port=OUR_PORT,
        )
        return Written(self.nft.generation, OUR_PORT)

    def listen(self) -> FakeSource:
        if self.refuse_listen is not None:
            raise OSError(self.refuse_listen, os.strerror(self.refuse_listen))
        source = FakeSource()
        self.sources.append(source)
        return source

    def notify(
        self, changes: list[ObjectChanged], pid: int | None, name: str = "x", port: int = 0
    ) -> None:
        for source in self.sources:
            source.queued += [*changes, Committed(self.nft.generation, pid, name, port)]

    def foreign(
        self, batch: str, changes: list[ObjectChanged], pid: int = 4242, name: str = "nft"
    ) -> None:
        """Another program's batch to the agent's table, notified with its pid."""
        try:
            if batch:  # "": the kernel is said to have done what the model does not hold
                self.nft.state = run_batch(self.nft.state, batch)
        except Refused as error:
            raise AssertionError(f"the foreign batch was refused: {error}") from None
        self.nft.generation += 1
        self.notify(changes, pid, name)

    def elsewhere(self, pid: int = 4242) -> None:
        """Another program's commit to a table of its own."""
        self.nft.generation += 1
        self.notify([ObjectChanged("rule", True, "ip", "kube-proxy", "services", 0)], pid)

    def lose(self) -> None:
        for source in self.sources:
            source.queued.append(Lost())
