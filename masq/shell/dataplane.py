"""The one seam between the agent and the kernel: the ``Dataplane`` protocol, and which
dataplane the flags choose.

The agent, the daemon and the commands drive this protocol and never learn which
dataplane is behind it; each dataplane (``iptables_runner``, ``nftables_runner``)
implements it itself, codec and all.  A new way to reach the kernel is one new module
that implements it, plus one line in ``build``.

A sync is: ``plan`` (read what the kernel holds, decide the ops; nothing written),
then ``describe`` (``--dry-run``) or ``apply``.  ``cleanup`` plans the removal of
everything the dataplane owns, for ``--cleanup`` and for the leftovers of the other
mode; the same ``describe``/``apply`` carry it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

from returns.result import Result

from masq.core.addresses import Family, IPAddress
from masq.core.config import MasqConfig
from masq.core.egress import ANY_PACKET, Packet
from masq.core.errors import ConfigError
from masq.core.fragment import Fragment
from masq.core.merge import Merged
from masq.core.nat import NatOptions
from masq.core.options import DataplaneOptions
from masq.core.traffic import Traffic
from masq.shell import netlink
from masq.shell.options import Options
from masq.shell.process import Runner, run_command

if TYPE_CHECKING:
    from masq.core.explain import Explanation
    from masq.shell.nft_watch import Burst, Source


@dataclass(frozen=True, slots=True)
class Writes:
    """What ``apply`` wrote: how many ops, and per family one ``rule_writes_total`` op
    label per write (an element op writes each of its elements)."""

    ops: int = 0
    labels: Mapping[Family, tuple[str, ...]] = field(default_factory=dict)


class Plan(Protocol):
    """What a dataplane found and means to write; only the dataplane reads its ops."""

    @property
    def traffic(self) -> Traffic:
        """The counters the plan's listing showed (empty when nothing was listed)."""
        ...


P = TypeVar("P", bound=Plan)


@dataclass(frozen=True, slots=True)
class Explained:
    """``--explain``'s answer and where the rules it read came from (live or desired)."""

    explanation: Explanation
    label: str


class Watching(Protocol):
    """The kernel's word on who changed what a dataplane owns (for the daemon's wait)."""

    def fileno(self) -> int: ...

    def poll(self) -> Burst:
        """The foreign changes queued since the last poll (empty: none, or only ours)."""
        ...


class Dataplane(Protocol[P]):
    """One way of carrying out the decision in the kernel."""

    def watch(self) -> Watching | None:
        """Subscribe to the kernel's change notifications for what this dataplane owns
        (the daemon, before its first sync): while they say nobody else touched it, a
        resync lists nothing.  None: not here, every resync asks the kernel."""
        ...

    def serialised(self) -> AbstractContextManager[None]:
        """Held from ``plan`` to the end of ``apply``: other agents' writes wait."""
        ...

    def plan(self, config: MasqConfig) -> P:
        """Observe (unless the kernel proves nothing changed) and plan; nothing written."""
        ...

    def cleanup(self) -> P:
        """Plan the removal of everything this dataplane owns (read before any write)."""
        ...

    def describe(self, plan: P, out: TextIO) -> None:
        """Print what ``apply`` would write (``--dry-run``)."""
        ...

    def apply(self, plan: P) -> Writes:
        """Write the plan, falling back to a whole rebuild if the kernel refuses it."""
        ...

    def traffic(self, config: MasqConfig) -> Traffic:
        """Per-CIDR counters from one read-only listing (for a scrape; any thread)."""
        ...

    def explain(
        self,
        ip: IPAddress,
        fragments: Sequence[Fragment],
        merged: Merged | None,
        *,
        read_live: bool,
        local: bool,
        packet: Packet = ANY_PACKET,
    ) -> Result[Explained, ConfigError]:
        """Why a packet to ``ip`` is (not) masqueraded, from the live rules (``read_live``)
        or the desired ones; Failure when neither the rules nor the config can be read."""
        ...


AnyDataplane = Dataplane[Any]
"""A dataplane whose plan type the caller does not need to know."""


def dataplane_options(opts: Options) -> DataplaneOptions:
    """The flags that shape what either dataplane writes (random-fully as asked for:
    the iptables dataplane lowers it where iptables lacks it)."""
    return DataplaneOptions(
        chain=opts.masq_chain,
        table=opts.nft_table,
        enable_ipv6=opts.enable_ipv6,
        nat=NatOptions(random_fully=opts.random_fully, to_ports=opts.to_ports),
    )


def build(
    name: str,
    opts: Options,
    runner: Runner = run_command,
    kernel: netlink.Kernel = netlink.SYSTEM,
) -> AnyDataplane:
    """The dataplane called ``name``; its module is imported here, on first use."""
    if name == "nftables":
        from masq.shell.nft_watch import NetlinkElements
        from masq.shell.nftables_runner import NftablesDataplane

        # The real kernel's elements go over netlink; a test's fake kernel keeps to nft.
        elements = NetlinkElements() if kernel is netlink.SYSTEM else None
        return NftablesDataplane(
            dataplane_options(opts),
            runner,
            kernel,
            elements,
            max_series=opts.metrics_max_cidr_series,
        )
    from masq.shell.iptables_backend import resolve_backend
    from masq.shell.iptables_runner import IptablesDataplane

    return IptablesDataplane(
        dataplane_options(opts),
        backend=lambda: resolve_backend(opts.iptables_backend),
        runner=runner,
        kernel=kernel,
        listen=_listen if kernel is netlink.SYSTEM else None,
    )


def _listen() -> Source:
    """nf_tables notifications, for a dataplane on the real kernel (loaded on first use)."""
    from masq.shell.nft_watch import NetlinkElements

    return NetlinkElements().listen()


def write_ops(name: str) -> tuple[str, ...]:
    """Every op label the dataplane called ``name`` can write (series made up front)."""
    if name == "nftables":
        from masq.core.nftables.model import OP_LABELS as NFT

        return tuple(NFT.values())
    from masq.core.iptables.model import OP_LABELS as IPTABLES

    return tuple(IPTABLES.values())


NFT_TABLE_FAMILIES: tuple[netlink.Proto, ...] = ("ip", "inet")
"""Where a table of the nftables dataplane can be: asked of netlink without loading it."""


class Dataplanes:
    """The dataplane the flags choose, and the other one, whose leftovers a sync removes.

    The other is built on first need: in iptables mode netlink is asked whether a table
    of ours exists at all, and the nftables code (~20 ms to import) loads only if one may.
    """

    def __init__(
        self,
        opts: Options,
        runner: Runner = run_command,
        kernel: netlink.Kernel = netlink.SYSTEM,
    ) -> None:
        self._opts = opts
        other = "iptables" if opts.dataplane == "nftables" else "nftables"
        self._build: Callable[[], AnyDataplane] = lambda: build(other, opts, runner, kernel)
        self._kernel = kernel
        self.chosen = build(opts.dataplane, opts, runner, kernel)
        self._other: AnyDataplane | None = None

    def other(self) -> AnyDataplane | None:
        """The other dataplane, or None when the kernel says it holds nothing of it."""
        if self._other is None:
            if self._opts.dataplane == "iptables" and not any(
                self._kernel.table_exists(f, self._opts.nft_table) is not False
                for f in NFT_TABLE_FAMILIES
            ):
                return None  # netlink says there is none: nothing to load, no process
            self._other = self._build()
        return self._other
