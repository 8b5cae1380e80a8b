"""The driver: builds the namespaces, plays the kubelet and the faults, records everything.

One thread runs everything in order: every ~10 ms it reaps and restarts agents, fires the
schedule's due operations and takes a snapshot of the node's tables each second (the nat
table; with the nftables dataplane also the nft ruleset).  Every process it starts gets
its own session (so a SIGKILL takes an agent together with the iptables or nft it was
running, as an OOM kill of the pod does) and dies with the driver
(``PR_SET_PDEATHSIG``); on the way out, whatever happened, every one of them is killed and
the namespaces are deleted (the agent's table and the foreign ones with them).  Nothing
runs in the machine's own network namespace except the lock holder, which touches only
the run's private lock file.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, TextIO

from integration.agent import AGENT_PYTHON, agent_argv, agent_env, background, configmap_layout
from integration.topology import DEST_UPLINK, REPO_ROOT, Backend, Topology, topology

from soak import checker
from soak.catalogue import DESTINATIONS, EXTRA_DESTINATIONS, Files
from soak.dataplane import HERE, Dataplane, Writer, dataplane
from soak.events import (
    ForeignWrite,
    Life,
    LockHold,
    Probe,
    Push,
    PushKind,
    RestoreCall,
    RestoreFaults,
    Role,
    RunLog,
    Snapshot,
    Tamper,
)
from soak.model import RESYNC_SECONDS, read
from soak.schedule import Op, Scenario, Schedule, counts, scenario

TICK = 0.01
SNAPSHOT_EVERY = 1.0
FOREIGN_PERIOD = 1.0
PROBE_INTERVAL = 0.005
PROBE_PORT = 33333
RESTART_BACKOFF = (0.2, 1.0)  # the kubelet role: first delay, cap (doubling in between)
NOTIFY_RCVBUF = 16384
"""The nftables agents' notification buffer (every other life's): small enough that the
storm's commits overflow it now and then, so the agents' "notifications lost" path (list
and repair) is exercised."""
NOTIFY_RCVBUF_ENV = "IP_MASQ_AGENT_NOTIFY_RCVBUF"
BACKOFF_RESET_AFTER = 3.0  # an agent that ran this long restarts at the first delay again
RECOVERY_TIMEOUT = 30.0
PROGRESS_EVERY = 15.0
RUNLOG = "runlog.pickle"  # the whole RunLog of a kept run: ``--judge DIR`` judges it again

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_driver() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class Settings:
    seed: int
    seconds: float
    backend: Backend
    dataplane: str = "iptables"
    scenario: Scenario = "storm"
    keep: bool = False
    progress: TextIO | None = None


class Processes:
    """Every process the driver started, so that each can be killed, by id, at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def spawn(
        self,
        argv: list[str],
        *,
        stdout: IO[str] | int,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        # its own session (killed by group at the end), and dead with the driver
        proc = background(
            argv, stdout=stdout, env=env, new_session=True, preexec_fn=_die_with_driver
        )
        self.started.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)


