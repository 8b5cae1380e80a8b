"""What a run recorded: the driver writes these, the checker judges them.

Every time is CLOCK_MONOTONIC seconds (``time.monotonic()``), the clock the prober and
listener stamp their datagrams with in their own namespaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from integration.topology import Backend

from soak.catalogue import Files
from soak.schedule import Scenario

Role = Literal["primary", "second"]
WriterName = Literal["iptables", "nft"]
"""The foreign writers: kube-proxy's iptables chains (``kubeproxy.py``), and with the
nftables dataplane also kube-proxy's nftables table (``kubeproxy_nft.py``)."""
PushKind = Literal["initial", "config", "broken", "fix"]


@dataclass(frozen=True, slots=True)
class Push:
    """One kubelet-style swap of the ConfigMap volume, from ``before`` to ``files``."""

    start: float
    end: float
    before: Files
    files: Files
    kind: PushKind
    label: str


@dataclass(frozen=True, slots=True)
class Life:
    """One process of an agent, from spawn to exit."""

    role: Role
    index: int
    spawned: float
    alive_until: float  # the last time the driver saw it running
    ended: float  # when the driver saw it gone
    returncode: int
    signal: Literal["KILL", "TERM"] | None  # what the driver sent it, if anything
    signalled_at: float | None
    write_in_flight: bool  # a write (restore, nft batch) was running when it was SIGKILLed
    log: str


@dataclass(frozen=True, slots=True)
class LockHold:
    requested: float
    held: float | None
    released: float


@dataclass(frozen=True, slots=True)
class RestoreFaults:
    """The wrapper's counter set to ``count`` at ``armed``, back to 0 at ``disarmed``."""

    armed: float
    count: int
    disarmed: float


@dataclass(frozen=True, slots=True)
class Tamper:
    """A foreign nft changed the agent's table (``kind``: ``schedule.TAMPERS``) between
    ``start`` and ``end``; ``rc`` 0 when it did (nft commits all of a command or none)."""

    start: float
    end: float
    kind: str
    rc: int
    command: str


@dataclass(frozen=True, slots=True)
class RestoreCall:
    at: float
    failed: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    start: float
    end: float
    text: str  # iptables-save -t nat, '#' lines removed
    phase: Literal["storm", "settle", "final"]
    nft: str = ""  # nftables dataplane: nft list ruleset, taken within [start, end] too


@dataclass(frozen=True, slots=True)
class ForeignWrite:
    gen: int
    start: float
    end: float
    restore_rc: int  # the write's exit code (iptables-restore, or nft -f)
    hooks_rc: int  # iptables: the worst exit of keeping the hooks; nft: always 0
    writer: WriterName = "iptables"


@dataclass(frozen=True, slots=True)
class Probe:
    seq: int
    dest: int  # index into catalogue.DESTINATIONS
    sent: float
    received: float
    source: str


@dataclass
class RunLog:
    seed: int
    seconds: float
    backend: Backend
    dataplane: str
    schedule_digest: str
    op_counts: dict[str, int]
    scenario: Scenario = "storm"
    storm_start: float = 0.0
    storm_end: float = 0.0
    recovered_at: float | None = None
    finished: float = 0.0
    pushes: list[Push] = field(default_factory=list)
    lives: list[Life] = field(default_factory=list)
    locks: list[LockHold] = field(default_factory=list)
    restore_faults: list[RestoreFaults] = field(default_factory=list)
    restore_calls: list[RestoreCall] = field(default_factory=list)
    tampers: list[Tamper] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    foreign: list[ForeignWrite] = field(default_factory=list)
    probes: list[Probe] = field(default_factory=list)
    probes_sent: int = 0
    second_agent: list[tuple[float, float]] = field(default_factory=list)
    dry_run: tuple[int, str, str] | None = None  # exit code, stdout, stderr
    notes: list[str] = field(default_factory=list)
