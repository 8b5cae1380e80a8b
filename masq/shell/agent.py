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
from typing import Protocol, TextIO

from masq.core.addresses import Family, IPAddress
from masq.core.config import MIN_RESYNC_SECONDS, MasqConfig
from masq.core.duration import format_duration
from masq.core.fragment import (
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    MASQUERADE_CIDRS,
    NON_MASQUERADE_CIDRS,
    OUTPUT_ADDRESS,
    OUTPUT_ADDRESS_IPV6,
    OUTPUT_INTERFACES,
    RESYNC_INTERVAL,
    SOURCE_CIDRS,
)
from masq.core.merge import Merged
from masq.core.traffic import Traffic
from masq.shell import collector, netlink
from masq.shell.configdir import FileCache, LoadedConfig, config_dir_exists, load, read_files
from masq.shell.dataplane import Dataplane, Dataplanes, P, Watching, Writes
from masq.shell.errors import AgentError, ConfigInvalid, TransientError, value_or_raise
from masq.shell.local import local_address
from masq.shell.netlink import Kernel
from masq.shell.options import Options
from masq.shell.process import Runner, run_command

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
    def stamp(self) -> float: ...
    def traffic(self, traffic: Traffic, read_at: float) -> None: ...
    def rule_writes(self, family: Family, ops: Sequence[str]) -> None: ...
    def counters_stale(self) -> None: ...


class NoMetrics:
    """A one-shot run serves no /metrics, so it need not import prometheus_client (~20 ms)."""

    def config_loaded(self, fragments: int, merged: Merged) -> None:
        pass

    def stamp(self) -> float:
        return 0.0

    def traffic(self, traffic: Traffic, read_at: float) -> None:
        pass

    def rule_writes(self, family: Family, ops: Sequence[str]) -> None:
        pass

    def counters_stale(self) -> None:
        pass


def egress_fields(config: MasqConfig) -> dict[str, object]:
    """Egress selection in the "config loaded" line: only the keys the config sets, so the
    line of a config without them stays as it was."""
    fields: dict[str, object] = {
        OUTPUT_INTERFACES: ",".join(config.output_interfaces),
        SOURCE_CIDRS: len(config.source_cidrs),
        OUTPUT_ADDRESS: str(config.output_address or ""),
        OUTPUT_ADDRESS_IPV6: str(config.output_address_ipv6 or ""),
    }
    return {key: value for key, value in fields.items() if value}