def _write_in_flight(pid: int, is_write: Callable[[list[bytes]], bool]) -> bool:
    """Whether a write (iptables-restore, nft -f, or their stand-in) is a child of ``pid``."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    with contextlib.suppress(OSError), open(f"/proc/{child}/cmdline", "rb") as c:
                        if is_write(c.read().split(b"\0")):
                            return True
    return False


class Pod:
    """One agent, kept running the way the kubelet keeps a container: restarted after every
    exit (the documented exit 1 on a broken config included) with a short, doubling backoff."""

    def __init__(
        self,
        *,
        role: Role,
        argv: list[str],
        env: dict[str, str],
        logs: Path,
        procs: Processes,
        lives: list[Life],
        is_write: Callable[[list[bytes]], bool],
    ) -> None:
        self.role = role
        self.is_write = is_write
        self.argv = argv
        self.env = env
        self.logs = logs
        self.procs = procs
        self.lives = lives
        self.wanted = False
        self.proc: subprocess.Popen[str] | None = None
        self.index = 0
        self.spawned = 0.0
        self.alive_until = 0.0
        self.signal: Literal["KILL", "TERM"] | None = None
        self.signalled_at: float | None = None
        self.in_flight = False
        self.restart_at: float | None = None
        self.backoff = RESTART_BACKOFF[0]

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.role}-{self.index:04d}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, now: float) -> None:
        self.wanted = True
        self.index += 1
        self.signal, self.signalled_at, self.in_flight = None, None, False
        with self.log_path.open("w") as out:
            self.proc = self.procs.spawn(self.argv, stdout=out, env=self._env())
        self.spawned = self.alive_until = now
        self.restart_at = None

    def _env(self) -> dict[str, str]:
        """Every other life keeps the kernel's default notification buffer, so a foreign
        change is repaired from its own notification (naming who) as well as after lost
        notifications (the small buffer) over a run."""
        env = dict(self.env)
        if self.index % 2 == 0:
            env.pop(NOTIFY_RCVBUF_ENV, None)
        return env

    def poll(self, now: float) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.alive_until = now
                return
            self._record(now, self.proc.returncode)
        if self.wanted and self.restart_at is not None and now >= self.restart_at:
            self.start(now)

    def _record(self, now: float, code: int) -> None:
        self.lives.append(
            Life(
                self.role,
                self.index,
                self.spawned,
                self.alive_until,
                now,
                code,
                self.signal,
                self.signalled_at,
                self.in_flight,
                self.log_path.read_text(errors="replace"),
            )
        )
        self.proc = None
        if now - self.spawned >= BACKOFF_RESET_AFTER:
            self.backoff = RESTART_BACKOFF[0]
        self.restart_at = now + self.backoff
        self.backoff = min(self.backoff * 2, RESTART_BACKOFF[1])

    def kill(self, now: float) -> bool:
        """SIGKILL the agent and everything it runs (as an OOM kill of the pod does)."""
        if self.proc is None or not self.running:
            return False
        self.in_flight = _write_in_flight(self.proc.pid, self.is_write)
        self.signal, self.signalled_at = "KILL", now
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the agent alone (as the kubelet stops a container); no restart."""
        self.wanted = False
        if self.proc is None:
            return
        if self.running:
            self.signal, self.signalled_at = "TERM", time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._record(time.monotonic(), self.proc.returncode)
        self.restart_at = None


