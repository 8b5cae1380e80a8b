"""One sync: config -> desired rules, observe what we own, plan, write only a non-empty plan.

Everything that can fail on input (config, parsing the kernel's listing,
planning) runs for every family before the first write, so an error never
leaves a half-applied change behind.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from returns.result import Failure

from masq.core.addresses import FAMILIES, Family
from masq.core.iptables.codec import render_ops_readable, render_restore
from masq.core.iptables.model import Op, Ruleset, op_label
from masq.core.iptables.plan import cleanup_ops, plan, replace_ops
from masq.core.iptables.rules import desired_ruleset
from masq.core.iptables.traffic import traffic_of
from masq.core.merge import Merged
from masq.core.traffic import CidrTraffic
from masq.shell.configdir import ConfigFiles, LoadedConfig, config_dir_exists, load, read_files
from masq.shell.errors import AgentError, ConfigInvalid, TransientError
from masq.shell.iptables_backend import resolve_backend
from masq.shell.iptables_runner import Iptables, ResolvedBackend
from masq.shell.options import Options
from masq.shell.process import Runner, run_command

LOG = logging.getLogger("masq.agent")
MAX_ATTEMPTS = 10
FIRST_BACKOFF_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    family: Family
    table: Iptables
    desired: Ruleset
    ops: tuple[Op, ...]


@dataclass(frozen=True, slots=True)
class SyncReport:
    loaded: LoadedConfig
    plans: tuple[FamilyPlan, ...]
    wrote: bool

    @property
    def resync_interval(self) -> float:
        return self.loaded.merged.config.resync_interval


class SyncHooks(Protocol):
    """What a sync reports as it goes: ``Metrics`` in the daemon."""

    def config_loaded(self, fragments: int, merged: Merged) -> None: ...
    def traffic(self, family: Family, traffic: tuple[CidrTraffic, ...]) -> None: ...
    def rule_writes(self, family: Family, ops: Sequence[str]) -> None: ...


class NoMetrics:
    """A one-shot run serves no /metrics, so it need not import prometheus_client (~20 ms)."""

    def config_loaded(self, fragments: int, merged: Merged) -> None:
        pass

    def traffic(self, family: Family, traffic: tuple[CidrTraffic, ...]) -> None:
        pass

    def rule_writes(self, family: Family, ops: Sequence[str]) -> None:
        pass


def final_random_fully(observed: Ruleset, chain: str) -> bool:
    own = observed.chain(chain)
    if own is None or not own.rules:
        return False
    last = own.rules[-1]
    return last.action == "MASQUERADE" and last.random_fully


class Agent:
    """Holds what one process learns once: the backend, the last config read."""

    def __init__(
        self,
        opts: Options,
        metrics: SyncHooks,
        runner: Runner = run_command,
        out: TextIO | None = None,
    ) -> None:
        self.opts = opts
        self.metrics = metrics
        self._run = runner
        self._out = out
        self._backend: ResolvedBackend | None = None
        self._last: tuple[ConfigFiles, LoadedConfig] | None = None
        self._warned_missing = False

    @property
    def families(self) -> tuple[Family, ...]:
        return FAMILIES if self.opts.enable_ipv6 else ("ipv4",)

    def tables(self) -> tuple[Iptables, ...]:
        if self._backend is None:
            self._backend = resolve_backend(self.opts.iptables_backend)
        return tuple(Iptables(self._backend, f, self._run) for f in self.families)

    def load(self) -> LoadedConfig:
        """Read the config dir; parse and merge only when the bytes changed."""
        opts = self.opts
        read = read_files(opts.config_dir, opts.config_prefix)
        if isinstance(read, Failure):
            raise ConfigInvalid(read.failure())
        files = read.unwrap()
        if not files and not config_dir_exists(opts.config_dir):
            if not self._warned_missing:
                LOG.warning(
                    "config dir missing, using defaults", extra={"kv": {"dir": opts.config_dir}}
                )
                self._warned_missing = True
        else:
            self._warned_missing = False
        if self._last is not None and self._last[0] == files:
            return self._last[1]
        parsed = load(files, opts)
        if isinstance(parsed, Failure):
            raise ConfigInvalid(parsed.failure()[0])
        loaded = parsed.unwrap()
        self._report_config(loaded)
        self._last = (files, loaded)
        return loaded

    def _report_config(self, loaded: LoadedConfig) -> None:
        config = loaded.merged.config
        LOG.info(
            "config loaded",
            extra={
                "kv": {
                    "files": ",".join(loaded.files) or "-",
                    "nonMasqueradeCIDRs": len(config.non_masquerade_cidrs),
                    "masqueradeCIDRs": len(config.masquerade_cidrs),
                    "masqLinkLocal": config.masq_link_local,
                    "masqLinkLocalIPv6": config.masq_link_local_ipv6,
                    "resyncInterval": config.resync_interval,
                }
            },
        )
        conflicts = loaded.merged.conflicts
        for c in conflicts:
            LOG.warning(
                str(c),
                extra={
                    "kv": {
                        "key": c.key,
                        "sources": ",".join(f"{s}={v}" for s, v in c.values),
                        "resolution": c.resolution,
                    }
                },
            )
        if conflicts and self.opts.fail_on_conflict:
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise AgentError(f"{conflicts[0]}{more} (--fail-on-conflict)")

    def plan_all(self, loaded: LoadedConfig) -> tuple[FamilyPlan, ...]:
        chain = self.opts.masq_chain
        plans = []
        for table in self.tables():
            observed = table.observe(chain)
            self.metrics.traffic(table.family, traffic_of(observed))
            rf = self.opts.random_fully and table.supports_random_fully(
                final_random_fully(observed, chain)
            )
            desired = desired_ruleset(
                loaded.merged.config, table.family, self.opts.ruleset_options(rf)
            )
            plans.append(FamilyPlan(table.family, table, desired, plan(desired, observed)))
        return tuple(plans)

    def sync(self) -> SyncReport:
        """One reconcile of every enabled family (raises AgentError / TransientError)."""
        loaded = self.load()
        self.metrics.config_loaded(len(loaded.files), loaded.merged)
        plans = self.plan_all(loaded)
        if self.opts.dry_run:
            self._print_plans(plans)
            return SyncReport(loaded, plans, wrote=False)
        wrote = False
        for p in plans:
            if not p.ops:
                LOG.log(logging.INFO - 5, "in sync", extra={"kv": {"family": p.family}})
                continue
            applied = self._apply(p)
            self.metrics.rule_writes(p.family, [op_label(op) for op in applied])
            wrote = True
        return SyncReport(loaded, plans, wrote)

    def _apply(self, p: FamilyPlan) -> tuple[Op, ...]:
        """Apply the plan; if the kernel refuses it, re-observe and replace our chain whole."""
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
            observed = p.table.observe(self.opts.masq_chain)
            if not plan(p.desired, observed):
                LOG.info("rules updated", extra={"kv": {"family": p.family, "ops": len(p.ops)}})
                return p.ops
            LOG.warning(
                "chain changed during the update, replacing it",
                extra={"kv": {"family": p.family}},
            )
            return p.ops + self._replace(p, observed)
        return self._replace(p, p.table.observe(self.opts.masq_chain))

    def _replace(self, p: FamilyPlan, observed: Ruleset) -> tuple[Op, ...]:
        """Full-sync fallback: one transaction that rebuilds our chain and its jump."""
        ops = replace_ops(p.desired, observed)
        p.table.restore(render_restore(ops))
        LOG.info("chain replaced", extra={"kv": {"family": p.family, "ops": len(ops)}})
        return ops

    def _print_plans(self, plans: tuple[FamilyPlan, ...]) -> None:
        out = self._out if self._out is not None else sys.stdout
        for p in plans:
            binary = p.table.binary
            if not p.ops:
                out.write(f"# {p.family} ({binary}): in sync, nothing to do\n")
                continue
            out.write(f"# {p.family} ({binary}): {len(p.ops)} change(s)\n")
            out.write(render_ops_readable(p.ops))
        out.flush()

    def cleanup(self) -> int:
        """Remove our jumps and chain in every enabled family; count of ops written."""
        chain = self.opts.masq_chain
        planned = []
        for table in self.tables():
            ops = cleanup_ops(table.observe(chain), chain)
            planned.append((table, ops))
        total = 0
        for table, ops in planned:
            if self.opts.dry_run:
                out = self._out if self._out is not None else sys.stdout
                out.write(f"# {table.family} ({table.binary}): cleanup\n")
                out.write(render_ops_readable(ops))
                continue
            if ops:
                table.restore(render_restore(ops))
                self.metrics.rule_writes(table.family, [op_label(op) for op in ops])
                total += len(ops)
            LOG.info("cleaned up", extra={"kv": {"family": table.family, "ops": len(ops)}})
        return total


def backoff_seconds(failures: int, cap: float) -> float:
    """0.5 s, doubling per consecutive failure, capped (at the resync interval)."""
    return float(min(FIRST_BACKOFF_SECONDS * 2 ** max(failures - 1, 0), cap))


class Backoff:
    """Consecutive transient failures: how long to wait before the next try, and when to stop.

    Shared by the one-shot modes and the daemon so both give up by the same rule.
    """

    def __init__(self, cap: float) -> None:
        self.cap = cap  # the daemon lowers it to the config's resync interval
        self.failures = 0

    def failed(self, error: TransientError) -> float:
        """Seconds to wait before retrying; AgentError after MAX_ATTEMPTS in a row."""
        self.failures += 1
        if self.failures >= MAX_ATTEMPTS:
            raise AgentError(f"{error} ({self.failures} attempts)") from None
        LOG.warning(
            "failed, will retry", extra={"kv": {"error": str(error), "attempt": self.failures}}
        )
        return backoff_seconds(self.failures, self.cap)

    def succeeded(self) -> None:
        self.failures = 0


def with_retries(
    step: Callable[[], object],
    cap: float,
    sleep: Callable[[float], object] = time.sleep,
) -> None:
    """Run ``step``; transient failures retry with backoff, up to MAX_ATTEMPTS in a row."""
    backoff = Backoff(cap)
    while True:
        try:
            step()
            return
        except TransientError as e:
            sleep(backoff.failed(e))


def run_once(opts: Options) -> int:
    """``--once`` / ``--dry-run``: one sync (transient errors retried), then exit."""
    agent = Agent(opts, NoMetrics())
    with_retries(agent.sync, cap=min(opts.resync_interval, 5.0))
    return 0


def cleanup(opts: Options) -> int:
    """``--cleanup``: our chain and POSTROUTING jumps only, every enabled family."""
    agent = Agent(opts, NoMetrics())
    with_retries(agent.cleanup, cap=min(opts.resync_interval, 5.0))
    return 0
