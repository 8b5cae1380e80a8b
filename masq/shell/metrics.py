"""Agent metrics and health state, fed by the reconcile loop's hooks.

Everything lives on a dedicated ``CollectorRegistry`` (never prometheus_client's global
one), so tests and several agents in one process do not share series.  The per-rule
traffic counters are not counted here: they are the kernel's own counters, copied from
the sync's listing of our chain (or read by a scrape) and exposed by a custom collector.
Since a steady-state sync writes nothing, those counters keep growing across syncs.

Every hook catches everything: metrics are never a reason for the loop to fail.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from masq import __version__
from masq.core.addresses import FAMILIES, Family, IPNetwork, cidr_key, family_range
from masq.core.config import MasqConfig, effective_resync
from masq.core.decision import Kind
from masq.core.fragment import OUTPUT_ADDRESS, OUTPUT_ADDRESS_IPV6, OUTPUT_INTERFACES, SOURCE_CIDRS
from masq.core.merge import Merged
from masq.core.traffic import OTHER_CIDRS, CidrTraffic, Counters, Traffic, summed

Refresher = Callable[[], Traffic]

LOG = logging.getLogger("masq")
PREFIX = "ip_masq_agent"
HEALTH_INTERVALS = 3  # /healthz tolerates this many resync intervals without a success
TRAFFIC_MAX_AGE_SECONDS = 5.0  # per-CIDR counters are never older than this at a scrape
DEFAULT_MAX_CIDR_SERIES = 300  # per family; the rest are summed under cidr="other"
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KIND_LABELS: dict[Kind, str] = {"non-masquerade": "non_masquerade", "masquerade": "masquerade"}
"""The ``kind`` label of each CIDR list, as the metric has always spelled it."""


@dataclass(frozen=True, slots=True)
class Health:
    """One answer of a probe: ``ok`` decides 200 or 503, ``reason`` is the body."""

    ok: bool
    reason: str


@functools.lru_cache(maxsize=4096)
def _cidr_order(cidr: str) -> tuple[int, tuple[int, int, int]]:
    """Where a ``cidr`` label sorts: canonical CIDR order, anything unparsable last.

    Remembered per label (a refreshing scrape caps the same few hundred labels each
    time; parsing them was ~5 µs each), bounded so a 50,000-rule chain cannot grow it."""
    try:
        return (0, cidr_key(ipaddress.ip_network(cidr)))
    except ValueError:
        return (1, (0, 0, 0))


def _series_key(t: CidrTraffic) -> tuple[int, tuple[int, int, int], str]:
    return (*_cidr_order(t.cidr), t.action)


def capped(rows: Iterable[CidrTraffic], max_series: int) -> list[CidrTraffic]:
    """At most ``max_series`` per-CIDR series per family, the rest summed per action.

    Which CIDRs get their own series follows the canonical CIDR order (the catch-all
    /0 first), not traffic, so membership changes only with the config: a series that
    came and went with traffic would break ``rate()`` on it and on ``other``.
    """
    by_family: dict[Family, list[CidrTraffic]] = {}
    for t in rows:
        by_family.setdefault(t.family, []).append(t)
    out: list[CidrTraffic] = []
    for family in sorted(by_family):
        ordered = sorted(by_family[family], key=_series_key)
        out += ordered[:max_series]
        rest = summed(
            (family, OTHER_CIDRS, t.action, Counters(t.packets, t.bytes))
            for t in ordered[max_series:]
        )
        out += sorted(rest.get(family, ()), key=lambda t: t.action)
    return out


REPAIR_REASONS = ("foreign", "lost")
"""``repairs_total``'s ``reason``: a foreign commit named what the agent owns, or
notifications were lost (anything may have changed)."""


TRAFFIC_FAMILIES = (
    ("packets", "Packets matched by each rule of the agent's chain (the kernel's counter)."),
    ("bytes", "Bytes matched by each rule of the agent's chain (the kernel's counter)."),
)
"""The per-CIDR counter families (counters: exposed with ``_total``), and their help."""


class _TrafficCollector(Collector):
    """Exposes the last observed kernel counters as they are (no local arithmetic)."""

    def __init__(self, snapshot: Callable[[], tuple[CidrTraffic, ...]], max_series: int) -> None:
        self._snapshot = snapshot
        self._max_series = max_series
        # capping sorts every CIDR (0.2 s at 50,000): once per snapshot, not per scrape
        self._families: tuple[tuple[CidrTraffic, ...] | None, tuple[Metric, ...]] = (None, ())

    def collect(self) -> Iterator[Metric]:
        rows = self._snapshot()
        built = self._families
        if rows is not built[0]:
            built = (rows, self._build(capped(rows, self._max_series)))
            self._families = built
        yield from built[1]

    @staticmethod
    def _build(rows: Sequence[CidrTraffic]) -> tuple[Metric, ...]:
        families = []
        for what, documentation in TRAFFIC_FAMILIES:
            family = CounterMetricFamily(
                f"{PREFIX}_{what}", documentation, labels=["family", "cidr", "action"]
            )
            for t in rows:
                family.add_metric([t.family, t.cidr, t.action], getattr(t, what))
            families.append(family)
        return tuple(families)

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _Registry(CollectorRegistry):
    """The agent's own registry and every metric on it (never prometheus_client's global
    one), the per-CIDR counters' collector included."""

    def __init__(
        self,
        resync_interval: float,
        version: str,
        traffic: Callable[[], tuple[CidrTraffic, ...]],
        max_series: int,
    ) -> None:
        # ``*_created`` series only double the exposition; the agent owns its process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        super().__init__(auto_describe=True)
        self.syncs = Counter(f"{PREFIX}_syncs", "Syncs by result.", ["result"], registry=self)
        for result in ("success", "failure"):
            self.syncs.labels(result=result)
        self.duration = Histogram(
            f"{PREFIX}_sync_duration_seconds",
            "Wall time of one sync (read config, list, plan, write).",
            buckets=DURATION_BUCKETS,
            registry=self,
        )
        self.writes = Counter(
            f"{PREFIX}_rule_writes",
            "Operations written to the kernel, by family and operation.",
            ["family", "op"],
            registry=self,
        )
        self.repairs = Counter(
            f"{PREFIX}_repairs",
            "Repairs started by a foreign change to what the agent owns, by what told it.",
            ["reason"],
            registry=self,
        )
        for reason in REPAIR_REASONS:
            self.repairs.labels(reason=reason)
        self.repair_backoffs = Counter(
            f"{PREFIX}_repair_backoffs",
            "Repairs delayed because the same objects needed one again soon after the last.",
            registry=self,
        )
        self.repair_backoff = self._gauge(
            "repair_backoff_seconds",
            "The delay before the last repair (0: none; grows while another writer disagrees).",
        )
        self.last_success_ts = self._gauge(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync (0 before the first).",
        )
        self.interval = self._gauge(
            "resync_interval_seconds",
            "Effective resync interval: the smaller of the flag and the config's resyncInterval.",
        )
        self.interval.set(resync_interval)
        self.fragments = self._gauge("config_fragments", "Config files read by the last load.")
        self.conflicts = self._gauge(
            "config_conflicts", "Conflicts between config files in the last merge."
        )
        self.cidrs = Gauge(
            f"{PREFIX}_cidrs",
            "CIDRs in the effective config, by family and kind.",
            ["family", "kind"],
            registry=self,
        )
        for family in FAMILIES:
            for label in KIND_LABELS.values():
                self.cidrs.labels(family=family, kind=label)
        self.egress = Gauge(
            f"{PREFIX}_config_egress_entries",
            "Egress selection in the effective config: entries per key (an address counts 1).",
            ["key"],
            registry=self,
        )
        for key in EGRESS_KEYS:
            self.egress.labels(key=key)
        build = Gauge(
            f"{PREFIX}_build_info", "Always 1; the agent's version.", ["version"], registry=self
        )
        build.labels(version=version).set(1)
        self.register(_TrafficCollector(traffic, max_series))

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(f"{PREFIX}_{name}", documentation, registry=self)


