"""One sync: read the config, make the chosen dataplane right, then clear the other one.

Everything that can fail on input (config, parsing the kernel's listing, planning)
runs before the first write, so an error never leaves a half-applied change behind.
The order is make-before-break: the chosen dataplane is made right first, and only
then are the other dataplane's objects (left by an earlier mode, an old pod, or v1/v2)
removed, so at no instant does a destination that must be masqueraded go without.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

from returns.result import Failure

from masq.core.addresses import FAMILIES, Family
from masq.core.config import MIN_RESYNC_SECONDS, MasqConfig
from masq.core.iptables.codec import render_ops_readable, render_restore
from masq.core.iptables.traffic import traffic_of as iptables_traffic
from masq.core.merge import Merged
from masq.core.traffic import CidrTraffic
from masq.shell import iptables_runner, netlink
from masq.shell.configdir import LoadedConfig, config_dir_exists, load, read_files
from masq.shell.errors import AgentError, ConfigInvalid, TransientError
from masq.shell.iptables_backend import resolve_backend
from masq.shell.netlink import Kernel
from masq.shell.options import Options
from masq.shell.process import Runner, run_command, which

if TYPE_CHECKING:
    from masq.core.nftables.model import NftOp
    from masq.shell.nftables_runner import NftablesDataplane

LOG = logging.getLogger("masq.agent")
KUBE_PROXY_TABLE = "kube-proxy"  # kube-proxy's nftables mode owns ip/ip6 tables of this name
MAX_ATTEMPTS = 10
FIRST_BACKOFF_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class SyncReport:
    loaded: LoadedConfig
    wrote: bool

    @property
    def resync_interval(self) -> float:
        return self.loaded.merged.config.resync_interval


class SyncHooks(Protocol):
    """What a sync reports as it goes: ``Metrics`` in the daemon."""

    def config_loaded(self, fragments: int, merged: Merged) -> None: ...
    def traffic(self, family: Family, traffic: tuple[CidrTraffic, ...]) -> None: ...
    def rule_writes(self, family: Family, ops: Sequence[str]) -> None: ...
    def counters_stale(self) -> None: ...


class NoMetrics:
    """A one-shot run serves no /metrics, so it need not import prometheus_client (~20 ms)."""

    def config_loaded(self, fragments: int, merged: Merged) -> None:
        pass

    def traffic(self, family: Family, traffic: tuple[CidrTraffic, ...]) -> None:
        pass

    def rule_writes(self, family: Family, ops: Sequence[str]) -> None:
        pass

    def counters_stale(self) -> None:
        pass


class Dataplane(Protocol):
    """One way of carrying out the decision in the kernel."""

    def sync(self, config: MasqConfig, dry_run: bool) -> bool:
        """Make the kernel right (or print what would change); whether anything was written."""
        ...

    def leftovers(self, dry_run: bool) -> int:
        """Remove this dataplane's objects while the other one is in charge; ops written."""
        ...

    def traffic_now(self, config: MasqConfig) -> dict[Family, tuple[CidrTraffic, ...]]:
        """Per-CIDR counters from one read-only listing (for a scrape)."""
        ...


