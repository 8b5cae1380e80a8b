"""The nftables dataplane in the shell: observe the agent's table, hand nft each batch whole.

A batch reaches nft as a complete in-memory file (memfd) that nft reads as its
stdin: ``nft -f -`` on a pipe commits whatever it parsed before EOF, so an agent
killed while writing a pipe could commit half a batch; with the memfd, nft has the
whole batch or nothing to read.  Concurrent commits are retried by nft itself
(generation mismatch); what reaches us as transient is resource shortage, told by
nft's message.  Only the agent's own table is ever listed or written.

Where the kernel gives netlink access to nf_tables (``nft_watch.Elements``), the set
elements, the big part of the table, are read with one dump per set and element-only
plans are written as one nfnetlink batch; the structure (table, set declarations,
chains, rules) still comes from ``nft -t -j list ruleset`` (terse: nft fetches no
element) and goes in ``nft -f`` batches.  A daemon also watches the notifications
(``watch``): while nobody else touched the table, a resync lists nothing.  Without
netlink access, ``nft`` does everything; one start-up line says which path is in use.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Protocol, TextIO

from pyrsistent import pmap
from returns.result import Failure, Result, Success

from masq.core.addresses import Family, IPAddress, IPNetwork, cidr_key, family_of
from masq.core.config import MasqConfig
from masq.core.decision import decide
from masq.core.egress import ANY_PACKET, Packet
from masq.core.errors import ConfigError
from masq.core.fragment import Fragment
from masq.core.merge import Merged
from masq.core.nftables.codec import parse_listing, render_batch, render_ops_readable, state_of
from masq.core.nftables.model import (
    POSTROUTING_CHAIN,
    AddElements,
    DeleteElements,
    DeleteTable,
    NftFamily,
    NftOp,
    NftState,
    NftTable,
    ReplaceSet,
    ReplaceTable,
    op_families,
    op_labels,
)
from masq.core.nftables.netlink import NftProto, RuleCounter, SetEdit
from masq.core.nftables.plan import cleanup_ops, load_stages, plan, replace_ops
from masq.core.nftables.table import desired_table, table_family
from masq.core.nftables.traffic import ScrapePlan, scrape_plan, scraped, traffic_of
from masq.core.options import DataplaneOptions
from masq.core.traffic import CidrTraffic, Counters
from masq.shell import collector, netlink
from masq.shell.dataplane import Explained, Writes
from masq.shell.errors import AgentError, TransientError, value_or_raise
from masq.shell.nft_elements import NetlinkError, Written
from masq.shell.nft_watch import Elements, TableWatch, followed, no_netlink
from masq.shell.process import Completed, Runner, run_command
from masq.shell.process import which as _which

LOG = logging.getLogger("masq.nftables")
BATCH_TIMEOUT_SECONDS = 120.0
"""nft retries a netlink read that keeps failing with EINTR forever; a batch (100,000
elements load in ~1 s) that runs this long is killed and the sync retried."""
LIST_TIMEOUT_SECONDS = 30.0
"""A listing nft restarts each time a commit moves the generation under it (beside a
busy writer it can spin for minutes): it is killed past this, and the sync retried."""
NFT_FAMILIES: tuple[NftFamily, ...] = ("ip", "inet")
_TRANSIENT_TEXT = (
    "Resource temporarily unavailable",
    "No buffer space available",
    "Interrupted system call",
    "Too many open files",
    "Device or resource busy",
    "Cannot allocate memory",
    "timed out after",
)
_ABSENT_TEXT = "No such file or directory"
_FEATURES = (
    ("fib daddr", "the fib expression (nft_fib, fib_inet/fib_ipv4)"),
    ("type nat hook", "nat chains in this family (nft_chain_nat)"),
    ("numgen", "numgen (nft_numgen)"),
    ("masquerade", "masquerade (nft_masq)"),
)
"""Needle -> feature, looked for in what nft marked with carets (the expression the kernel
refused), then in the whole refusal (a marked ``numgen`` rule also says ``masquerade``)."""
_SET_FEATURES = "interval sets (nft_set_rbtree) or counters on set elements (Linux 5.7 or later)"
"""A refused set declaration: nft marks the set's name whatever the kernel refused in it."""