EGRESS_KEYS = (OUTPUT_INTERFACES, SOURCE_CIDRS, OUTPUT_ADDRESS, OUTPUT_ADDRESS_IPV6)


def egress_counts(config: MasqConfig) -> dict[str, int]:
    """``ip_masq_agent_config_egress_entries`` per key: 0 everywhere without egress selection."""
    return {
        OUTPUT_INTERFACES: len(config.output_interfaces),
        SOURCE_CIDRS: len(config.source_cidrs),
        OUTPUT_ADDRESS: int(config.output_address is not None),
        OUTPUT_ADDRESS_IPV6: int(config.output_address_ipv6 is not None),
    }


class Metrics:
    """Counters, gauges and health for one agent; every method is thread-safe.

    ``clock`` (monotonic) drives health, ``wall`` the exported timestamp; both are
    injectable so tests can move time without sleeping.
    """

    def __init__(
        self,
        resync_interval: float = 60.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        version: str = __version__,
        max_cidr_series: int = DEFAULT_MAX_CIDR_SERIES,
        write_ops: Iterable[str] = (),
    ) -> None:
        self.resync_interval = resync_interval
        self._flag_interval = resync_interval
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._started = clock()
        self._alive: float = self._started
        self._last_success: float | None = None
        self._last_error: str | None = None
        self._last_ok = True
        self._traffic: dict[Family, tuple[CidrTraffic, ...]] = {}
        self._snapshot: tuple[CidrTraffic, ...] | None = None  # all families, until they change
        self._traffic_at = -math.inf  # when the per-CIDR counters were last read (or tried)
        self._read_at = -math.inf  # when the read that gave the held counters started
        self._last_merged: Merged | None = None
        self._refresh: Refresher | None = None
        self._refresh_lock = threading.Lock()

        self.registry = _Registry(resync_interval, version, self._traffic_snapshot, max_cidr_series)
        # Every (family, op) series exists from the start at 0, so increase() over the
        # first write is not lost to a series that appears with its first sample.
        for family in FAMILIES:
            for op in write_ops:
                self.registry.writes.labels(family=family, op=op)

    def counters_stale(self) -> None:
        """What the last listing showed predates a write: the next scrape reads anew."""
        with self._lock:
            self._traffic_at = -math.inf

    def refresh_with(self, refresher: Refresher) -> None:
        """How a scrape reads fresh counters: one read-only listing of what the agent owns."""
        self._refresh = refresher

    # --- hooks the loop calls ---------------------------------------------------

    def config_loaded(self, fragments: int, merged: Merged) -> None:
        """A config was read and merged (called every sync; work only when it changed)."""
        if merged is self._last_merged:
            return
        self._last_merged = merged
        try:
            config = merged.config
            self.registry.fragments.set(fragments)
            self.registry.conflicts.set(len(merged.conflicts))
            lists: tuple[tuple[Kind, Sequence[IPNetwork]], ...] = (
                ("non-masquerade", config.non_masquerade_cidrs),
                ("masquerade", config.masquerade_cidrs),
            )
            for kind, nets in lists:  # canonical order: a family's CIDRs are one range
                for family in FAMILIES:
                    count = len(family_range(nets, family))
                    self.registry.cidrs.labels(family=family, kind=KIND_LABELS[kind]).set(count)
            for key, count in egress_counts(config).items():
                self.registry.egress.labels(key=key).set(count)
            with self._lock:  # the loop waits min(flag, config); so does health
                self.resync_interval = effective_resync(self._flag_interval, config)
            self.registry.interval.set(self.resync_interval)
        except Exception:
            LOG.debug("metrics: config_loaded failed", exc_info=True)

    def rule_writes(self, family: Family, ops: Sequence[str]) -> None:
        """Ops (by label) were written to the kernel for ``family`` (not for empty plans)."""
        try:
            for name in ops:
                self.registry.writes.labels(family=family, op=name).inc()
        except Exception:
            LOG.debug("metrics: rule_writes failed", exc_info=True)

    def repair_started(self, reason: str, delay_seconds: float) -> None:
        """A foreign change (``reason`` ``foreign``) or lost notifications (``lost``) start a
        repair after ``delay_seconds`` of back-off (0: at once)."""
        try:
            self.registry.repairs.labels(reason=reason).inc()
            self.registry.repair_backoff.set(delay_seconds)
            if delay_seconds > 0:
                self.registry.repair_backoffs.inc()
        except Exception:
            LOG.debug("metrics: repair_started failed", exc_info=True)

    def stamp(self) -> float:
        """Now, on the clock ``traffic``'s ``read_at`` is on (taken before a listing)."""
        return self._clock()

    def traffic(self, traffic: Traffic, read_at: float | None = None) -> None:
        """Per-CIDR kernel counters per family, as a listing that started at ``read_at``
        (default: now) showed; dropped if a scrape has read newer ones since (a counter
        never goes back)."""
        try:
            rows = {family: tuple(t) for family, t in traffic.items()}
            if read_at is None:
                read_at = self._clock()
            with self._lock:
                if read_at < self._read_at:
                    return
                self._traffic.update(rows)
                self._snapshot = None
                self._read_at = self._traffic_at = read_at
        except Exception:
            LOG.debug("metrics: traffic failed", exc_info=True)

    def sync_finished(self, ok: bool, duration_seconds: float, reason: str | None = None) -> None:
        """One sync ended; ``reason`` is the one-line error when not ok."""
        try:
            now = self._clock()
            self.registry.syncs.labels(result="success" if ok else "failure").inc()
            self.registry.duration.observe(max(duration_seconds, 0.0))
            with self._lock:
                self._alive = now
                self._last_ok = ok
                if ok:
                    self._last_success = now
                    self._last_error = None
                else:
                    self._last_error = _one_line(reason) or "sync failed (no reason given)"
            if ok:
                self.registry.last_success_ts.set(self._wall())
        except Exception:
            LOG.debug("metrics: sync_finished failed", exc_info=True)

    def loop_alive(self) -> None:
        """The loop woke up (called at least once per resync interval)."""
        try:
            now = self._clock()
            with self._lock:
                self._alive = now
        except Exception:
            LOG.debug("metrics: loop_alive failed", exc_info=True)

    # --- what the endpoints read ------------------------------------------------

    def healthz(self) -> Health:
        """Healthy while the loop is alive and a sync succeeded within three intervals.

        Before the first success the agent's start counts as one, so a slow first
        sync is not a liveness failure (readiness covers it).  A failed last sync
        is reported in the body even while the grace period keeps the status 200.
        """
        now = self._clock()
        with self._lock:
            limit = HEALTH_INTERVALS * self.resync_interval
            alive_age = now - self._alive
            success_age = now - (
                self._last_success if self._last_success is not None else self._started
            )
            error = self._last_error if not self._last_ok else None
            ever = self._last_success is not None
        if alive_age > limit:
            return Health(False, f"sync loop stalled: no sign of life for {alive_age:.1f}s")
        if success_age > limit:
            what = "no successful sync for" if ever else "no successful sync since start,"
            detail = f"{what} {success_age:.1f}s (limit {limit:g}s)"
            if error:
                detail += f"; last error: {error}"
            return Health(False, detail)
        if error:
            return Health(True, f"ok (last sync failed, retrying: {error})")
        return Health(True, "ok")

    def readyz(self) -> Health:
        """Ready once the first sync succeeded (the rules are in place)."""
        with self._lock:
            ready = self._last_success is not None
            error = self._last_error
        if ready:
            return Health(True, "ok")
        reason = "no successful sync yet"
        if error:
            reason += f"; last error: {error}"
        return Health(False, reason)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, per-CIDR counters at most 5 s old."""
        self._refresh_if_stale()
        return generate_latest(self.registry)

    def _stale(self) -> bool:
        with self._lock:
            return self._clock() - self._traffic_at >= TRAFFIC_MAX_AGE_SECONDS

    def _refresh_if_stale(self) -> None:
        """At most one listing per 5 s however many scrapers (the others wait for its
        result); the sync loop never waits for it (it only takes ``_lock``, briefly)."""
        if self._refresh is None or not self._stale():
            return
        with self._refresh_lock:
            if not self._stale():
                return  # another scraper just read them
            started = self._clock()
            try:
                fresh = self._refresh()
            except Exception as e:  # a failed read serves the last counters
                LOG.debug("metrics: counter refresh failed", extra={"kv": {"error": str(e)}})
                with self._lock:
                    self._traffic_at = self._clock()  # no retry storm: next try in 5 s
                return
            with self._lock:
                if started < self._read_at:
                    return  # a sync reported a newer listing while this one ran
                self._traffic = dict(fresh)
                self._snapshot = None
                self._read_at = self._traffic_at = started

    def _traffic_snapshot(self) -> tuple[CidrTraffic, ...]:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = tuple(t for f in FAMILIES for t in self._traffic.get(f, ()))
            return self._snapshot


def _one_line(text: str | None, limit: int = 500) -> str:
    """The error as one line (multi-line tool output joined), short enough for a probe body."""
    if not text:
        return ""
    line = " / ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 3] + "..."
