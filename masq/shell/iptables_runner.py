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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, TextIO

from returns.result import Failure, Result, Success

from masq.core.addresses import FAMILIES, Family, IPAddress, family_of
from masq.core.config import MasqConfig
from masq.core.egress import ANY_PACKET, Packet
from masq.core.errors import ConfigError
from masq.core.fragment import Fragment
from masq.core.iptables.codec import parse_save, render_ops_readable, render_restore
from masq.core.iptables.evaluate import agent_chain
from masq.core.iptables.model import Op, Ruleset, op_labels
from masq.core.iptables.plan import choose_ops, cleanup_ops, plan, replace_ops
from masq.core.iptables.rules import desired_ruleset
from masq.core.iptables.traffic import traffic_of
from masq.core.merge import Merged
from masq.core.names import POSTROUTING
from masq.core.options import DataplaneOptions
from masq.core.traffic import CidrTraffic
from masq.shell import netlink
from masq.shell.dataplane import Explained, Writes
from masq.shell.errors import AgentError, TransientError, value_or_raise
from masq.shell.iptables_backend import iptables_binary
from masq.shell.process import Completed, Runner, run_command
from masq.shell.process import which as _which

if TYPE_CHECKING:
    from masq.core.nftables.netlink import ObjectChanged
    from masq.shell.nft_watch import Source, TableWatch

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


class Iptables:
    """One family's iptables on one backend.

    ``random_fully`` remembers what ``--version`` said per binary; a dataplane shares
    one such dict among the tables it makes, so it asks once per process.
    """

    def __init__(
        self,
        backend: ResolvedBackend,
        family: Family,
        runner: Runner = run_command,
        random_fully: dict[str, bool] | None = None,
    ) -> None:
        self.backend = backend
        self.family = family
        self.binary = iptables_binary(family, backend)
        self.restore_binary = iptables_binary(family, backend, "restore")
        self._run = runner
        self._random_fully = random_fully if random_fully is not None else {}

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
        where = f"{self.binary} -S output"
        return value_or_raise(
            parse_save(text, chain, self.family),
            lambda error: AgentError(f"cannot parse {error.at(where)}"),
        )

    def restore(self, script: str) -> int | None:
        """One all-or-nothing ``--noflush`` transaction on the nat table; the pid of the
        process that committed it (None: unknown), whose commit is the agent's own."""
        res = self._run([self.restore_binary, "--noflush", f"--wait={LOCK_WAIT_SECONDS}"], script)
        if res.exit_code != 0:
            raise failure(res, f"{self.family} iptables-restore")
        return res.pid

    def supports_random_fully(self, observed_final_random_fully: bool) -> bool:
        """Trust what the kernel already holds; otherwise ask ``--version`` once."""
        if observed_final_random_fully:
            return True
        cached = self._random_fully.get(self.binary)
        if cached is not None:
            return cached
        res = self._run([self.binary, "--version"], None)
        version = parse_version(res.stdout + res.stderr) if res.exit_code == 0 else None
        supported = version is not None and version >= RANDOM_FULLY_MIN_VERSION
        self._random_fully[self.binary] = supported
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


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    """One family's transaction: ``desired`` None for a cleanup (no read-back)."""

    family: Family
    table: Iptables
    desired: Ruleset | None
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class IptablesPlan:
    """One transaction per family (a cleanup: per backend and family holding our chain)."""

    families: tuple[FamilyPlan, ...]
    traffic: Mapping[Family, tuple[CidrTraffic, ...]] = field(default_factory=dict)
    cleanup: bool = False


@dataclass(frozen=True, slots=True)
class _InSync:
    """What a sync that found every family in sync saw: the generation and what it wanted."""

    generation: int
    random_fully: tuple[bool, ...]
    desired: tuple[Ruleset, ...]
    config: MasqConfig