def _error(result: Completed) -> tuple[str, str, str] | None:
    """nft's first error line, the statement line after it and the line of carets under it
    ("" where absent), indentation kept so that the carets line up with the statement."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "Error:" in line or "rror" in line.strip()[:20]:
            statement, carets = [*lines[i + 1 : i + 3], "", ""][:2]
            if "^" in statement:  # no statement: the carets follow the error line
                statement, carets = "", ""
            return line, statement, carets
    return None


def _reason(result: Completed) -> str:
    """nft's error and the statement it blamed, as one line."""
    found = _error(result)
    if found is None:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        return lines[0] if lines else f"exit code {result.exit_code}"
    line, statement, _ = found
    message = line.split("Error:", 1)[-1].strip()
    return f"{message} at: {statement.strip()}" if statement else message


def _unparsable(where: str) -> Callable[[ConfigError], AgentError]:
    """A listing the codec cannot read is the agent's failure, named by where it came from."""
    return lambda error: AgentError(f"cannot parse {error.at(where)}")


def failure(result: Completed, what: str) -> AgentError:
    """The right exception for a failed nft run (transient by nft's own message)."""
    message = f"{what} failed (nft): {_reason(result)}"
    if any(t in result.stderr for t in _TRANSIENT_TEXT):
        return TransientError(message)
    return AgentError(message)


def feature_missing(result: Completed) -> str:
    """What the probe's refusal says is missing, for the one line the operator reads."""
    reason = _reason(result)
    _, statement, carets = _error(result) or ("", "", "")
    if statement.strip().startswith("set "):
        return f"the kernel or nft lacks {_SET_FEATURES}: {reason}"
    marked = "".join(char for char, mark in zip(statement, carets, strict=False) if mark == "^")
    for text in (marked, reason):
        for needle, feature in _FEATURES:
            if needle in text:
                return f"the kernel or nft lacks {feature}: {reason}"
    if "Operation not permitted" in reason:
        return f"no permission to use nf_tables (CAP_NET_ADMIN): {reason}"
    return f"nf_tables refused the table: {reason}"


class Nft:
    """The ``nft`` tool, for the agent's one table."""

    def __init__(
        self, table: str, runner: Runner = run_command, kernel: netlink.Kernel = netlink.SYSTEM
    ) -> None:
        self.table = table
        self._run = runner
        self._kernel = kernel

    def families_present(self) -> tuple[NftFamily, ...]:
        """Families holding a table of ours: netlink first (no process), else ``nft``."""
        known = {f: self._kernel.table_exists(f, self.table) for f in NFT_FAMILIES}
        if None not in known.values():
            return tuple(f for f in NFT_FAMILIES if known[f])
        if _which("nft") is None:
            return ()  # no nft, no netlink answer: nothing of ours can be listed or removed
        res = self._run(["nft", "list", "tables"], None)
        if res.exit_code != 0:
            raise failure(res, "listing tables")
        present = {tuple(line.split()[1:3]) for line in res.stdout.splitlines() if line.strip()}
        return tuple(f for f in NFT_FAMILIES if (f, self.table) in present)

    def list(self, family: NftFamily) -> NftTable | None:
        """Our table of ``family`` with every element's counter (None: it is gone)."""
        res = self._run(
            ["nft", "-j", "list", "table", family, self.table], None, LIST_TIMEOUT_SECONDS
        )
        if res.exit_code != 0:
            if _ABSENT_TEXT in res.stderr:
                return None
            raise failure(res, f"listing table {family} {self.table}")
        return value_or_raise(
            parse_listing(res.stdout, family, self.table), _unparsable("nft -j list table")
        )

    def structure(self, family: NftFamily) -> NftTable | None:
        """Our table of ``family`` without its elements (None: it is gone).

        ``nft -t list table`` still downloads every element; ``-t list ruleset FAMILY``
        does not, so the family's ruleset is listed and every other table dropped
        before the codec reads it.
        """
        argv = ["nft", "-t", "-j", "list", "ruleset", family]
        res = self._run(argv, None, LIST_TIMEOUT_SECONDS)
        if res.exit_code != 0:
            raise failure(res, f"listing ruleset {family}")
        try:
            objects = json.loads(res.stdout)["nftables"]
            kept = [o for o in objects if _of_table(o, family, self.table)]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AgentError(f"cannot parse nft -j list ruleset {family}: {error}") from None
        if not any("table" in o for o in kept):
            return None
        return value_or_raise(
            parse_listing(json.dumps({"nftables": kept}), family, self.table),
            _unparsable("nft -j list ruleset"),
        )

    def observe(self) -> NftState:
        tables = [self.list(f) for f in self.families_present()]
        return state_of(t for t in tables if t is not None)

    def run_batch(self, batch: str, *, check: bool = False) -> int | None:
        """One transaction, handed over whole (``check``: nft -c, the kernel validates only);
        the pid of the nft that committed it (None: unknown), whose commit is the agent's."""
        fd = os.memfd_create("ip-masq-agent-batch")
        try:
            data = batch.encode()
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.lseek(fd, 0, os.SEEK_SET)
            argv = ["nft", "-c", "-f", "-"] if check else ["nft", "-f", "-"]
            res = self._run(argv, fd, BATCH_TIMEOUT_SECONDS)
        finally:
            os.close(fd)
        if res.exit_code != 0:
            error = failure(res, "nft check" if check else "nft batch")
            if check and not isinstance(error, TransientError):
                error = AgentError(feature_missing(res))  # the probe: say what is missing
            raise error
        return res.pid


