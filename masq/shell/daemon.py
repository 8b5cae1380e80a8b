"""The daemon: sync, then sleep in one ``select`` until the config changes, someone else
changes what the agent owns in the kernel, the resync interval passes, or a signal arrives.

Idle cost is one blocked ``select`` on the inotify fd, the dataplane's notification
socket (where it has one) and a signal pipe; nothing polls unless the config dir and
its parent are both missing (then once a second).  A foreign change is repaired after a
short quiet spell (a burst is one repair), logged once per burst with who made it, and
backed off when the same objects need repairing again and again (another agent that
disagrees).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import time
from collections.abc import Callable
from types import FrameType

from inotify_simple import INotify
from inotify_simple import flags as F

from masq.core.config import MIN_RESYNC_SECONDS, effective_resync
from masq.shell import http
from masq.shell.agent import Agent, Backoff
from masq.shell.collector import ConfigFreezer
from masq.shell.dataplane import Watching, write_ops
from masq.shell.errors import AgentError, TransientError
from masq.shell.metrics import Metrics
from masq.shell.nft_watch import Burst, RepairBackoff
from masq.shell.options import Options

LOG = logging.getLogger("masq.daemon")
DEBOUNCE_SECONDS = 0.1
DEBOUNCE_MAX_SECONDS = 0.5  # a burst of writes never delays a sync longer than this
POLL_SECONDS = 1.0
HEAL_QUIET_SECONDS = 0.15  # a foreign change is repaired once the kernel is this quiet
HEAL_MAX_WAIT_SECONDS = 0.6  # ... or this long after it, however busy the writer
DIR_MASK = (
    F.CREATE
    | F.DELETE
    | F.MOVED_FROM
    | F.MOVED_TO
    | F.MODIFY
    | F.ATTRIB
    | F.CLOSE_WRITE
    | F.DELETE_SELF
    | F.MOVE_SELF
)
PARENT_MASK = F.CREATE | F.MOVED_TO | F.DELETE | F.MOVED_FROM | F.ATTRIB


class ConfigWatcher:
    """inotify on the config dir (or, while it is missing, on its parent)."""

    def __init__(self, config_dir: str) -> None:
        self.config_dir = os.path.abspath(config_dir)
        self.parent = os.path.dirname(self.config_dir) or "/"
        self.name = os.path.basename(self.config_dir)
        self.inotify = INotify()
        self._wd: int | None = None
        self._watching_dir = False
        self.rewatch()

    def fileno(self) -> int:
        return int(self.inotify.fileno())

    @property
    def polling(self) -> bool:
        """Neither the dir nor its parent can be watched: callers wake once a second."""
        return self._wd is None

    def rewatch(self) -> None:
        """Watch the dir if it exists, else its parent (to see it appear), else nothing."""
        if self._wd is not None:
            with contextlib.suppress(OSError):  # already gone with the dir (IN_IGNORED)
                self.inotify.rm_watch(self._wd)
            self._wd = None
        for path, mask, is_dir in (
            (self.config_dir, DIR_MASK, True),
            (self.parent, PARENT_MASK, False),
        ):
            try:
                self._wd = int(self.inotify.add_watch(path, mask))
                self._watching_dir = is_dir
                return
            except OSError:
                continue

    def drain(self) -> bool:
        """Read pending events; True if any could change the config."""
        relevant = False
        need_rewatch = False
        for event in self.inotify.read(timeout=0):
            if event.wd != self._wd:
                continue  # a watch we replaced (its IN_IGNORED arrives late): not news
            mask = int(event.mask)
            if mask & (F.IGNORED | F.DELETE_SELF | F.MOVE_SELF):
                need_rewatch = True
                relevant = True
            elif self._watching_dir:
                # Any entry counts, dot-names too: the kubelet's ``..data`` symlink swap
                # (MOVED_TO) is the one event a ConfigMap update is guaranteed to make.
                relevant = True
            elif event.name == self.name:
                need_rewatch = True
                relevant = True
        if need_rewatch or (not self._watching_dir and os.path.isdir(self.config_dir)):
            self.rewatch()
        return relevant

    def close(self) -> None:
        self.inotify.close()


class KernelWatcher:
    """The dataplane's notifications: ``drain`` collects foreign changes into ``burst``."""

    def __init__(self, watching: Watching) -> None:
        self.watching = watching
        self.burst = Burst()

    def fileno(self) -> int:
        return self.watching.fileno()

    def drain(self) -> bool:
        """Read what is queued; True if it held a foreign change (or lost notifications)."""
        seen = self.watching.poll()
        self.burst = self.burst.merged(seen)
        return bool(seen)

    def take(self) -> Burst:
        burst, self.burst = self.burst, Burst()
        return burst


