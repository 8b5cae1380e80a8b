"""The schedule: every operation and fault of a run, derived only from a seed and a duration.

Pure: ``build(seed, seconds, faults)`` returns the same ops for the same arguments, so a
run is replayed by its seed (``digest`` fingerprints the whole schedule, contents
included).  Times are seconds after the storm starts.  Each kind of event arrives as a
Poisson process at its own rate; a few rules then keep the storm meaningful: a broken
config is fixed 1-5 s later (and nothing else is pushed meanwhile, so the last good
rules are what must stay), fault episodes of the same family never overlap, and the
storm ends with a valid config.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from soak.catalogue import (
    BROKEN_FILE,
    MAIN_FILE,
    MASQUERADE_POOL,
    MERGED_LIMIT,
    NON_MASQUERADE_POOL,
    OPTIONAL_FILES,
    Content,
    Files,
    bad_inputs,
)
from soak.model import read

OpKind = Literal[
    "config", "broken", "fix", "kill", "second-agent", "lock", "restore-fail", "tamper"
]
Fault = Literal["kill", "second-agent", "lock", "restore-fail", "tamper"]
Target = Literal["primary", "second"]
Scenario = Literal["storm", "rolling-update"]
SCENARIOS: tuple[Scenario, ...] = ("storm", "rolling-update")

RATES: dict[str, float] = {  # per second; 57-81% of probes then fall inside some window
    "config": 0.3,
    "kill-after-change": 1 / 12,
    "broken": 1 / 12,
    "kill": 1 / 10,
    "second-agent": 1 / 40,
    "lock": 1 / 20,
    "restore-fail": 1 / 20,
    "tamper": 1 / 8,
}
NEEDS_FAULT: dict[str, Fault] = {
    "kill-after-change": "kill",
    "kill": "kill",
    "second-agent": "second-agent",
    "lock": "lock",
    "restore-fail": "restore-fail",
    "tamper": "tamper",
}
FIX_AFTER = (1.0, 5.0)
NO_BREAKAGE_IN_LAST = 8.0  # seconds: a broken config is always fixed before the storm ends
KILL_AFTER_CHANGE = (0.0, 0.3)
KILL_INTO_WRITE = (0.11, 0.2)  # measured: the restore runs ~125-190 ms after a change
LOCK_SECONDS = (1.0, 8.0)
RESTORE_FAILURES = (1, 3)
SECOND_AGENT_SECONDS = (3.0, 15.0)
EPISODE_GAP = 3.0  # between two lock / restore-fail episodes
TAMPERS = ("element", "set-flush", "chain-flush", "rule", "table")
"""What a foreign program does to the agent's own nftables table (``tamper``)."""
TAMPER_GAP = 11.0
"""Seconds between tampers, and after a second agent stops before the next: more than the
agent's repair back-off window (10 s), so each tamper is repaired at once, never backed
off as a repeat of the last repair (the two agents' writes are repairs for each other)."""


@dataclass(frozen=True, slots=True)
class Op:
    at: float
    kind: OpKind
    files: Files = ()  # config, broken, fix: the whole ConfigMap after the op
    label: str = ""  # broken: the bad-input class; config: the keys changed; kill: why
    seconds: float = 0.0  # lock, second-agent: for how long
    count: int = 0  # restore-fail: how many restores fail
    target: Target = "primary"  # kill

    def line(self) -> str:
        """One canonical line (contents by digest), for printing and fingerprinting."""
        parts = [f"{self.at:9.3f}", self.kind]
        if self.label:
            parts.append(self.label)
        if self.files:
            parts.append(f"files={files_digest(self.files)}")
        if self.seconds:
            parts.append(f"for={self.seconds:.3f}s")
        if self.count:
            parts.append(f"count={self.count}")
        if self.kind == "kill":
            parts.append(f"target={self.target}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    seconds: float
    faults: frozenset[Fault]
    initial: Files
    ops: tuple[Op, ...]
    scenario: Scenario = "storm"

    def lines(self) -> list[str]:
        head = (
            f"scenario={self.scenario} seed={self.seed} seconds={self.seconds:g}"
            f" faults={','.join(sorted(self.faults))}"
        )
        return [head, f"initial files={files_digest(self.initial)}", *(o.line() for o in self.ops)]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.lines()).encode()).hexdigest()[:16]