class Soak:
    def __init__(
        self, settings: Settings, schedule: Schedule, plane: Dataplane, topo: Topology, work: Path
    ) -> None:
        self.settings = settings
        self.schedule = schedule
        self.plane = plane
        self.topo = topo
        self.work = work
        self.procs = Processes()
        self.log = RunLog(
            settings.seed,
            settings.seconds,
            settings.backend,
            settings.dataplane,
            schedule.digest,
            counts(schedule),
            schedule.scenario,
        )
        self.config_dir = work / "config"
        self.logs = work / "logs"
        self.lockfile = work / "xtables.lock"
        self.counter = work / "restore-failures"
        self.restore_log = work / "restore-calls.log"
        self.probes_out = work / "probes.txt"
        self.files: Files = ()
        self.stamps = 0
        self.timers: list[tuple[float, int, Callable[[float], None]]] = []
        self.locks: list[tuple[float, subprocess.Popen[str]]] = []
        self.armed: tuple[float, int] | None = None
        self.second_since: float | None = None
        self.prober: subprocess.Popen[str] | None = None
        self.listener: subprocess.Popen[str] | None = None
        self.writers: list[tuple[Writer, subprocess.Popen[str]]] = []
        self.env = self._agent_env()
        argv = agent_argv(
            topo,
            self.config_dir,
            "--resync-interval",
            f"{RESYNC_SECONDS:g}",
            *plane.agent_flags,
            once=False,
        )
        self.primary, self.second = (
            Pod(
                role=role,
                argv=argv,
                env=self.env,
                logs=self.logs,
                procs=self.procs,
                lives=self.log.lives,
                is_write=plane.is_write,
            )
            for role in ("primary", "second")
        )

    # -- set-up -----------------------------------------------------------------------

    def _agent_env(self) -> dict[str, str]:
        """The agents' environment: the run's private xtables lock, and a PATH on which the
        writing binary (iptables-restore, nft) is the fault wrapper (which passes through
        while its counter is 0)."""
        wrappers = self.work / "wrappers"
        wrappers.mkdir(parents=True)
        self.counter.write_text("0\n")
        real = shutil.which(self.plane.wrapped_binary)
        if real is None:
            raise RuntimeError(f"{self.plane.wrapped_binary} not found")
        argv = [AGENT_PYTHON, "-S", str(HERE / "faults.py"), "restore-wrapper",
                self.plane.wrapper_style, str(self.counter), str(self.restore_log),
                real]  # fmt: skip
        shim = wrappers / self.plane.wrapped_binary
        shim.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        shim.chmod(0o755)
        env = agent_env()
        env["PATH"] = f"{wrappers}{os.pathsep}{env.get('PATH', '')}"
        env["XTABLES_LOCKFILE"] = str(self.lockfile)
        if self.plane.name == "nftables":  # notifications overflow now and then: "lost"
            env[NOTIFY_RCVBUF_ENV] = str(NOTIFY_RCVBUF)
        return env

    def prepare(self) -> None:
        self.config_dir.mkdir()
        self.logs.mkdir()
        for ip in EXTRA_DESTINATIONS:
            self._ip("-n", self.topo.dest, "addr", "add", f"{ip}/32", "dev", "lo")
            self._ip("-n", self.topo.node, "route", "add", f"{ip}/32", "via", DEST_UPLINK)
        self.push(self.schedule.initial, "initial", "")
        self.primary.start(time.monotonic())
        self._await("the agent's first sync", self._ours_ok, 20.0)
        env = dict(os.environ, XTABLES_LOCKFILE=str(self.lockfile))
        for writer in self.plane.foreign_writers(
            self.topo, self.settings.seed, FOREIGN_PERIOD, self.work
        ):
            with (self.work / f"writer-{writer.name}.out").open("w") as out:
                proc = self.procs.spawn(list(writer.argv), stdout=out, env=env)
            self.writers.append((writer, proc))
        self._await("the foreign writers' first generations", self._foreign_written, 20.0)
        script = str(HERE / "probe.py")
        listen = [AGENT_PYTHON, "-S", script, "listen", str(PROBE_PORT), str(self.probes_out)]
        self.listener = self.procs.spawn(
            self.topo.in_ns(self.topo.dest, listen), stdout=subprocess.PIPE
        )
        assert self.listener.stdout is not None
        if self.listener.stdout.readline().strip() != "ready":
            raise RuntimeError("the listener in dest did not start")
        send = [
            AGENT_PYTHON,
            "-S",
            script,
            "send",
            str(PROBE_INTERVAL),
            str(PROBE_PORT),
            *DESTINATIONS,
        ]
        with (self.work / "prober.out").open("w") as out:
            self.prober = self.procs.spawn(self.topo.in_ns(self.topo.pod, send), stdout=out)

    def _ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def _await(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.primary.poll(time.monotonic())
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; logs in {self.work}")
            time.sleep(0.05)

    def _ours_ok(self) -> bool:
        config = read(self.files).config
        assert config is not None
        nat, nft = self.plane.read_tables(self.topo)
        return not checker.ours_problems(self.plane.name, nat, nft, config)

    def _foreign_written(self) -> bool:
        return all(w.log.exists() and w.log.read_text().strip() for w, _ in self.writers)

    # -- operations -------------------------------------------------------------------

    def push(self, files: Files, kind: PushKind, label: str) -> None:
        """Swap the ConfigMap volume to ``files`` as the kubelet does: the new timestamped
        dir and the ``..data`` link first, then links for added keys, then removed keys'
        links and the old dir go."""
        start = time.monotonic()
        self.stamps += 1
        old = {p.name for p in self.config_dir.glob("..[0-9]*")}
        configmap_layout(self.config_dir, dict(files), f"{self.stamps:06d}")
        keys = {name for name, _ in files}
        for link in self.config_dir.iterdir():
            if link.is_symlink() and not link.name.startswith(".") and link.name not in keys:
                link.unlink()
        for name in old:
            shutil.rmtree(self.config_dir / name)
        self.log.pushes.append(Push(start, time.monotonic(), self.files, files, kind, label))
        self.files = files

    def execute(self, op: Op, now: float) -> None:
        if op.kind in ("config", "broken", "fix"):
            self.push(op.files, op.kind, op.label)
        elif op.kind == "kill":
            pod = self.second if op.target == "second" else self.primary
            if not pod.kill(now):
                self.log.notes.append(f"{now:.3f}: kill {op.target}: not running")
        elif op.kind == "second-agent":
            self.second.start(now)
            self.second_since = now
            self._after(op.seconds, self._stop_second)
        elif op.kind == "lock":
            argv = [AGENT_PYTHON, "-S", str(HERE / "faults.py"), "hold-lock",
                    str(self.lockfile), f"{op.seconds:.3f}"]  # fmt: skip
            self.locks.append((now, self.procs.spawn(argv, stdout=subprocess.PIPE)))
        elif op.kind == "restore-fail":
            self._arm(now, op.count)
        elif op.kind == "tamper":
            rc, command = self.plane.tamper(self.topo, op.label)
            self.log.tampers.append(Tamper(now, time.monotonic(), op.label, rc, command))

    def _after(self, seconds: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self.timers, (time.monotonic() + seconds, len(self.timers), action))

    def _stop_second(self, now: float) -> None:
        if self.second_since is not None:
            self.second.stop()
            self.log.second_agent.append((self.second_since, time.monotonic()))
            self.second_since = None

    def _arm(self, now: float, count: int) -> None:
        if self.armed is not None:
            self.log.restore_faults.append(RestoreFaults(self.armed[0], self.armed[1], now))
        self.counter.write_text(f"{count}\n")
        self.armed = (now, count) if count else None

    def snapshot(self, phase: Literal["storm", "settle", "final"]) -> Snapshot | None:
        start = time.monotonic()
        try:
            text, nft = self.plane.read_tables(self.topo)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            self.log.notes.append(f"{start:.3f}: snapshot failed: {e}")
            return None
        snap = Snapshot(start, time.monotonic(), text, phase, nft)
        self.log.snapshots.append(snap)
        return snap

    # -- the run ----------------------------------------------------------------------

    def storm(self) -> None:
        ops = list(self.schedule.ops)
        start = self.log.storm_start = time.monotonic()
        end = start + self.settings.seconds
        next_snapshot = start
        next_progress = start + PROGRESS_EVERY
        done = 0
        while (now := time.monotonic()) < end:
            self.primary.poll(now)
            self.second.poll(now)
            while self.timers and self.timers[0][0] <= now:
                heapq.heappop(self.timers)[2](now)
            while done < len(ops) and start + ops[done].at <= now:
                self.execute(ops[done], now)
                done += 1
            if now >= next_snapshot:
                self.snapshot("storm")
                next_snapshot += SNAPSHOT_EVERY
            if now >= next_progress and self.settings.progress is not None:
                next_progress += PROGRESS_EVERY
                starts = f"{self.primary.index}+{self.second.index}"
                print(
                    f"soak: {now - start:5.0f}s  ops {done}/{len(ops)}  agent starts {starts}"
                    f"  snapshots {len(self.log.snapshots)}",
                    file=self.settings.progress,
                    flush=True,
                )
            time.sleep(TICK)
        self.log.storm_end = time.monotonic()

    def settle(self) -> None:
        """End every fault, then measure how long the kernel takes to be exactly right, let
        one periodic resync pass, and take the final snapshot and a ``--dry-run``."""
        for _, holder in self.locks:
            if holder.poll() is None:
                holder.terminate()
        self._arm(time.monotonic(), 0)
        self._stop_second(time.monotonic())
        if not read(self.files).valid:
            raise AssertionError("the schedule left a broken config at the end of the storm")
        for _, proc in self.writers:
            proc.terminate()
        for _, proc in self.writers:
            proc.wait(timeout=10)
        self.log.foreign = self._foreign_writes()
        final = read(self.files).config
        assert final is not None
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while time.monotonic() < deadline:
            self.primary.poll(time.monotonic())
            snap = self.snapshot("settle")
            if snap is not None and not checker.snapshot_problems(
                snap, self.settings.seed, self.log, final
            ):
                self.log.recovered_at = snap.end
                break
            time.sleep(0.1)
        resync_done = time.monotonic() + RESYNC_SECONDS + 1.0
        while time.monotonic() < resync_done:
            self.primary.poll(time.monotonic())
            time.sleep(TICK)
        self.snapshot("final")
        dry = subprocess.run(
            agent_argv(
                self.topo,
                self.config_dir,
                "--dry-run",
                "--resync-interval",
                f"{RESYNC_SECONDS:g}",
                *self.plane.agent_flags,
            ),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
            env=self.env,
            check=False,
        )
        self.log.dry_run = (dry.returncode, dry.stdout, dry.stderr)
        self._stop_probes()
        self.primary.stop()
        self.log.finished = time.monotonic()

    def _stop_probes(self) -> None:
        if self.prober is not None:
            self.prober.terminate()
            self.prober.wait(timeout=10)
            out = (self.work / "prober.out").read_text()
            sent = [ln for ln in out.splitlines() if ln.startswith("sent ")]
            self.log.probes_sent = int(sent[-1].split()[1]) if sent else 0
        time.sleep(0.5)  # the last datagrams are on their way
        if self.listener is not None:
            self.listener.terminate()
            self.listener.wait(timeout=10)

    # -- what the helpers wrote -------------------------------------------------------

    def _foreign_writes(self) -> list[ForeignWrite]:
        out = []
        for writer, _ in self.writers:
            if not writer.log.exists():
                continue
            for line in writer.log.read_text().splitlines():
                gen, start, end, rc, hooks_rc = line.split()
                out.append(
                    ForeignWrite(
                        int(gen), float(start), float(end), int(rc), int(hooks_rc), writer.name
                    )
                )
        return out

    def collect(self) -> None:
        if self.probes_out.exists():
            for line in self.probes_out.read_text().splitlines():
                seq, dest, sent, received, source = line.split()
                self.log.probes.append(
                    Probe(int(seq), int(dest), float(sent), float(received), source)
                )
        if self.restore_log.exists():
            for line in self.restore_log.read_text().splitlines():
                outcome, at = line.split()
                self.log.restore_calls.append(RestoreCall(float(at), outcome == "fail"))
        for requested, holder in self.locks:
            out = holder.stdout.read() if holder.stdout is not None else ""
            times = dict(line.split() for line in out.splitlines() if line.strip())
            held = float(times["held"]) if "held" in times else None
            released = float(times["released"]) if "released" in times else self.log.storm_end
            self.log.locks.append(LockHold(requested, held, released))
        if not self.log.foreign:
            self.log.foreign = self._foreign_writes()


def load(work: Path) -> RunLog:
    """The RunLog a kept run left in ``work`` (written by this code: trusted input)."""
    with (work / RUNLOG).open("rb") as f:
        log = pickle.load(f)
    if not isinstance(log, RunLog):
        raise TypeError(f"{work / RUNLOG} does not hold a RunLog")
    return log


def run(settings: Settings) -> tuple[RunLog, checker.Judgement, Schedule, Path]:
    """One soak: the schedule for the seed, played in fresh namespaces, then judged.

    The run's files (agent logs, probes, the foreign writer's log) are deleted after a
    clean run unless ``keep``; after a violation or a crash they stay for a post-mortem.
    """
    plane = dataplane(settings.dataplane, settings.backend)
    schedule = scenario(settings.scenario, settings.seed, settings.seconds, plane.faults)
    work = Path(tempfile.mkdtemp(prefix="masq-soak-"))
    with topology(settings.backend) as topo:
        soak = Soak(settings, schedule, plane, topo, work)
        try:
            soak.prepare()
            soak.storm()
            soak.settle()
        finally:
            soak.procs.kill_all()
        soak.collect()
    with (work / RUNLOG).open("wb") as f:
        pickle.dump(soak.log, f)
    verdict = checker.judge(soak.log)
    if not verdict.violations and not settings.keep:
        shutil.rmtree(work, ignore_errors=True)
    return soak.log, verdict, schedule, work