def _of_table(obj: Mapping[str, object], family: str, table: str) -> bool:
    """Whether one object of a ruleset listing belongs to table ``family table``."""
    for kind, body in obj.items():
        if not isinstance(body, dict) or body.get("family") != family:
            return False
        return body.get("name" if kind == "table" else "table") == table
    return False


@dataclass(frozen=True, slots=True)
class _Known:
    """The table the kernel holds at ``generation`` (listed, or modelled after our batch),
    and the config it is in sync with (None: not known to be)."""

    generation: int
    table: NftTable
    in_sync: MasqConfig | None


@dataclass(frozen=True, slots=True)
class NftPlan:
    desired: NftTable | None  # None: a cleanup, which wants no table
    observed: NftState
    ops: tuple[NftOp, ...]
    listed: bool = True  # False: the generation id proved nothing changed; nothing was read
    generation: int | None = None  # the generation ``observed`` is the kernel's state at
    counted: Callable[[], Mapping[Family, tuple[CidrTraffic, ...]]] | None = None

    @property
    def traffic(self) -> Mapping[Family, tuple[CidrTraffic, ...]]:
        """The counters the listing showed, worked out when asked (a sync that writes does
        not ask: its counters predate the write; at 50,000 CIDRs that saves ~1 s)."""
        return {} if self.counted is None else self.counted()


DEFAULT_MAX_CIDR_SERIES = 300
"""``--metrics-max-cidr-series``' default: per-CIDR series per family a scrape shows."""


class CounterReader(Protocol):
    """Reads counters without listing the table: a chain's rules, a few set elements."""

    def rules(self, proto: NftProto, table: str, chain: str) -> list[RuleCounter]: ...

    def elements(
        self, proto: NftProto, table: str, set_name: str, nets: Sequence[IPNetwork]
    ) -> Mapping[IPNetwork, Counters | None]: ...


ElementReader = Callable[
    [NftProto, str, str, Sequence[IPNetwork]], Mapping[IPNetwork, Counters | None]
]
"""(table family, table, set, CIDRs) -> the counters of the elements starting there."""


class NetlinkCounters:
    """``CounterReader`` over netlink (``masq.shell.nft_elements``), imported on first use."""

    def rules(self, proto: NftProto, table: str, chain: str) -> list[RuleCounter]:
        from masq.shell.nft_elements import read_rule_counters

        return read_rule_counters(proto, table, chain)

    def elements(
        self, proto: NftProto, table: str, set_name: str, nets: Sequence[IPNetwork]
    ) -> Mapping[IPNetwork, Counters | None]:
        from masq.shell.nft_elements import read_counters

        return read_counters(proto, table, set_name, nets)


def next_generation(generation: int) -> int:
    """The generation after one commit (a u32 that skips 0 when it wraps)."""
    return (generation + 1) & 0xFFFFFFFF or 1