def files_digest(files: Files) -> str:
    h = hashlib.sha256()
    for name, content in files:
        data = content.encode() if isinstance(content, str) else content
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return h.hexdigest()[:12]


def _fragment(rng: random.Random) -> str:
    """One random ConfigMap key: some of the keys, YAML or JSON."""
    doc: dict[str, object] = {}
    if rng.random() < 0.8:
        doc["nonMasqueradeCIDRs"] = rng.sample(NON_MASQUERADE_POOL, rng.randint(0, 4))
    if rng.random() < 0.35:
        doc["masqueradeCIDRs"] = rng.sample(MASQUERADE_POOL, rng.randint(1, 2))
    if rng.random() < 0.3:
        doc["masqLinkLocal"] = rng.random() < 0.5
    if rng.random() < 0.25:
        return json.dumps(doc) + "\n"
    lines = []
    for key, value in doc.items():
        if isinstance(value, list):
            lines.append(f"{key}: [{', '.join(value)}]")
        else:
            lines.append(f"{key}: {str(value).lower()}")
    return "".join(f"{line}\n" for line in lines)


def _valid_files(rng: random.Random, current: Files) -> tuple[Files, str]:
    """A new valid ConfigMap: either one key edited, or keys added, removed and rewritten."""
    now = dict(current)
    now.pop(BROKEN_FILE, None)
    if now and rng.random() < 0.5:
        name = rng.choice(sorted(now))
        now[name] = _fragment(rng)
    else:
        now = {MAIN_FILE: _fragment(rng)}
        for name in OPTIONAL_FILES:
            if rng.random() < 0.35:
                now[name] = _fragment(rng)
    files = tuple(sorted(now.items()))
    return files, _key_changes(current, files)


def _key_changes(old: Files, new: Files) -> str:
    before, after = dict(old), dict(new)
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    out = [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]
    return " ".join(out) or "="


class _BadCycle:
    """Every bad-input class in turn (shuffled once per run), so long runs use them all."""

    def __init__(self, rng: random.Random) -> None:
        self.classes: dict[str, Content] = bad_inputs()
        self.order = sorted(self.classes)
        rng.shuffle(self.order)
        self.next = 0

    def take(self, rng: random.Random, current: Files) -> tuple[Files, str]:
        for _ in range(len(self.order)):
            name = self.order[self.next % len(self.order)]
            self.next += 1
            files = dict(current)
            if name == MERGED_LIMIT or rng.random() < 0.6:
                files[BROKEN_FILE] = self.classes[name]  # an operator adds a bad key
            else:  # or edits an existing key into a bad one
                files[rng.choice(sorted(files))] = self.classes[name]
            out = tuple(sorted(files.items()))
            if not read(out).valid:  # only MERGED_LIMIT can happen to be valid
                return out, name
        raise AssertionError("no bad-input class makes this config invalid")


def _arrivals(
    rng: random.Random, seconds: float, faults: frozenset[Fault]
) -> list[tuple[float, str]]:
    out = []
    for kind, rate in sorted(RATES.items()):
        if kind in NEEDS_FAULT and NEEDS_FAULT[kind] not in faults:
            continue
        t = rng.expovariate(rate)
        while t < seconds:
            out.append((t, kind))
            t += rng.expovariate(rate)
    return sorted(out)