class IptablesDataplane:
    """Our chain and its POSTROUTING jump, one ``iptables-restore --noflush`` per family.

    Remembers, per process, the backend it chose, what each binary's ``--version`` said
    and the nf_tables generation at which it last found every family in sync: on the nft
    backend an unchanged generation proves nothing changed, so a resync lists nothing.
    """

    def __init__(
        self,
        options: DataplaneOptions,
        *,
        backend: Callable[[], ResolvedBackend],
        runner: Runner = run_command,
        kernel: netlink.Kernel = netlink.SYSTEM,
        listen: Callable[[], Source] | None = None,
    ) -> None:
        self.options = options
        self.chain = options.chain
        self._listen = listen
        self._watch: TableWatch | None = None
        self.families = options.families
        self._backend = backend
        self._kernel = kernel
        self._run = runner
        self._resolved: ResolvedBackend | None = None
        self._in_sync: _InSync | None = None
        self._random_fully: dict[str, bool] = {}

    def tables(self) -> tuple[Iptables, ...]:
        if self._resolved is None:
            self._resolved = self._backend()
        return tuple(
            Iptables(self._resolved, f, self._run, self._random_fully) for f in self.families
        )

    def _options(self, random_fully: bool) -> DataplaneOptions:
        """The options with random-fully as far as this iptables supports it."""
        nat = replace(self.options.nat, random_fully=random_fully)
        return replace(self.options, nat=nat)

    def serialised(self) -> AbstractContextManager[None]:
        return writers_lock()

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

    def watch(self) -> TableWatch | None:
        """On the nft backend, the notifications of table ``nat`` that touch our chain or
        POSTROUTING (iptables-nft names the chain of every rule it adds or deletes): while
        none came from anyone else, a resync lists nothing, however often kube-proxy
        rewrites its own chains.  None on the legacy backend or without netlink."""
        if self._watch is not None or self._listen is None:
            return self._watch
        try:
            if self.tables()[0].backend != "nft":
                return None
        except AgentError:
            return None  # no backend yet: the first sync says why, and lists every time
        from masq.shell.nft_elements import NetlinkError
        from masq.shell.nft_watch import TableWatch, no_netlink

        try:
            source = self._listen()
        except (OSError, NetlinkError) as error:
            if not no_netlink(error):
                raise
            return None
        ours = {self.chain, POSTROUTING}

        def relevant(change: ObjectChanged) -> bool:
            return change.kind == "table" or change.name in ours

        self._watch = TableWatch(source, {("ip", "nat"), ("ip6", "nat")}, relevant)
        return self._watch

    def _own(self, pid: int | None) -> None:
        if self._watch is not None:
            self._watch.own(pid=pid, portid=pid)

    def plan(self, config: MasqConfig) -> IptablesPlan:
        """Observe every family (unless nothing changed) and plan; no write yet."""
        tables = self.tables()
        generation = self._kernel.generation() if tables[0].backend == "nft" else None
        if self._watch is not None:  # the notifications, not the generation, say
            self._watch.poll()
            if self._in_sync is not None and not self._watch.dirty:
                generation = self._in_sync.generation
            else:
                self._watch.settle()
        if cached := self._unchanged(config, generation):
            return IptablesPlan(cached)
        plans, flags, wanted, traffic = [], [], [], {}
        for table in tables:
            observed = table.observe(self.chain)
            traffic[table.family] = traffic_of(observed).get(table.family, ())
            rf = self.options.nat.random_fully and table.supports_random_fully(
                final_random_fully(observed, self.chain)
            )
            desired = desired_ruleset(config, table.family, self._options(rf))
            plans.append(FamilyPlan(table.family, table, desired, choose_ops(desired, observed)))
            flags.append(rf)
            wanted.append(desired)
        LOG.debug("listed", extra={"kv": {"families": ",".join(t.family for t in tables)}})
        in_sync = generation is not None and not any(p.ops for p in plans)
        self._in_sync = (
            _InSync(generation, tuple(flags), tuple(wanted), config)
            if in_sync and generation is not None
            else None
        )
        return IptablesPlan(tuple(plans), traffic)

    def cleanup(self) -> IptablesPlan:
        """Our chain and jumps in every backend and family whose binaries exist."""
        tables = leftover_tables(self.chain, self._run, self._kernel)
        return IptablesPlan(
            tuple(
                FamilyPlan(
                    table.family, table, None, cleanup_ops(table.observe(self.chain), self.chain)
                )
                for table in tables
            ),
            cleanup=True,
        )

    def apply(self, plan: IptablesPlan) -> Writes:
        """Each family's transaction in turn."""
        labels: dict[Family, tuple[str, ...]] = {}
        ops = 0
        for p in plan.families:
            if not p.ops:
                if not plan.cleanup:
                    LOG.log(logging.INFO - 5, "in sync", extra={"kv": {"family": p.family}})
                continue
            applied = self._apply(p, p.desired) if p.desired is not None else self._remove(p)
            labels[p.family] = labels.get(p.family, ()) + _labels(applied)
            ops += len(applied) if p.desired is not None else len(p.ops)
        return Writes(ops, labels)

    def _remove(self, p: FamilyPlan) -> tuple[Op, ...]:
        self._own(p.table.restore(render_restore(p.ops)))
        LOG.info(
            "iptables chain removed",
            extra={"kv": {"family": p.family, "binary": p.table.binary, "ops": len(p.ops)}},
        )
        return p.ops

    def _apply(self, p: FamilyPlan, desired: Ruleset) -> tuple[Op, ...]:
        """Apply the plan; if the kernel refuses it, re-observe and replace our chain whole."""
        self._in_sync = None
        try:
            self._own(p.table.restore(render_restore(p.ops)))
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
            if not plan(desired, observed):
                LOG.info("rules updated", extra={"kv": {"family": p.family, "ops": len(p.ops)}})
                return p.ops
            LOG.warning(
                "chain changed during the update, replacing it", extra={"kv": {"family": p.family}}
            )
            return p.ops + self._replace(p, desired, observed)
        return self._replace(p, desired, p.table.observe(self.chain))

    def _replace(self, p: FamilyPlan, desired: Ruleset, observed: Ruleset) -> tuple[Op, ...]:
        """Full-sync fallback: one transaction that rebuilds our chain and its jump."""
        ops = replace_ops(desired, observed)
        self._own(p.table.restore(render_restore(ops)))
        LOG.info("chain replaced", extra={"kv": {"family": p.family, "ops": len(ops)}})
        return ops

    def describe(self, plan: IptablesPlan, out: TextIO) -> None:
        for p in plan.families:
            binary = p.table.binary
            if plan.cleanup:
                out.write(f"# {p.family} ({binary}): cleanup\n")
            elif not p.ops:
                out.write(f"# {p.family} ({binary}): in sync, nothing to do\n")
                continue
            else:
                out.write(f"# {p.family} ({binary}): {len(p.ops)} change(s)\n")
            out.write(render_ops_readable(p.ops))

    def traffic(self, config: MasqConfig) -> dict[Family, tuple[CidrTraffic, ...]]:
        """Per-CIDR counters from one listing of our chain per family (read-only)."""
        return {
            t.family: traffic_of(t.observe(self.chain, jumps=False)).get(t.family, ())
            for t in self.tables()
        }

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
        """From the live chain (else the desired one) of ``ip``'s family."""
        from masq.core.iptables.explain import explain  # --explain only

        family = family_of(ip)
        if family not in self.families:
            ruleset, label = None, "none (IPv6 is not enabled: --enable-ipv6=false)"
        else:
            live, label = self._live(family) if read_live else (None, "live rules not read")
            if live is not None:
                ruleset = live
            elif merged is None:
                return Failure(ConfigError("", label))
            else:
                options = self._options(self.options.nat.random_fully)
                ruleset = desired_ruleset(merged.config, family, options)
                label = f"desired, from the config ({label})"
        explanation = explain(
            ip,
            ruleset=ruleset,
            fragments=fragments,
            merged=merged,
            chain=self.chain,
            local=local,
            packet=packet,
        )
        return Success(Explained(explanation, label))

    def _live(self, family: Family) -> tuple[Ruleset | None, str]:
        """The chain as the kernel holds it, or None with the reason we fall back."""
        try:
            table = next(t for t in self.tables() if t.family == family)
            observed = table.observe(self.chain)
        except Exception as e:  # any failure to read is reported, never fatal here
            return None, f"live rules unreadable ({e})"
        if observed.chain(self.chain) is None:
            return None, f"chain {self.chain} is absent from {table.binary} (not synced here)"
        label = f"live, read from {table.binary}"
        if agent_chain(observed) != self.chain:
            label += f" (warning: POSTROUTING does not jump to {self.chain})"
        return observed, label


def _labels(ops: Sequence[Op]) -> tuple[str, ...]:
    """``rule_writes_total`` op labels of one family's ops that were written."""
    return tuple(label for op in ops for label in op_labels(op))


def _binaries_exist(backend: ResolvedBackend, family: Family) -> bool:
    return all(_which(iptables_binary(family, backend, tool)) for tool in ("", "restore"))


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