class Stopper:
    """SIGTERM/SIGINT set a flag and wake the ``select`` through a pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        with contextlib.suppress(OSError):  # pipe full: a wake-up is pending anyway
            os.write(self.write_fd, b"x")

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    def close(self) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        os.close(self.read_fd)
        os.close(self.write_fd)


def wait_for_change(
    watcher: ConfigWatcher,
    stopper: Stopper,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    kernel: KernelWatcher | None = None,
) -> str:
    """Block until ``"config"`` changed (debounced), ``"kernel"`` (a foreign change to what
    the agent owns, debounced: ``kernel.burst`` holds it), ``"timeout"`` or ``"signal"``."""
    deadline = clock() + timeout
    fds = [watcher.fileno(), stopper.read_fd] + ([kernel.fileno()] if kernel else [])
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return "timeout"
        step = min(remaining, POLL_SECONDS) if watcher.polling else remaining
        ready, _, _ = select.select(fds, [], [], step)
        if stopper.stopped:
            return "signal"
        if kernel is not None and kernel.fileno() in ready and kernel.drain():
            _debounce(kernel, stopper, clock, HEAL_QUIET_SECONDS, HEAL_MAX_WAIT_SECONDS)
            return "signal" if stopper.stopped else "kernel"
        if watcher.polling:
            watcher.rewatch()
            if not watcher.polling:
                return "config"  # the dir (or its parent) appeared
            continue
        if watcher.fileno() in ready and watcher.drain():
            _debounce(watcher, stopper, clock)
            return "signal" if stopper.stopped else "config"


def _debounce(
    source: ConfigWatcher | KernelWatcher,
    stopper: Stopper,
    clock: Callable[[], float],
    quiet: float = DEBOUNCE_SECONDS,
    most: float = DEBOUNCE_MAX_SECONDS,
) -> None:
    """Let a burst of events (a ConfigMap swap is several; so is a writer's commit) settle
    until ``quiet`` seconds pass without one, but no longer than ``most``."""
    limit = clock() + most
    while clock() < limit and not stopper.stopped:
        ready, _, _ = select.select([source.fileno(), stopper.read_fd], [], [], quiet)
        if not ready:
            return
        source.drain()


def run(opts: Options) -> int:
    """The daemon; returns 0 on SIGTERM/SIGINT, 1 on a fatal error (rules stay as they are)."""
    metrics = Metrics(
        resync_interval=max(MIN_RESYNC_SECONDS, opts.resync_interval),
        max_cidr_series=opts.metrics_max_cidr_series,
        write_ops=write_ops(opts.dataplane),
    )
    agent = Agent(opts, metrics)
    metrics.refresh_with(agent.traffic_now)
    with contextlib.ExitStack() as cleanup:
        try:
            stopper = Stopper()
            cleanup.callback(stopper.close)
            watcher = ConfigWatcher(opts.config_dir)
            cleanup.callback(watcher.close)
        except OSError as e:  # e.g. EMFILE: the node's fs.inotify.max_user_instances is used up
            raise AgentError(f"cannot watch {opts.config_dir}: {e.strerror or e}") from None
        server = http.start_server(opts.metrics_bind_address, metrics)
        if server is not None:
            cleanup.callback(server.shutdown)
        watching = agent.watch()  # subscribed before the first listing
        kernel = KernelWatcher(watching) if watching is not None else None
        return _loop(opts, agent, metrics, watcher, stopper, kernel=kernel)


def _loop(
    opts: Options,
    agent: Agent,
    metrics: Metrics,
    watcher: ConfigWatcher,
    stopper: Stopper,
    *,
    kernel: KernelWatcher | None = None,
) -> int:
    floor = max(MIN_RESYNC_SECONDS, opts.resync_interval)
    backoff = Backoff(floor)  # the floor caps retries too
    repairs = RepairBackoff(cap=floor)
    frozen = ConfigFreezer()
    while not stopper.stopped:
        metrics.loop_alive()
        started = time.monotonic()
        try:
            report = agent.sync()
        except TransientError as e:
            metrics.sync_finished(False, time.monotonic() - started, str(e))
            wait = backoff.failed(e)
        except AgentError as e:
            metrics.sync_finished(False, time.monotonic() - started, str(e))
            raise
        else:
            backoff.succeeded()
            metrics.sync_finished(True, time.monotonic() - started)
            frozen.after(report)
            if not report.wrote:
                repairs.calm()
            backoff.cap = wait = effective_resync(opts.resync_interval, report.loaded.merged.config)
        if stopper.stopped:
            break
        why = wait_for_change(watcher, stopper, wait, kernel=kernel)
        LOG.log(logging.DEBUG, "woke", extra={"kv": {"reason": why}})
        if why == "kernel" and kernel is not None:
            delay = _repair(kernel.take(), repairs, metrics)
            if delay > 0:  # config changes and signals still wake the wait
                wait_for_change(watcher, stopper, delay)
    LOG.info("stopping, rules left in place", extra={"kv": {"signal": stopper.signum}})
    return 0


def _repair(burst: Burst, repairs: RepairBackoff, metrics: Metrics) -> float:
    """Say (once per burst) who changed what, and how long the repair waits."""
    delay = repairs.delay(burst.objects(), time.monotonic())
    kv: dict[str, object] = {"by": burst.who(), "changes": burst.changes()}
    if delay > 0:
        kv.update(backoff=f"{delay:g}s", repeats=repairs.repeats)
        message = "foreign change again, repair backed off"
    else:
        message = "foreign change, repairing"
    LOG.warning(message, extra={"kv": kv})
    metrics.repair_started("lost" if burst.lost and not burst.commits else "foreign", delay)
    return delay