class _Builder:
    """Walks the arrivals in time order, turning each into ops and keeping the rules."""

    def __init__(self, rng: random.Random, seconds: float, initial: Files) -> None:
        self.rng = rng
        self.seconds = seconds
        self.bad = _BadCycle(rng)
        self.files = initial
        self.good = initial  # the ConfigMap before the last broken push
        self.ops: list[Op] = []
        self.fix_at: float | None = None  # a broken config is in the dir until then
        self.episodes_free_at = 0.0  # lock / restore-fail episodes never overlap
        self.second_free_at = 0.0
        self.second_until = 0.0
        self.tamper_free_at = 0.0

    def change(self, t: float) -> None:
        self.files, changes = _valid_files(self.rng, self.files)
        self.ops.append(Op(t, "config", self.files, changes))

    def fix_if_due(self, t: float) -> None:
        """The operator fixes a broken push from the last good ConfigMap: rolls it back, or
        edits it anew."""
        if self.fix_at is not None and self.fix_at <= t:
            good = self.good
            if self.rng.random() < 0.5:
                self.ops.append(Op(self.fix_at, "fix", good, _key_changes(self.files, good)))
                self.files = good
            else:
                self.files, _ = _valid_files(self.rng, good)
                self.ops.append(Op(self.fix_at, "fix", self.files, _key_changes(good, self.files)))
            self.fix_at = None

    def arrive(self, t: float, kind: str) -> None:
        self.fix_if_due(t)
        rng = self.rng
        if kind in ("config", "kill-after-change") and self.fix_at is None:
            self.change(t)  # (while a broken push waits for its fix, the operator is busy)
            if kind == "kill-after-change":
                near = KILL_INTO_WRITE if rng.random() < 0.5 else KILL_AFTER_CHANGE
                self.ops.append(Op(t + rng.uniform(*near), "kill", label="after-change"))
        elif kind == "broken" and self.fix_at is None and t <= self.seconds - NO_BREAKAGE_IN_LAST:
            self.good = self.files
            self.files, name = self.bad.take(rng, self.files)
            self.ops.append(Op(t, "broken", self.files, name))
            self.fix_at = t + rng.uniform(*FIX_AFTER)
        elif kind == "kill":
            second = t < self.second_until and rng.random() < 0.3
            self.ops.append(Op(t, "kill", label="random", target="second" if second else "primary"))
        elif kind == "second-agent" and t >= self.second_free_at:
            length = min(rng.uniform(*SECOND_AGENT_SECONDS), self.seconds - t)
            self.ops.append(Op(t, "second-agent", seconds=length))
            self.second_until = t + length
            self.second_free_at = self.second_until + 1.0
        elif kind == "tamper" and t >= max(self.tamper_free_at, self.second_until + TAMPER_GAP):
            self.ops.append(Op(t, "tamper", label=rng.choice(TAMPERS)))
            self.tamper_free_at = t + TAMPER_GAP
        elif kind == "lock" and t >= self.episodes_free_at:
            length = rng.uniform(*LOCK_SECONDS)
            self.ops.append(Op(t, "lock", seconds=length))
            self.episodes_free_at = t + length + EPISODE_GAP
        elif kind == "restore-fail" and t >= self.episodes_free_at:
            self.ops.append(Op(t, "restore-fail", count=rng.randint(*RESTORE_FAILURES)))
            self.episodes_free_at = t + 5.0 + EPISODE_GAP
            if self.fix_at is None and rng.random() < 0.7:  # give the failures a write to hit
                self.change(t + 0.05)


def build(seed: int, seconds: float, faults: Iterable[Fault]) -> Schedule:
    """The schedule for this seed, duration and set of faults (pure and deterministic)."""
    allowed = frozenset(faults)
    rng = random.Random(seed)
    initial, _ = _valid_files(rng, ())
    builder = _Builder(rng, seconds, initial)
    for t, kind in _arrivals(rng, seconds, allowed):
        builder.arrive(t, kind)
    builder.fix_if_due(float("inf"))
    ops = sorted((o for o in builder.ops if o.at < seconds), key=lambda o: o.at)
    return Schedule(seed, seconds, allowed, initial, tuple(ops))


def rolling_update(seed: int, seconds: float) -> Schedule:
    """Not a storm but one situation: a second agent on the chain for the whole run and a
    valid change every 0.3-0.9 s, nothing else, so that both agents keep reacting to the
    same change at the same moment (where the soak found chains that are no config)."""
    rng = random.Random(seed)
    files, _ = _valid_files(rng, ())
    initial = files
    ops = [Op(0.0, "second-agent", seconds=seconds)]
    t = 0.5
    while t < seconds - 1.0:
        files, changes = _valid_files(rng, files)
        ops.append(Op(t, "config", files, changes))
        t += rng.uniform(0.3, 0.9)
    return Schedule(
        seed, seconds, frozenset({"second-agent"}), initial, tuple(ops), "rolling-update"
    )


def scenario(name: Scenario, seed: int, seconds: float, faults: Iterable[Fault]) -> Schedule:
    return build(seed, seconds, faults) if name == "storm" else rolling_update(seed, seconds)


def counts(schedule: Schedule) -> dict[str, int]:
    """Operations by kind (kills split by why), for the summary."""
    out: dict[str, int] = {}
    for op in schedule.ops:
        key = f"kill:{op.label}" if op.kind == "kill" else op.kind
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
