"""Running iptables: observe what the agent owns, apply one restore per family.

Every command is an argv list run by ``process.run_command`` (never a shell string).  What
is read is chosen to read least on a node whose nat table is huge (kube-proxy):
``-S POSTROUTING`` plus ``-S CHAIN -v`` on both backends.  On nft a one-chain
listing costs ~5 ms whatever the table size.  On legacy every listing fetches
the whole table blob from the kernel (``-S`` ~80 ms with 50k rules, ``-save``
~110 ms), so one save looks cheaper than two listings, but measured here it is
not: the save's 5 MB of text costs this process ~125 ms of CPU to capture and
another ~170 ms to parse, while a listing's output is a few lines.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TextIO

from returns.result import Failure

from masq.core.addresses import FAMILIES, Family
from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save, render_ops_readable, render_restore
from masq.core.iptables.model import Op, Ruleset, op_label
from masq.core.iptables.plan import choose_ops, cleanup_ops, plan, replace_ops
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.core.iptables.traffic import traffic_of
from masq.core.names import POSTROUTING
from masq.core.traffic import CidrTraffic
from masq.shell import netlink
from masq.shell.errors import AgentError, TransientError
from masq.shell.process import Completed, Runner, run_command
from masq.shell.process import which as _which

LOG = logging.getLogger("masq.iptables")

ResolvedBackend = Literal["nft", "legacy"]
BACKENDS: tuple[ResolvedBackend, ...] = ("nft", "legacy")
LOCK_WAIT_SECONDS = 5  # then exit 4 -> TransientError -> backoff, never a silent hang
RANDOM_FULLY_MIN_VERSION = (1, 6, 2)
_TRANSIENT_EXIT = 4  # iptables' RESOURCE_PROBLEM: lock held, ENOBUFS, EAGAIN
_TRANSIENT_TEXT = (
    "xtables lock",
    "Another app is currently holding",
    "Resource temporarily unavailable",
)
# iptables-nft 1.8.9 says "incompatible" for a chain that simply does not exist.
_ABSENT_TEXT = ("No chain/target/match by that name", "does not exist", "is incompatible")
_VERSION = re.compile(r"v(\d+)\.(\d+)(?:\.(\d+))?")


_PERMANENT_TEXT = ("Permission denied", "Operation not permitted")


def is_transient(result: Completed) -> bool:
    """Worth retrying: a held lock or a busy kernel, never a missing capability."""
    if any(t in result.stderr for t in _PERMANENT_TEXT):
        return False  # iptables-nft says exit 4 for this too; retrying cannot help
    return result.exit_code == _TRANSIENT_EXIT or any(t in result.stderr for t in _TRANSIENT_TEXT)


def failure(result: Completed, what: str) -> AgentError:
    """The right exception for a failed command, with its first stderr line as the reason."""
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    reason = lines[0] if lines else f"exit code {result.exit_code}"
    message = f"{what} failed ({result.argv[0]}): {reason}"
    return TransientError(message) if is_transient(result) else AgentError(message)


def parse_version(text: str) -> tuple[int, int, int] | None:
    m = _VERSION.search(text)
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


_random_fully_cache: dict[str, bool] = {}


class Iptables:
    """One family's iptables on one backend."""

    def __init__(
        self, backend: ResolvedBackend, family: Family, runner: Runner = run_command
    ) -> None:
        self.backend = backend
        self.family = family
        base = "iptables" if family == "ipv4" else "ip6tables"
        self.binary = f"{base}-{backend}"
        self.restore_binary = f"{base}-{backend}-restore"
        self._run = runner

    def run(self, argv: list[str]) -> Completed:
        return self._run(argv, None)

    def _list(self, chain: str, *flags: str) -> Completed:
        wait = f"--wait={LOCK_WAIT_SECONDS}"  # legacy listings take the xtables lock too
        return self._run([self.binary, wait, "-t", "nat", "-S", chain, *flags], None)

    def chain_text(self, chain: str) -> str:
        """Our chain with counters (``-S CHAIN -v``); "" when it does not exist (yet)."""
        own = self._list(chain, "-v")
        if own.exit_code == 1 and any(t in own.stderr for t in _ABSENT_TEXT):
            return ""
        if own.exit_code != 0:
            raise failure(own, f"listing {chain}")
        return own.stdout

    def observe_text(self, chain: str) -> str:
        """POSTROUTING's rules and our chain with counters, as two one-chain listings."""
        post = self._list(POSTROUTING)
        if post.exit_code != 0:
            raise failure(post, "listing POSTROUTING")
        return post.stdout + self.chain_text(chain)

    def observe(self, chain: str, *, jumps: bool = True) -> Ruleset:
        """What the agent owns; ``jumps`` False reads only the chain (one process: counters)."""
        text = self.observe_text(chain) if jumps else self.chain_text(chain)
        parsed = parse_save(text, chain, self.family)
        if isinstance(parsed, Failure):
            error = parsed.failure().at(f"{self.binary} -S output")
            raise AgentError(f"cannot parse {error}")
        return parsed.unwrap()

    def restore(self, script: str) -> None:
        """One all-or-nothing ``--noflush`` transaction on the nat table."""
        res = self._run([self.restore_binary, "--noflush", f"--wait={LOCK_WAIT_SECONDS}"], script)
        if res.exit_code != 0:
            raise failure(res, f"{self.family} iptables-restore")

    def supports_random_fully(self, observed_final_random_fully: bool) -> bool:
        """Trust what the kernel already holds; otherwise ask ``--version`` once per process."""
        if observed_final_random_fully:
            return True
        cached = _random_fully_cache.get(self.binary)
        if cached is not None:
            return cached
        res = self._run([self.binary, "--version"], None)
        version = parse_version(res.stdout + res.stderr) if res.exit_code == 0 else None
        supported = version is not None and version >= RANDOM_FULLY_MIN_VERSION
        _random_fully_cache[self.binary] = supported
        return supported