class _Iptables:
    """The iptables dataplane, reporting to the sync's hooks."""

    def __init__(
        self, opts: Options, hooks: SyncHooks, runner: Runner, kernel: Kernel, out: TextIO
    ) -> None:
        families = FAMILIES if opts.enable_ipv6 else ("ipv4",)
        self.plane = iptables_runner.IptablesDataplane(
            opts.masq_chain,
            backend=lambda: resolve_backend(opts.iptables_backend),
            families=families,
            options=opts.ruleset_options,
            random_fully=opts.random_fully,
            runner=runner,
            kernel=kernel,
        )
        self.chain = opts.masq_chain
        self.hooks = hooks
        self.runner = runner
        self.kernel = kernel
        self.out = out

    def sync(self, config: MasqConfig, dry_run: bool) -> bool:
        if dry_run:
            self.plane.describe(self.plane.plan(config, self.hooks.traffic), self.out)
            return False
        with iptables_runner.writers_lock():
            return self._write(config)

    def _write(self, config: MasqConfig) -> bool:
        plans = self.plane.plan(config, self.hooks.traffic)
        wrote = False
        for p in plans:
            if not p.ops:
                LOG.log(logging.INFO - 5, "in sync", extra={"kv": {"family": p.family}})
                continue
            applied = self.plane.apply(p)
            self.hooks.rule_writes(p.family, iptables_runner.write_labels(applied))
            wrote = True
        return wrote

    def traffic_now(self, config: MasqConfig) -> dict[Family, tuple[CidrTraffic, ...]]:
        return {
            t.family: iptables_traffic(t.observe(self.chain, jumps=False))
            for t in self.plane.tables()
        }

    def leftovers(self, dry_run: bool) -> int:
        """Our chain and jumps in every backend and family whose binaries exist."""
        tables = iptables_runner.leftover_tables(self.chain, self.runner, self.kernel)
        total = 0
        for table, ops in iptables_runner.cleanup_plans(tables, self.chain):
            if dry_run:
                self.out.write(f"# {table.family} ({table.binary}): cleanup\n")
                self.out.write(render_ops_readable(ops))
                continue
            if ops:
                table.restore(render_restore(ops))
                self.hooks.rule_writes(table.family, iptables_runner.write_labels(ops))
                total += len(ops)
                LOG.info(
                    "iptables chain removed",
                    extra={"kv": {"family": table.family, "binary": table.binary, "ops": len(ops)}},
                )
        return total


class _Nftables:
    """The nftables dataplane, reporting to the sync's hooks.

    Its modules are imported on first use: in iptables mode a leftover table is looked
    for over netlink, and nft's code loads only if one (may) exist.
    """

    def __init__(
        self, opts: Options, hooks: SyncHooks, runner: Runner, kernel: Kernel, out: TextIO
    ) -> None:
        self.opts = opts
        self.hooks = hooks
        self.runner = runner
        self.kernel = kernel
        self.out = out
        self._plane: NftablesDataplane | None = None
        self._warned_no_nft = False

    @property
    def plane(self) -> NftablesDataplane:
        if self._plane is None:
            from masq.shell import nftables_runner  # imported on first use (see above)

            options = self.opts.table_options()
            self._plane = nftables_runner.NftablesDataplane(options, self.runner, self.kernel)
        return self._plane

    def sync(self, config: MasqConfig, dry_run: bool) -> bool:
        p = self.plane.plan(config)
        if p.listed:
            for family, rows in self.plane.traffic(config, p.observed).items():
                self.hooks.traffic(family, rows)
        if p.ops:  # a kernel already holding the whole desired table has every feature
            self.plane.probe(config)
        if dry_run:
            self.plane.describe(p, self.out)
            return False
        if not p.ops:
            LOG.log(logging.INFO - 5, "in sync", extra={"kv": {"table": p.desired.name}})
            return False
        self._report(self.plane.apply(p))
        return True

    def traffic_now(self, config: MasqConfig) -> dict[Family, tuple[CidrTraffic, ...]]:
        return self.plane.traffic_now(config)

    def leftovers(self, dry_run: bool) -> int:
        table = self.opts.nft_table
        present = [f for f in ("ip", "inet") if self.kernel.table_exists(f, table) is not False]
        if not present:
            return 0  # netlink says there is none: nothing to load, no process
        if which("nft") is None:
            if not self._warned_no_nft:
                LOG.warning(
                    "a table of ours is left in nftables but nft is not installed: it stays",
                    extra={"kv": {"table": ",".join(f"{f} {table}" for f in present)}},
                )
                self._warned_no_nft = True
            return 0
        ops = self.plane.cleanup_ops()
        if dry_run:
            self.plane.describe_cleanup(ops, self.out)
            return 0
        if ops:
            self.plane.remove(ops)
            self._report(list(ops))
            LOG.info("nftables table removed", extra={"kv": {"ops": len(ops)}})
        return len(ops)

    def _report(self, ops: Sequence[NftOp]) -> None:
        for family, labels in self.plane.write_labels(ops).items():
            self.hooks.rule_writes(family, labels)