class NftablesDataplane:
    """Plans and applies the agent's table; remembers the table it last knew the kernel to
    hold, and (``watch``) whether anyone else touched it since."""

    def __init__(
        self,
        options: DataplaneOptions,
        runner: Runner = run_command,
        kernel: netlink.Kernel = netlink.SYSTEM,
        elements: Elements | None = None,
        *,
        max_series: int = DEFAULT_MAX_CIDR_SERIES,
        counters: CounterReader | None = None,
    ) -> None:
        self.options = options
        self.max_series = max_series
        # Scrapes read counters over netlink from the real kernel only (a fake kernel
        # in tests has none to offer unless it passes its own reader).
        self._counters = counters or (NetlinkCounters() if kernel is netlink.SYSTEM else None)
        self.family = table_family(options)
        self.nft = Nft(options.table, runner, kernel)
        self._kernel = kernel
        self._elements = elements
        self._watch: TableWatch | None = None
        self._path_said = False
        self._known: _Known | None = None
        self._desired: tuple[MasqConfig, NftTable] | None = None
        self._scrape_plans: tuple[MasqConfig, NftTable, ScrapePlan] | None = None
        self._probed = False
        self._warned_no_nft = False

    def watch(self) -> TableWatch | None:
        """Subscribe to nf_tables notifications (the daemon, before its first listing);
        None without netlink access, and then every resync asks the kernel."""
        if self._watch is None and self._elements is not None:
            try:
                source = self._elements.listen()
            except (OSError, NetlinkError) as error:
                self._no_netlink(error)
            else:
                self._watch = TableWatch(source, {(self.family, self.options.table)})
        self._say_path()
        return self._watch

    def _say_path(self) -> None:
        """One line, once: which way the elements reach the kernel."""
        if self._path_said:
            return
        self._path_said = True
        if self._elements is None:
            LOG.info("nftables: elements through the nft CLI", extra={"kv": {"netlink": "no"}})
            return
        LOG.info(
            "nftables: elements over netlink",
            extra={"kv": {"notifications": "watched" if self._watch is not None else "no"}},
        )

    def _no_netlink(self, error: OSError | NetlinkError) -> None:
        """Netlink turned out unusable: keep to nft from now on (said in one line)."""
        if not no_netlink(error):
            raise error
        self._elements = None
        self._path_said = True
        LOG.info(
            "nftables: elements through the nft CLI",
            extra={"kv": {"netlink": "no", "why": str(error)}},
        )

    def _own(self, pid: int | None) -> None:
        """An nft the agent ran committed: its pid (and netlink port) are the agent's."""
        if self._watch is not None:
            self._watch.own(pid=pid, portid=pid)

    def serialised(self) -> AbstractContextManager[None]:
        return nullcontext()  # nft serialises commits itself (generation check and retry)

    def probe(self, config: MasqConfig) -> None:
        """Once per process, before the first write: ``nft -c`` of the whole table; a
        refusal is one line, exit 1 (nft's own error on a real batch names no feature)."""
        if self._probed:
            return
        # The table's shape without its elements: every feature is exercised (fib, nat in
        # this family, masquerade, element counters) at a fraction of 50,000 elements' cost.
        table = self._desired_for(config)
        shape = replace(
            table, sets=pmap({n: replace(s, elements=frozenset()) for n, s in table.sets.items()})
        )
        batch = render_batch((ReplaceTable(shape),))
        try:
            self.nft.run_batch(batch, check=True)
        except TransientError:
            raise
        except AgentError as error:
            raise AgentError(f"nftables dataplane unavailable: {error}") from None
        self._probed = True

    def _desired_for(self, config: MasqConfig) -> NftTable:
        """The desired table, built once per config (the loader keeps the object while
        the files are unchanged): 50,000 CIDRs take 0.2 s to build."""
        if self._desired is None or self._desired[0] is not config:
            self._desired = (config, desired_table(config, self.options, self._desired))
        return self._desired[1]

    def plan(self, config: MasqConfig) -> NftPlan:
        """Observe, or reuse the table known at the current generation, and plan; a plan
        that writes is preceded by the probe (a kernel already holding the whole desired
        table has every feature).

        An idle resync (same generation, same config object) costs one netlink
        question: no listing, no table built, no diff.
        """
        p = self._plan(config)
        if p.ops:
            self.probe(config)
        return p

    def _plan(self, config: MasqConfig) -> NftPlan:
        self._say_path()
        if self._watch is not None:
            return self._plan_watched(config, self._watch)
        generation = self._kernel.generation()
        known = self._known
        if known is not None and generation == known.generation and known.in_sync is config:
            desired = self._desired_for(config)
            return NftPlan(desired, state_of([known.table]), (), False, generation)
        desired = self._desired_for(config)
        if known is not None and generation == known.generation:
            observed = state_of([known.table])
            return NftPlan(desired, observed, plan(desired, observed), False, generation)
        observed = self._observe()
        ops = self._edit_ops(plan(desired, observed), observed)
        current = observed.tables.get(desired.family)
        self._known = None
        if not ops and generation is not None and current is not None:
            self._known = _Known(generation, current, config)
        return NftPlan(desired, observed, ops, True, generation, self._counted(config, current))

    def _plan_watched(self, config: MasqConfig, watch: TableWatch) -> NftPlan:
        """While nobody else touched the table since it was known, nothing is listed: a
        resync with the same config costs one read of an empty socket."""
        watch.poll()
        known = self._known
        if watch.dirty and not watch.lost and known is not None:
            table = followed(known.table, watch.foreign)  # elements only: no listing
            if table is not None:
                LOG.debug("followed", extra={"kv": {"commits": len(watch.foreign)}})
                watch.settle()
                known = self._known = _Known(0, table, None)
        desired = self._desired_for(config)
        if not watch.dirty and known is not None:
            observed = state_of([known.table])
            if known.in_sync is config:
                return NftPlan(desired, observed, (), False)
            return NftPlan(
                desired, observed, self._edit_ops(plan(desired, observed), observed), False
            )
        watch.settle()  # what changes from here on is news to the next sync
        self._known = None
        observed = self._observe()
        ops = self._edit_ops(plan(desired, observed), observed)
        current = observed.tables.get(desired.family)
        if current is not None:
            self._known = _Known(0, current, None if ops else config)
        LOG.debug("listed", extra={"kv": {"table": f"{self.family} {self.options.table}"}})
        return NftPlan(desired, observed, ops, True, None, self._counted(config, current))

    def _observe(self) -> NftState:
        """The table as the kernel holds it: elements over netlink where it can."""
        if self._elements is None:
            return self.nft.observe()
        try:
            return self._observe_netlink(self._elements)
        except NetlinkError as error:
            self._no_netlink(error)
            return self.nft.observe()

    def _observe_netlink(self, elements: Elements) -> NftState:
        tables = []
        for family in self.nft.families_present():
            table = self.nft.structure(family)
            if table is None:
                continue
            sets = dict(table.sets)
            for name, found in table.sets.items():
                if found.opaque:
                    continue  # a set the codec could not read: it differs from any desired
                try:
                    contents = elements.read(family, table.name, name, found.family)
                except NetlinkError as error:
                    if error.errno == errno.ENOENT:  # deleted between the two reads
                        raise TransientError(f"{error} (the table changed while listed)") from None
                    raise
                sets[name] = replace(
                    found,
                    elements=contents.elements,
                    counters=contents.counters,
                    opaque=contents.opaque,
                )
            tables.append(replace(table, sets=pmap(sets)))
        return state_of(tables)

    def _edit_ops(self, ops: tuple[NftOp, ...], observed: NftState) -> tuple[NftOp, ...]:
        """Over netlink a set is edited element by element whatever the count (each edit
        costs the same at any set size, and every other element keeps its counter): a
        set reload becomes the deletes and adds that make it."""
        if self._elements is None or not any(isinstance(op, ReplaceSet) for op in ops):
            return ops
        out: list[NftOp] = []
        for op in ops:
            have = observed.tables.get(op.family) if isinstance(op, ReplaceSet) else None
            if not isinstance(op, ReplaceSet) or have is None or op.set.name not in have.sets:
                out.append(op)
                continue
            old, new = have.sets[op.set.name].elements, op.set.elements
            stale = tuple(sorted(old - new, key=cidr_key))
            missing = tuple(sorted(new - old, key=cidr_key))
            if stale:
                out.append(DeleteElements(op.family, op.table, op.set.name, stale))
            if missing:
                out.append(AddElements(op.family, op.table, op.set.name, missing))
        return tuple(out)

    def cleanup(self) -> NftPlan:
        """Every table of ours, whichever family (none listed when netlink says none)."""
        table = self.nft.table
        present = [f for f in NFT_FAMILIES if self._kernel.table_exists(f, table) is not False]
        if not present:
            return NftPlan(None, NftState(), ())  # netlink says there is none: no process
        if _which("nft") is None:
            if not self._warned_no_nft:
                LOG.warning(
                    "a table of ours is left in nftables but nft is not installed: it stays",
                    extra={"kv": {"table": ",".join(f"{f} {table}" for f in present)}},
                )
                self._warned_no_nft = True
            return NftPlan(None, NftState(), ())
        observed = self.nft.observe()
        return NftPlan(None, observed, cleanup_ops(observed))

    def _counted(
        self, config: MasqConfig, table: NftTable | None
    ) -> Callable[[], dict[Family, tuple[CidrTraffic, ...]]]:
        return lambda: self._traffic_of(config, table)

    def _traffic_of(
        self, config: MasqConfig, table: NftTable | None
    ) -> dict[Family, tuple[CidrTraffic, ...]]:
        """The capped series from a listed table: the same reads as a netlink scrape
        (shown elements, rule totals), so ``other`` means one thing whichever path read
        it; the listing turned into every series only when its chain is not the desired."""
        if table is None:
            return {}
        built = self._desired
        chain = table.chains.get(POSTROUTING_CHAIN)
        if built is not None and built[0] is config and chain is not None:
            rules = [
                RuleCounter(r.daddr_set, r.counters if r.counter else None) for r in chain.rules
            ]

            def listed(
                proto: str, name: str, set_name: str, nets: Sequence[IPNetwork]
            ) -> Mapping[IPNetwork, Counters | None]:
                s = table.sets.get(set_name)
                if s is None:
                    return {}
                return {
                    n: s.counters.get(n, Counters(0, 0)) if n in s.elements else None for n in nets
                }

            found = self._capped(config, built[1], rules, listed)
            if found is not None:
                return found
        return traffic_of(table, [decide(config, f) for f in self.options.families])

    def apply(self, plan: NftPlan) -> Writes:
        """Write the plan (a cleanup: remove the tables)."""
        if plan.desired is None:
            if not plan.ops:
                return Writes()
            self._known = None
            self._own(self.nft.run_batch(render_batch(plan.ops)))
            LOG.info("nftables table removed", extra={"kv": {"ops": len(plan.ops)}})
            return Writes(len(plan.ops), write_labels(plan.ops))
        if not plan.ops:
            LOG.log(logging.INFO - 5, "in sync", extra={"kv": {"table": plan.desired.name}})
            return Writes()
        applied = self._apply(plan, plan.desired)
        return Writes(len(applied), write_labels(applied))

    def _apply(self, p: NftPlan, desired: NftTable) -> tuple[NftOp, ...]:
        """Write the plan; if nft refuses it (the table moved), re-observe and replace whole.

        When the generation after the batch is the planned one plus one, the batch was
        the only commit in between, so the modelled result is what the kernel holds:
        the next sync need not list 50,000 elements to know it.
        """
        self._known = None
        try:
            commits = self._write(p.ops, p.observed)
            LOG.info("table updated", extra={"kv": {"ops": len(p.ops)}})
            self._remember(p, desired, commits)
            return p.ops
        except TransientError:
            raise
        except AgentError as first:
            LOG.warning(
                "incremental update refused, replacing the table",
                extra={"kv": {"error": str(first)}},
            )
        ops = replace_ops(desired, self._observe())
        self._own(self.nft.run_batch(render_batch(ops)))
        LOG.info("table replaced", extra={"kv": {"ops": len(ops)}})
        return p.ops + ops

    def _write(self, ops: tuple[NftOp, ...], observed: NftState | None = None) -> int:
        """Element edits as one netlink batch where the channel is open, else (and for
        anything structural) one nft batch; either is all or nothing.  A whole table on
        a node that holds none of ours (``observed``) goes in stages (``_load``).  How
        many commits it took."""
        edits = _set_edits(ops)
        if self._elements is not None and edits is not None:
            try:
                self._own_written(self._elements.write(edits))
                return 1
            except NetlinkError as error:
                self._no_netlink(error)  # re-raised unless netlink is unusable here
        table = _first_load(ops, observed)
        if self._elements is not None and table is not None:
            try:
                return self._load(table, self._elements)
            except NetlinkError as error:
                self._no_netlink(error)  # re-raised unless netlink is unusable here
        self._own(self.nft.run_batch(render_batch(ops)))
        return 1

    def _own_written(self, written: Written | None) -> None:
        if written is not None and self._watch is not None:
            self._watch.own(portid=written.portid)

    def _load(self, table: NftTable, elements: Elements) -> int:
        """The whole table on a node that holds none of ours, its elements over netlink.

        Measured (the write alone, median of 6, no listener): at 100,000 elements the
        table in one ``nft -f`` batch takes 1.36 s (0.18 s rendering its text, 1.18 s of
        nft parsing and encoding every element before the kernel inserts them), the
        stages below 0.90 s (the element batch: ~0.2 s encoding, the rest the kernel
        inserting; the two small ``nft -f`` batches ~20 ms each); at 50,000, 0.81 s
        against 0.48 s.  So the table comes in the three commits of ``load_stages``: the
        structure with empty sets and a base chain without rules, the elements, the
        base chain's rules.  Only here, where no table of ours exists: until the rules
        come, the table decides nothing, so no destination is masqueraded that must not
        be (and none was before).  A failure in between removes the table again, so
        nothing is left half made; an agent killed in between leaves a table that
        decides nothing, with all its elements or none, which the next sync completes
        as any observed table.  A table of ours already present is replaced in one
        ``nft -f`` batch, as before (all or nothing: it decides at every instant).
        """
        structure, adds, rules = load_stages(table)
        self._own(self.nft.run_batch(render_batch(structure)))
        try:
            edits = _set_edits(adds) or []
            with collector.paused():
                self._own_written(elements.write(edits) if edits else None)
            self._own(self.nft.run_batch(render_batch(rules)))
        except BaseException:
            self._drop(table)
            raise
        return 3 if edits else 2

    def _drop(self, table: NftTable) -> None:
        """Remove a table this process made and could not finish (best effort: the error
        that stopped it is the one reported)."""
        try:
            self._own(self.nft.run_batch(render_batch((DeleteTable(table.family, table.name),))))
        except Exception as error:  # the original failure is re-raised by the caller
            LOG.debug("could not remove the unfinished table", extra={"kv": {"error": str(error)}})

    def _remember(self, p: NftPlan, desired: NftTable, commits: int = 1) -> None:
        if self._watch is not None:  # anyone else's change to the table will be told
            self._model(desired, 0)
            return
        after = self._kernel.generation()
        if p.generation is None or after is None:
            return
        expected = p.generation
        for _ in range(commits):
            expected = next_generation(expected)
        if after != expected:
            return
        self._model(desired, after)

    def _model(self, desired: NftTable, generation: int) -> None:
        """Know the table as our commit left it: ``desired`` itself.  The ops are
        ``plan(desired, observed)`` (element edits over netlink make the same sets), and
        the plan's property is ``apply_ops(observed, plan(d, observed)) == d``; keeping that
        very object lets the next plan diff only what changes next (its sets' recorded
        delta), without modelling (sorting) 100,000 elements."""
        in_sync = self._desired[0] if self._desired and self._desired[1] is desired else None
        self._known = _Known(generation, desired, in_sync)

    def describe(self, plan: NftPlan, out: TextIO) -> None:
        if plan.desired is None:
            if plan.ops:
                out.write("# nftables: cleanup\n")
                out.write(render_ops_readable(plan.ops))
            return
        where = f"nft table {plan.desired.family} {plan.desired.name}"
        if not plan.ops:
            out.write(f"# {where}: in sync, nothing to do\n")
            return
        out.write(f"# {where}: {len(plan.ops)} change(s)\n")
        out.write(render_ops_readable(plan.ops))

    def traffic(self, config: MasqConfig) -> dict[Family, tuple[CidrTraffic, ...]]:
        """Per-CIDR counters for a scrape (read-only, any thread): over netlink, the
        counters of the series the scrape shows and the base chain's rule counters (the
        rest is ``other``); else, or when the kernel's chain is not the desired one, one
        listing of the whole table."""
        built = self._desired  # the sync thread's last desired table, read once
        if self._counters is not None and built is not None and built[0] is config:
            try:
                found = self._scraped(config, built[1], self._counters)
            except (AgentError, OSError) as error:
                LOG.debug("netlink counters unreadable", extra={"kv": {"error": str(error)}})
            else:
                if found is not None:
                    return found
        return self._traffic_of(config, self.nft.list(self.family))

    def _scraped(
        self, config: MasqConfig, desired: NftTable, counters: CounterReader
    ) -> dict[Family, tuple[CidrTraffic, ...]] | None:
        """What a scrape shows, reading only that (None: the chain is not ours as desired)."""
        rules = counters.rules(self.family, desired.name, POSTROUTING_CHAIN)
        return self._capped(config, desired, rules, counters.elements)

    def _capped(
        self,
        config: MasqConfig,
        desired: NftTable,
        rules: Sequence[RuleCounter],
        elements: ElementReader,
    ) -> dict[Family, tuple[CidrTraffic, ...]] | None:
        """The capped series from the base chain's rules (None: not the desired chain) and
        the shown elements' counters, read through ``elements``."""
        chain = desired.chains[POSTROUTING_CHAIN]
        if len(rules) != len(chain.rules) or any(
            (r.lookup, r.counters is not None) != (want.daddr_set, want.counter)
            for r, want in zip(rules, chain.rules, strict=True)
        ):
            return None
        plan = self._scrape_plan(config, desired)
        read = {
            name: elements(self.family, desired.name, name, nets)
            for name, nets in plan.reads.items()
            if nets
        }
        return scraped(plan, desired, read, [r.counters for r in rules])

    def _scrape_plan(self, config: MasqConfig, desired: NftTable) -> ScrapePlan:
        """The scrape plan of this config's desired table, made once per config (it merges
        the config's lists up to the cap: ~2 ms a scrape at 300 series per family)."""
        known = self._scrape_plans
        if known is None or known[0] is not config or known[1] is not desired:
            plan = scrape_plan(desired, config, self.options.families, self.max_series)
            known = self._scrape_plans = (config, desired, plan)
        return known[2]

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
        """From the live table (else the desired one): the base chain's deciding rule."""
        from masq.core.nftables.explain import explain  # --explain only

        table, label = self._table_to_explain(merged, read_live)
        if table is None and merged is None:
            return Failure(ConfigError("", label))
        enabled = family_of(ip) in self.options.families
        explanation = explain(
            ip,
            table=table if enabled else None,
            fragments=fragments,
            merged=merged,
            local=local,
            packet=packet,
        )
        return Success(Explained(explanation, label))

    def _table_to_explain(
        self, merged: Merged | None, read_live: bool
    ) -> tuple[NftTable | None, str]:
        """The agent's table as the kernel holds it, else the desired one, and its label."""
        where = f"{self.family} {self.nft.table}"
        why = "live rules not read"
        if read_live:
            try:
                live = self.nft.list(self.family)
            except Exception as e:  # any failure to read is reported, never fatal here
                live, why = None, f"live table unreadable ({e})"
            else:
                why = f"table {where} is absent (not synced here)"
            if live is not None:
                return live, f"live, read from nft table {where}"
        if merged is None:
            return None, why
        return desired_table(merged.config, self.options), f"desired, from the config ({why})"