XTABLES_LOCK = "/run/xtables.lock"
WRITERS_LOCK_WAIT_SECONDS = 10.0


@contextmanager
def writers_lock() -> Iterator[None]:
    """Serialise observe -> plan -> write among the agents of one node.

    A rolling update runs two agents at once; each plans positional edits from its
    own listing, so one writing between the other's listing and write would leave a
    wrong chain until the next read-back (tens of ms, found by the fault soak).  The
    lock is a POSIX record lock on the xtables lock file the DaemonSet shares with the
    host: independent of iptables' own ``flock`` on that file, so it never blocks
    iptables.  If the file cannot be opened, or another agent holds the lock for
    10 s, the sync goes ahead unserialised (the read-back still heals it).
    """
    path = os.environ.get("XTABLES_LOCKFILE", XTABLES_LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + WRITERS_LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() > deadline:
                    LOG.warning("another agent holds the writers' lock; syncing anyway")
                    break
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # releases the lock


def final_random_fully(observed: Ruleset, chain: str) -> bool:
    own = observed.chain(chain)
    if own is None or not own.rules:
        return False
    last = own.rules[-1]
    return last.action == "MASQUERADE" and last.random_fully


TrafficHook = Callable[[Family, tuple[CidrTraffic, ...]], None]


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    family: Family
    table: Iptables
    desired: Ruleset
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class _InSync:
    """What a sync that found every family in sync saw: the generation and what it wanted."""

    generation: int
    random_fully: tuple[bool, ...]
    desired: tuple[Ruleset, ...]
    config: MasqConfig


class IptablesDataplane:
    """Our chain and its POSTROUTING jump, one ``iptables-restore --noflush`` per family.

    Remembers, per process, the backend it chose and the nf_tables generation at which
    it last found every family in sync: on the nft backend an unchanged generation
    proves nothing changed, so a resync lists nothing.
    """

    def __init__(
        self,
        chain: str,
        *,
        backend: Callable[[], ResolvedBackend],
        families: tuple[Family, ...],
        options: Callable[[bool], RulesetOptions],
        random_fully: bool = True,
        runner: Runner = run_command,
        kernel: netlink.Kernel = netlink.SYSTEM,
    ) -> None:
        self.chain = chain
        self.families = families
        self._backend = backend
        self._options = options
        self._random_fully = random_fully
        self._kernel = kernel
        self._run = runner
        self._resolved: ResolvedBackend | None = None
        self._in_sync: _InSync | None = None

    def tables(self) -> tuple[Iptables, ...]:
        if self._resolved is None:
            self._resolved = self._backend()
        return tuple(Iptables(self._resolved, f, self._run) for f in self.families)

    def _unchanged(self, config: MasqConfig, generation: int | None) -> tuple[FamilyPlan, ...]:
        """Empty plans when the generation proves the kernel is as last found in sync."""
        known = self._in_sync
        if known is None or generation != known.generation:
            return ()
        tables = self.tables()
        # The loader's same object means the files did not change: nothing to rebuild.
        wanted = (
            known.desired
            if config is known.config
            else tuple(
                desired_ruleset(config, t.family, self._options(rf))
                for t, rf in zip(tables, known.random_fully, strict=True)
            )
        )
        if wanted != known.desired:
            return ()
        return tuple(FamilyPlan(t.family, t, d, ()) for t, d in zip(tables, wanted, strict=True))

    def plan(self, config: MasqConfig, traffic: TrafficHook) -> tuple[FamilyPlan, ...]:
        """Observe every family (unless nothing changed) and plan; no write yet."""
        tables = self.tables()
        generation = self._kernel.generation() if tables[0].backend == "nft" else None
        if cached := self._unchanged(config, generation):
            return cached
        plans, flags = [], []
        for table in tables:
            observed = table.observe(self.chain)
            traffic(table.family, traffic_of(observed))
            rf = self._random_fully and table.supports_random_fully(
                final_random_fully(observed, self.chain)
            )
            desired = desired_ruleset(config, table.family, self._options(rf))
            plans.append(FamilyPlan(table.family, table, desired, choose_ops(desired, observed)))
            flags.append(rf)
        in_sync = generation is not None and not any(p.ops for p in plans)
        self._in_sync = (
            _InSync(generation, tuple(flags), tuple(p.desired for p in plans), config)
            if in_sync and generation is not None
            else None
        )
        return tuple(plans)

    def apply(self, p: FamilyPlan) -> tuple[Op, ...]:
        """Apply the plan; if the kernel refuses it, re-observe and replace our chain whole."""
        self._in_sync = None
        try:
            p.table.restore(render_restore(p.ops))
        except TransientError:
            raise
        except AgentError as first:
            LOG.warning(
                "incremental update refused, replacing the chain",
                extra={"kv": {"family": p.family, "error": str(first)}},
            )
        else:
            # Positions were planned from an earlier listing; if another writer moved the
            # chain in between, the restore succeeds on the wrong rules.  Only a read-back
            # tells, and it costs a listing only when we wrote.
            observed = p.table.observe(self.chain)
            if not plan(p.desired, observed):
                LOG.info("rules updated", extra={"kv": {"family": p.family, "ops": len(p.ops)}})
                return p.ops
            LOG.warning(
                "chain changed during the update, replacing it", extra={"kv": {"family": p.family}}
            )
            return p.ops + self._replace(p, observed)
        return self._replace(p, p.table.observe(self.chain))

    def _replace(self, p: FamilyPlan, observed: Ruleset) -> tuple[Op, ...]:
        """Full-sync fallback: one transaction that rebuilds our chain and its jump."""
        ops = replace_ops(p.desired, observed)
        p.table.restore(render_restore(ops))
        LOG.info("chain replaced", extra={"kv": {"family": p.family, "ops": len(ops)}})
        return ops

    @staticmethod
    def describe(plans: Sequence[FamilyPlan], out: TextIO) -> None:
        for p in plans:
            binary = p.table.binary
            if not p.ops:
                out.write(f"# {p.family} ({binary}): in sync, nothing to do\n")
                continue
            out.write(f"# {p.family} ({binary}): {len(p.ops)} change(s)\n")
            out.write(render_ops_readable(p.ops))


def write_labels(ops: Sequence[Op]) -> list[str]:
    return [op_label(op) for op in ops]


def _binaries_exist(backend: ResolvedBackend, family: Family) -> bool:
    base = "iptables" if family == "ipv4" else "ip6tables"
    return all(_which(f"{base}-{backend}{s}") for s in ("", "-restore"))


def _kernel_says(table: Iptables, chain: str, kernel: netlink.Kernel) -> bool | None:
    """Whether the kernel holds our chain, when netlink or /proc can tell (None: list it)."""
    if table.backend == "nft":
        return kernel.chain_exists("ip" if table.family == "ipv4" else "ip6", "nat", chain)
    legacy = kernel.legacy_tables(table.family)
    return False if legacy is not None and "nat" not in legacy else None


def chain_present(table: Iptables, chain: str, kernel: netlink.Kernel) -> bool:
    """A cheap read-only check for our chain: netlink or /proc first, a listing if needed."""
    known = _kernel_says(table, chain, kernel)
    return _chain_listed(table, chain) if known is None else known


def _chain_listed(table: Iptables, chain: str) -> bool:
    res = table.run([table.binary, f"--wait={LOCK_WAIT_SECONDS}", "-t", "nat", "-S", chain])
    return res.exit_code == 0


def leftover_tables(
    chain: str, runner: Runner = run_command, kernel: netlink.Kernel = netlink.SYSTEM
) -> tuple[Iptables, ...]:
    """Every backend and family (whose binaries exist) that still holds our chain.

    The kernel is asked first: looking for four binaries on PATH at every resync was a
    fifth of an idle nftables-mode resync.
    """
    tables = (Iptables(backend, family, runner) for backend in BACKENDS for family in FAMILIES)
    return tuple(
        table
        for table in tables
        if (known := _kernel_says(table, chain, kernel)) is not False
        and _binaries_exist(table.backend, table.family)
        and (known or _chain_listed(table, chain))
    )


def cleanup_plans(
    tables: Sequence[Iptables], chain: str
) -> tuple[tuple[Iptables, tuple[Op, ...]], ...]:
    """What removes our jumps and chain from each table (read before any write)."""
    return tuple((table, cleanup_ops(table.observe(chain), chain)) for table in tables)