class Agent:
    """Holds what one process learns once: the dataplanes, the last config read."""

    def __init__(
        self,
        opts: Options,
        metrics: SyncHooks,
        runner: Runner = run_command,
        out: TextIO | None = None,
        kernel: Kernel = netlink.SYSTEM,
    ) -> None:
        self.opts = opts
        self.metrics = metrics
        self._out = out if out is not None else sys.stdout
        iptables = _Iptables(opts, metrics, runner, kernel, self._out)
        nftables = _Nftables(opts, metrics, runner, kernel, self._out)
        chosen: tuple[Dataplane, Dataplane] = (
            (nftables, iptables) if opts.dataplane == "nftables" else (iptables, nftables)
        )
        self.dataplane, self.other = chosen
        if opts.dataplane == "iptables" and kernel.table_exists("ip", KUBE_PROXY_TABLE):
            LOG.info(
                "kube-proxy runs in nftables mode here: consider --dataplane=nftables",
                extra={"kv": {"why": "one table lookup per new connection at any CIDR count"}},
            )
        self._last: LoadedConfig | None = None
        self._warned_missing = False

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
        if self._last is not None and self._last.sources == files:
            return self._last
        parsed = load(files, opts, self._last)
        if isinstance(parsed, Failure):
            raise ConfigInvalid(parsed.failure()[0])
        loaded = parsed.unwrap()
        self._report_config(loaded)
        self._last = loaded
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
        # What the files ask for: a --resync-interval below the floor (which a config without
        # resyncInterval inherits) is warned about once, at start.
        asked = [f.resync_interval for f in loaded.fragments if f.resync_interval is not None]
        if asked and min(asked) < MIN_RESYNC_SECONDS:
            LOG.warning(
                "resyncInterval is below the floor, using the floor",
                extra={"kv": {"resyncInterval": min(asked), "floor": MIN_RESYNC_SECONDS}},
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

    def traffic_now(self) -> dict[Family, tuple[CidrTraffic, ...]]:
        """The per-CIDR counters as the kernel holds them now (read-only; any thread).

        Empty before a config was read: the series are the config's CIDRs (a covered one
        reads 0), so a scrape that beats the first sync must not show the kernel's alone.
        """
        last = self._last
        if last is None:
            return {}
        return self.dataplane.traffic_now(last.merged.config)

    def sync(self) -> SyncReport:
        """One reconcile: the chosen dataplane, then the other's leftovers (make-before-break)."""
        loaded = self.load()
        self.metrics.config_loaded(len(loaded.files), loaded.merged)
        dry_run = self.opts.dry_run
        wrote = self.dataplane.sync(loaded.merged.config, dry_run)
        wrote = self.other.leftovers(dry_run) > 0 or wrote
        if wrote:  # the counters the sync listed predate its write: the next scrape reads
            self.metrics.counters_stale()
        if dry_run:
            self._out.flush()
        return SyncReport(loaded, wrote)

    def cleanup(self) -> int:
        """Remove what the agent owns in both dataplanes (nothing else); count of ops written."""
        total = self.dataplane.leftovers(self.opts.dry_run) + self.other.leftovers(
            self.opts.dry_run
        )
        self._out.flush()
        LOG.info("cleaned up", extra={"kv": {"ops": total}})
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
    """``--cleanup``: what the agent owns in both dataplanes, every family, nothing else."""
    agent = Agent(opts, NoMetrics())
    with_retries(agent.cleanup, cap=min(opts.resync_interval, 5.0))
    return 0