class Agent:
    """Holds what one process learns once: the dataplanes, the last config read."""

    def __init__(
        self,
        opts: Options,
        metrics: SyncHooks,
        runner: Runner = run_command,
        out: TextIO | None = None,
        kernel: Kernel = netlink.SYSTEM,
        *,
        files: FileCache | None = None,
    ) -> None:
        self.opts = opts
        self.metrics = metrics
        self._out = out if out is not None else sys.stdout
        self.dataplanes = Dataplanes(opts, runner, kernel)
        self.dataplane = self.dataplanes.chosen
        if opts.dataplane == "iptables" and kernel.table_exists("ip", KUBE_PROXY_TABLE):
            LOG.info(
                "kube-proxy runs in nftables mode here: consider --dataplane=nftables",
                extra={"kv": {"why": "one table lookup per new connection at any CIDR count"}},
            )
        self._last: LoadedConfig | None = None
        # a resync reads only the config files that changed
        self._files = files if files is not None else FileCache()
        self._warned_missing = False
        self._checked_addresses: tuple[IPAddress, ...] = ()

    def load(self) -> LoadedConfig:
        """Read the config dir (the files that changed); parse and merge only when the
        bytes changed."""
        opts = self.opts
        files = value_or_raise(
            read_files(opts.config_dir, opts.config_prefix, self._files), ConfigInvalid
        )
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
        with collector.paused():  # 100,000 CIDRs: ~0.24 s of collections that free nothing
            loaded = value_or_raise(load(files, opts, self._last), lambda es: ConfigInvalid(es[0]))
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
                    NON_MASQUERADE_CIDRS: len(config.non_masquerade_cidrs),
                    MASQUERADE_CIDRS: len(config.masquerade_cidrs),
                    MASQ_LINK_LOCAL: config.masq_link_local,
                    MASQ_LINK_LOCAL_IPV6: config.masq_link_local_ipv6,
                    RESYNC_INTERVAL: format_duration(config.resync_interval),
                }
                | egress_fields(config)
            },
        )
        # What the files ask for: a --resync-interval below the floor (which a config without
        # resyncInterval inherits) is warned about once, at start.
        asked = [f.resync_interval for f in loaded.fragments if f.resync_interval is not None]
        if asked and min(asked) < MIN_RESYNC_SECONDS:
            LOG.warning(
                f"{RESYNC_INTERVAL} is below the floor, using the floor",
                extra={"kv": {RESYNC_INTERVAL: min(asked), "floor": MIN_RESYNC_SECONDS}},
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
        self._check_output_addresses(config)

    def _check_output_addresses(self, config: MasqConfig) -> None:
        """Warn once per change of ``outputAddress*`` when the node does not hold the address:
        the kernel would SNAT to it and send packets whose replies never come back here."""
        keyed = (
            (OUTPUT_ADDRESS, config.output_address),
            (OUTPUT_ADDRESS_IPV6, config.output_address_ipv6),
        )
        addresses = tuple(a for _, a in keyed if a is not None)
        if addresses == self._checked_addresses:
            return
        self._checked_addresses = addresses
        for key, address in keyed:
            if address is not None and local_address(address) is False:
                LOG.warning(
                    f"{key} is not an address of this node: replies to SNATed packets will not"
                    " come back here",
                    extra={"kv": {"key": key, "address": str(address)}},
                )

    def watch(self) -> Watching | None:
        """Subscribe to the chosen dataplane's change notifications (before the first sync)."""
        return self.dataplane.watch()

    def traffic_now(self) -> Traffic:
        """The per-CIDR counters as the kernel holds them now (read-only; any thread).

        Empty before a config was read: the series are the config's CIDRs (a covered one
        reads 0), so a scrape that beats the first sync must not show the kernel's alone.
        """
        last = self._last
        if last is None:
            return {}
        return self.dataplane.traffic(last.merged.config)

    def sync(self) -> SyncReport:
        """One reconcile: the chosen dataplane, then the other's leftovers (make-before-break)."""
        loaded = self.load()
        self.metrics.config_loaded(len(loaded.files), loaded.merged)
        wrote = self._sync(self.dataplane, loaded.merged.config)
        other = self.dataplanes.other()
        wrote = (other is not None and self._remove(other) > 0) or wrote
        if wrote:  # the counters the sync listed predate its write: the next scrape reads
            self.metrics.counters_stale()
        if self.opts.dry_run:
            self._out.flush()
        return SyncReport(loaded, wrote)

    def _sync(self, plane: Dataplane[P], config: MasqConfig) -> bool:
        """Make the kernel right (or print what would change); whether anything was written."""
        read_at = self.metrics.stamp()  # the counters a listing shows are at least this new
        if self.opts.dry_run:
            plan = plane.plan(config)
            self._report_traffic(plan.traffic, read_at)
            plane.describe(plan, self._out)
            return False
        with plane.serialised():
            plan = plane.plan(config)
            wrote = self._report_writes(plane.apply(plan)) > 0
        if not wrote:  # after a write the listed counters are stale: the next scrape reads
            self._report_traffic(plan.traffic, read_at)
        return wrote

    def _remove(self, plane: Dataplane[P]) -> int:
        """Remove what ``plane`` owns (or print it); how many writes that took."""
        plan = plane.cleanup()
        if self.opts.dry_run:
            plane.describe(plan, self._out)
            return 0
        return self._report_writes(plane.apply(plan))

    def _report_traffic(self, traffic: Traffic, read_at: float) -> None:
        if traffic:  # nothing listed (the kernel proved nothing changed): nothing fresher
            self.metrics.traffic(traffic, read_at)

    def _report_writes(self, writes: Writes) -> int:
        for family, labels in writes.labels.items():
            self.metrics.rule_writes(family, labels)
        return writes.ops

    def cleanup(self) -> int:
        """Remove what the agent owns in both dataplanes (nothing else); count of ops written."""
        other = self.dataplanes.other()
        total = self._remove(self.dataplane) + (self._remove(other) if other is not None else 0)
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