def _first_load(ops: Sequence[NftOp], observed: NftState | None) -> NftTable | None:
    """The table ``ops`` make whole on a node observed to hold no table of ours (None:
    not such a plan)."""
    if observed is None or observed.tables or len(ops) != 1:
        return None
    op = ops[0]
    return op.table if isinstance(op, ReplaceTable) else None


def _set_edits(ops: Sequence[NftOp]) -> list[SetEdit] | None:
    """The element ops as one edit per set (None: some op is structural)."""
    edits: dict[tuple[str, str, str], SetEdit] = {}
    for op in ops:
        if not isinstance(op, AddElements | DeleteElements):
            return None
        key = (op.family, op.table, op.set)
        edit = edits.get(key, SetEdit(op.family, op.table, op.set))
        if isinstance(op, AddElements):
            edits[key] = replace(edit, add=edit.add + op.elements)
        else:
            edits[key] = replace(edit, delete=edit.delete + op.elements)
    return list(edits.values())


def write_labels(ops: Sequence[NftOp]) -> dict[Family, tuple[str, ...]]:
    """``rule_writes_total`` labels per family for ops that were written."""
    out: dict[Family, tuple[str, ...]] = {}
    for op in ops:
        for family in op_families(op):
            out[family] = out.get(family, ()) + op_labels(op)
    return out
