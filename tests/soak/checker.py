"""The checker: pure judgement of everything a run recorded, against the model.

The model at any instant is the last valid config the ConfigMap held (the kubelet's swap
included).  After a change, observations may match the old config, the new one, or any
dir the agent could have read mid-swap, until the change's window closes; outside every
window they must match the current config exactly.  A window closes ``BUDGET`` seconds
after the change, pushed back by whatever kept the agent from applying it: a restart (the
kubelet role's backoff), a broken config in the dir, a held xtables lock, restores made
to fail.  Each of those ends at a recorded time, so every window has a computed end.

Invariants, each a ``Violation`` when broken:

- a probe to a destination the model masquerades arrives with the pod's address outside
  every window (``leak``), or the reverse (``over-masquerade``), or from any other source;
  inside a window, a probe that matches no config in play (however many agents run);
- a snapshot holds a foreign rule, chain, set element or table different from the
  generation its writer last committed (counters aside), or a line or table nobody wrote;
- iptables dataplane: at rest (no window open) our chain differs from the desired one, or
  there is not exactly one POSTROUTING jump to it;
- nftables dataplane: at any time, a table of ours in another family than ``ip``, none in
  ``ip`` (unless a foreign nft deleted it and the repair's window is open), or our chain or
  a jump to it in the iptables nat table; at rest, our table differs from the desired one;
- nftables dataplane: a foreign nft tampers with the agent's table (an element deleted, a
  set or the chain flushed, a rule or the table deleted): the probes must be right again
  ``BUDGET`` after it (the repair comes from the notifications, within a second), unless
  something kept the agent from repairing, as for a change;
- an agent exits with a traceback or other than as documented: -9 only when SIGKILLed,
  0 only when SIGTERMed (within ``TERM_WITHIN``, start-up included; -15 only when the
  TERM beat the interpreter to the agent's first line, so nothing was logged), 1 only with the
  one-line error the library gives for a dir state it could have read (also when a TERM came
  after it chose that exit); or it keeps
  running on a broken dir;
- after the storm the kernel never reaches the desired state, the final snapshot is not
  exactly it, ``--dry-run`` plans a change, or a final probe disagrees.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from integration.agent import error_lines
from integration.expected import DEFAULT_CHAIN
from integration.topology import NODE_UPLINK, POD_IP

from masq import MasqConfig
from soak import kubeproxy, kubeproxy_nft
from soak.catalogue import DESTINATIONS
from soak.events import Probe, Push, RunLog, Snapshot, Tamper, WriterName
from soak.model import (
    EXPECTED_JUMP,
    NFT_TABLE,
    RESYNC_SECONDS,
    expected_chain,
    expected_table,
    possible_reads,
    read,
    verdicts,
)
from soak.nft_view import TableView, parse_ruleset

BUDGET = 2.0
"""Seconds a running, unobstructed agent has to apply a change (start-up included)."""
RECOVERY_BOUND = RESYNC_SECONDS + 1.0 + BUDGET
"""After the storm: one resync (or one retry, capped at the interval), the kubelet's
longest restart backoff (1 s) and the time to apply a change."""
LOCK_GRACE = 1.0
"""Seconds after a held xtables lock is released before a waiting iptables has it."""
FIRST_RETRY = 0.5
"""The agent's first retry backoff after a transient failure; it doubles (operations.md)."""
TERM_WITHIN = 1.5
"""SIGTERM -> exit 0 'within a second' (operations.md), plus the driver's polling slack."""
LOCK_WAIT = 5.0
"""The agent's ``--wait=5``: SIGTERM lets a running iptables finish, even one awaiting the lock."""
REST_MARGIN = 0.5
"""A snapshot is 'at rest' when no window is open from this long before it until its end."""
BUILTIN = ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")
GENERATION = re.compile(r'--comment "soak-generation (\d+)"')
NFT_GENERATION = re.compile(r'comment "soak-generation (\d+)"$')
XTABLES = ("filter", "nat", "mangle", "raw", "security")
"""Tables iptables-nft keeps in nf_tables (in families ip and ip6): written by the iptables
writers, judged through iptables-save."""
CONFIG_ERROR_PREFIX = "ip-masq-agent: "


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float
    why: str


@dataclass(frozen=True, slots=True)
class Window:
    push: Push
    start: float
    end: float
    accept: tuple[frozenset[bool], ...]  # per destination: the verdicts allowed inside
    extended_by: frozenset[str]


@dataclass(frozen=True, slots=True)
class Violation:
    at: float
    kind: str
    text: str


@dataclass
class ProbeStats:
    sent: int = 0
    received: int = 0
    in_windows: int = 0
    during_broken: int = 0
    final: int = 0
    leaks: int = 0
    over_masquerade: int = 0
    alien: int = 0
    masq_by_dest: list[int] = field(default_factory=lambda: [0] * len(DESTINATIONS))
    kept_by_dest: list[int] = field(default_factory=lambda: [0] * len(DESTINATIONS))


@dataclass
class SnapshotStats:
    total: int = 0
    at_rest: int = 0
    double_jumps_seen: int = 0  # nftables: more than one table of ours
    jump_between_foreign: int = 0  # iptables only


@dataclass(frozen=True, slots=True)
class Staleness:
    """How long after a change probes still saw the old verdict, for a change that flips at
    least one destination; ``converged`` False when the next push came first."""

    window: Window
    lag: float
    converged: bool


@dataclass
class Judgement:
    violations: list[Violation]
    windows: list[Window]
    staleness: list[Staleness]  # changes that flip a destination
    probes: ProbeStats
    snapshots: SnapshotStats
    exits: dict[str, int]
    recovery: float | None


# -- the model over time ------------------------------------------------------------------


def _effective(pushes: Sequence[Push]) -> tuple[list[float], list[MasqConfig]]:
    """Times at which the last valid config changed, and the config from then on."""
    times: list[float] = []
    configs: list[MasqConfig] = []
    for p in pushes:
        config = read(p.files).config
        if config is not None:
            times.append(p.start)
            configs.append(config)
    return times, configs


def _at(times: list[float], values: Sequence[MasqConfig], t: float) -> MasqConfig:
    return values[max(bisect.bisect_right(times, t) - 1, 0)]


def retry_backoff(failures: int) -> float:
    return float(min(FIRST_RETRY * 2 ** max(failures - 1, 0), RESYNC_SECONDS))


def obstructions(log: RunLog) -> list[Interval]:
    """When the agent could not apply a change, and why."""
    out = []
    primary = sorted((x for x in log.lives if x.role == "primary"), key=lambda x: x.spawned)
    out += [Interval(a.alive_until, b.spawned, "restart") for a, b in itertools.pairwise(primary)]
    for i, p in enumerate(log.pushes):
        if not read(p.files).valid:
            end = log.pushes[i + 1].start if i + 1 < len(log.pushes) else log.finished
            out.append(Interval(p.start, end, "broken config"))
    out += [Interval(h.requested, h.released + LOCK_GRACE, "xtables lock") for h in log.locks]
    for ep in log.restore_faults:
        fails = [c.at for c in log.restore_calls if c.failed and ep.armed <= c.at <= ep.disarmed]
        if fails:  # nothing is blocked until a restore fails; then until the last one's retry
            last = max(fails) + retry_backoff(len(fails))
            out.append(Interval(min(fails), last, "failing restore"))
    return sorted(out, key=lambda o: o.start)


def window_end(t: float, blocked: Sequence[Interval]) -> tuple[float, frozenset[str]]:
    """``t + BUDGET``, pushed back past every obstruction that overlaps the window so far."""
    end, why = t + BUDGET, set()
    changed = True
    while changed:
        changed = False
        for o in blocked:
            if o.start >= end:
                break  # sorted by start
            if o.end > t and o.end + BUDGET > end:
                end, changed = o.end + BUDGET, True
                why.add(o.why)
    return end, frozenset(why)


def windows(log: RunLog, blocked: Sequence[Interval]) -> list[Window]:
    out = []
    last_valid: MasqConfig | None = None
    for p in log.pushes:
        if last_valid is not None:
            configs = [last_valid]
            configs += [c for r in possible_reads(p.before, p.files) if (c := read(r).config)]
            accept = tuple(
                frozenset(verdicts(c)[d] for c in configs) for d in range(len(DESTINATIONS))
            )
            end, why = window_end(p.start, blocked)
            out.append(Window(p, p.start, end, accept, why))
        last_valid = read(p.files).config or last_valid
    return out


def tamper_windows(log: RunLog) -> list[tuple[Tamper, float]]:
    """Each tamper that changed the agent's table, and when its window closes: ``BUDGET``
    after it (a repair within a second, and the probes' own latency), pushed back past
    whatever kept the agent from repairing (a restart, a broken config, failing nft
    batches).  Inside, any verdict goes for every destination; after, the repair is whole."""
    blocked = obstructions(log)
    return [(t, window_end(t.end, blocked)[0]) for t in log.tampers if t.rc == 0]


def _merged(intervals: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    starts: list[float] = []
    ends: list[float] = []
    for s, e in sorted(intervals):
        if starts and s <= ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


def _inside(merged: tuple[list[float], list[float]], t: float) -> bool:
    starts, ends = merged
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and t <= ends[i]


# -- probes -------------------------------------------------------------------------------


def _masqueraded(probe: Probe) -> bool | None:
    return {NODE_UPLINK: True, POD_IP: False}.get(probe.source)


def judge_probes(
    log: RunLog, wins: Sequence[Window], out: list[Violation]
) -> tuple[ProbeStats, list[Staleness]]:
    """Each probe against the model, whatever else ran (two agents included: agents on one
    node serialise their writes, so a second one never excuses a wrong packet)."""
    times, configs = _effective(log.pushes)
    stats = ProbeStats(sent=log.probes_sent, received=len(log.probes))
    tampered = [(t.start, end) for t, end in tamper_windows(log)]
    lenient = {
        (d, v): _merged([*((w.start, w.end) for w in wins if v in w.accept[d]), *tampered])
        for d in range(len(DESTINATIONS))
        for v in (False, True)
    }
    any_window = _merged([*((w.start, w.end) for w in wins), *tampered])
    broken = _merged(
        (p.start, log.pushes[i + 1].start if i + 1 < len(log.pushes) else log.finished)
        for i, p in enumerate(log.pushes)
        if not read(p.files).valid
    )
    final_from = (log.recovered_at or log.finished) + BUDGET
    by_dest: list[list[tuple[float, bool]]] = [[] for _ in DESTINATIONS]
    for probe in sorted(log.probes, key=lambda p: p.sent):
        seen = _masqueraded(probe)
        dest = DESTINATIONS[probe.dest]
        if seen is None:
            stats.alien += 1
            out.append(
                Violation(
                    probe.sent, "alien", f"probe {probe.seq} to {dest} arrived from {probe.source}"
                )
            )
            continue
        (stats.masq_by_dest if seen else stats.kept_by_dest)[probe.dest] += 1
        by_dest[probe.dest].append((probe.sent, seen))
        stats.in_windows += _inside(any_window, probe.sent)
        stats.during_broken += _inside(broken, probe.sent)
        stats.final += probe.sent >= final_from
        if any(
            verdicts(_at(times, configs, t))[probe.dest] == seen
            or _inside(lenient[(probe.dest, seen)], t)
            for t in (probe.sent, probe.received)
        ):
            continue
        in_window = _inside(any_window, probe.sent)
        agents = sum(1 for x in log.lives if x.spawned <= probe.sent <= x.alive_until)
        kind = "leak" if not seen else "over-masquerade"
        text = (
            f"probe {probe.seq} to {dest} arrived from {probe.source}; the model says"
            f" {'masquerade' if not seen else 'keep the pod address'}"
            + (f" ({agents} agents running)" if agents >= 2 else "")
        )
        if seen:
            stats.over_masquerade += 1
        else:
            stats.leaks += 1
        if in_window:
            kind, text = f"{kind} in a window", f"{text} (no config in play matches)"
        out.append(Violation(probe.sent, kind, text))
    return stats, staleness(log, wins, by_dest)


def staleness(
    log: RunLog, wins: Sequence[Window], by_dest: Sequence[Sequence[tuple[float, bool]]]
) -> list[Staleness]:
    times, configs = _effective(log.pushes)
    out = []
    for i, w in enumerate(wins):
        new = read(w.push.files).config
        if new is None:
            continue
        until = wins[i + 1].start if i + 1 < len(wins) else log.finished
        old = _at(times, configs, w.start - 1e-9)
        want = verdicts(new)
        flips = [d for d in range(len(DESTINATIONS)) if want[d] != verdicts(old)[d]]
        if not flips:
            continue
        lag, converged = 0.0, True
        for d in flips:
            seen = by_dest[d]
            lo = bisect.bisect_left(seen, (w.start, False))
            window = seen[lo : bisect.bisect_left(seen, (until, False))]
            stale = [k for k, (_, v) in enumerate(window) if v != want[d]]
            if stale:
                lag = max(lag, window[stale[-1]][0] - w.start)
                converged = converged and stale[-1] + 1 < len(window)
        out.append(Staleness(w, lag, converged))
    return out


# -- snapshots ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NatView:
    declared: dict[str, str]  # chain -> policy ('-' for user chains)
    rules: dict[str, list[str]]  # chain -> its -A lines, in order
    other: list[str]


def nat_view(text: str) -> NatView:
    declared: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    other = []
    for line in text.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            declared[name] = policy
        elif line.startswith("-A "):
            rules.setdefault(line.split()[1], []).append(line)
        elif line.strip() not in ("", "*nat", "COMMIT"):
            other.append(line)
    return NatView(declared, rules, other)


def _jumps(view: NatView) -> list[str]:
    return [r for r in view.rules.get("POSTROUTING", []) if r.endswith(f" -j {DEFAULT_CHAIN}")]


def _ours(tables: dict[tuple[str, str], TableView]) -> list[tuple[str, str]]:
    return sorted(key for key in tables if key[1] == NFT_TABLE[1])


def ours_problems(dataplane: str, nat: str, nft: str, config: MasqConfig) -> list[str]:
    """How what the agent owns differs from the desired state for ``config``.

    iptables: our chain and exactly one POSTROUTING jump to it.  nftables: exactly one
    table of ours, in family ``ip``, holding exactly the desired sets and chains, and
    nothing of ours left in the iptables nat table.
    """
    problems = []
    if dataplane == "nftables":
        tables = parse_ruleset(nft)
        if _ours(tables) != [NFT_TABLE]:
            problems.append(f"tables of ours: {_ours(tables)}, desired only {NFT_TABLE}")
        want = expected_table(config)
        have = tables.get(NFT_TABLE)
        if have is not None and have != want:
            problems.append(f"our table differs: {table_difference(have, want)}")
        view = nat_view(nat)
        if DEFAULT_CHAIN in view.declared or _jumps(view):
            problems.append(f"our iptables chain or its jump exist: {_jumps(view)}")
        return problems
    view = nat_view(nat)
    chain = view.rules.get(DEFAULT_CHAIN, [])
    if chain != expected_chain(config):
        problems.append(f"our chain is {chain}, desired {expected_chain(config)}")
    jumps = _jumps(view)
    if jumps != [EXPECTED_JUMP]:
        problems.append(f"{len(jumps)} POSTROUTING jumps to our chain: {jumps}")
    return problems


def table_difference(have: TableView, want: TableView) -> str:
    """What differs between two tables, briefly (first few of each kind)."""
    out = []
    for what, a, b in (
        ("chains", have.chains, want.chains),
        ("set declarations", have.declarations, want.declarations),
    ):
        differ = sorted(n for n in a.keys() | b.keys() if a.get(n) != b.get(n))
        if differ:
            first = differ[0]
            out.append(f"{what} {differ[:5]} (first {first}: {a.get(first)} != {b.get(first)})")
    for name in sorted(have.elements.keys() | want.elements.keys()):
        got, exp = have.elements.get(name, frozenset()), want.elements.get(name, frozenset())
        if got != exp:
            out.append(
                f"set {name}: extra {sorted(got - exp)[:5]}, missing {sorted(exp - got)[:5]}"
            )
    if have.other != want.other:
        out.append(f"other objects {have.other[:5]}")
    return "; ".join(out) or "nothing"


def _allowed_generations(log: RunLog, writer: WriterName, start: float, end: float) -> set[int]:
    """The generations ``writer`` may have left in a snapshot taken in [start, end]: the
    last one applied before it began, or one applied while it was being taken."""
    ok = [w for w in log.foreign if w.writer == writer and w.restore_rc == 0]
    done = [w.gen for w in ok if w.end <= start]
    allowed = {w.gen for w in ok if w.start < end}
    return {g for g in allowed if not done or g >= max(done)}


def _written_during(log: RunLog, writer: WriterName, start: float, end: float) -> bool:
    """Whether ``writer`` committed while the snapshot was taken.  A listing is a netlink
    dump, and a dump that races a commit can skip rules (seen: a chain of generation 15
    missing a run of its rules, listed 6 ms into that generation's write), so the chains'
    content is judged only from snapshots no foreign write overlapped; the generation
    marker is still checked on every one."""
    return any(w.writer == writer and w.start < end and w.end > start for w in log.foreign)


def foreign_problems(view: NatView, seed: int, log: RunLog, start: float, end: float) -> list[str]:
    """Foreign chains and hooks must be exactly a generation the writer may have left."""
    problems = []
    services = view.rules.get(kubeproxy.SERVICES, [])
    marker = GENERATION.search(services[-1]) if services else None
    if marker is None:
        return [f"no generation marker in {kubeproxy.SERVICES}: {services[-1:]}"]
    gen = int(marker.group(1))
    allowed = _allowed_generations(log, "iptables", start, end)
    if gen not in allowed:
        problems.append(f"generation {gen} in the table; the writer last wrote {sorted(allowed)}")
    want = kubeproxy.generation(seed, gen)
    have = {n: view.rules.get(n, []) for n in view.declared if n.startswith(kubeproxy.PREFIX)}
    if have != want and not _written_during(log, "iptables", start, end):
        missing = sorted(want.keys() - have.keys())
        extra = sorted(have.keys() - want.keys())
        changed = sorted(n for n in want.keys() & have.keys() if want[n] != have[n])
        problems.append(
            f"foreign chains differ from generation {gen}: missing {missing[:5]},"
            f" extra {extra[:5]}, changed {changed[:5]}"
            + (f" (first: {have[changed[0]]} != {want[changed[0]]})" if changed else "")
        )
    hooks = [r for c in BUILTIN for r in view.rules.get(c, []) if f" -j {kubeproxy.PREFIX}" in r]
    if sorted(hooks) != sorted(kubeproxy.hook_lines()):
        problems.append(f"foreign hooks are {hooks}, written {kubeproxy.hook_lines()}")
    return problems


def foreign_table_problems(
    tables: dict[tuple[str, str], TableView], seed: int, log: RunLog, start: float, end: float
) -> list[str]:
    """The nft writer's table must be exactly a generation it may have left (counters aside)."""
    have = tables.get((kubeproxy_nft.FAMILY, kubeproxy_nft.TABLE))
    if have is None:
        return [f"no table {kubeproxy_nft.FAMILY} {kubeproxy_nft.TABLE}"]
    services = have.chains.get("services", ())
    marker = NFT_GENERATION.search(services[-1]) if services else None
    if marker is None:
        return [f"no generation marker in the foreign table's services: {services[-1:]}"]
    gen = int(marker.group(1))
    problems = []
    allowed = _allowed_generations(log, "nft", start, end)
    if gen not in allowed:
        problems.append(
            f"foreign table at generation {gen}; the writer last wrote {sorted(allowed)}"
        )
    want = kubeproxy_nft.generation(seed, gen)
    written = TableView(
        kubeproxy_nft.FAMILY,
        kubeproxy_nft.TABLE,
        chains=want.chains,
        declarations=dict(kubeproxy_nft.SETS),
        elements=want.elements,
    )
    if have != written:
        problems.append(
            f"foreign table differs from generation {gen}: {table_difference(have, written)}"
        )
    return problems


def stray_lines(view: NatView, *, ours: bool = True) -> list[str]:
    """Lines neither we (``ours``: in this dataplane), the foreign writer nor the kernel's
    defaults account for."""
    known_chains = {*BUILTIN, DEFAULT_CHAIN} if ours else set(BUILTIN)
    stray = list(view.other)
    stray += [
        f":{n}"
        for n in view.declared
        if n not in known_chains and not n.startswith(kubeproxy.PREFIX)
    ]
    stray += [
        r
        for c in BUILTIN
        for r in view.rules.get(c, [])
        if not (ours and r.endswith(f" -j {DEFAULT_CHAIN}")) and f" -j {kubeproxy.PREFIX}" not in r
    ]
    stray += [r for c, rs in view.rules.items() if c not in view.declared for r in rs]
    return stray


def stray_tables(tables: dict[tuple[str, str], TableView]) -> list[str]:
    """nftables tables nobody in the run wrote."""
    known = {NFT_TABLE, (kubeproxy_nft.FAMILY, kubeproxy_nft.TABLE)}
    return [
        f"{family} {name}"
        for family, name in sorted(tables)
        if (family, name) not in known
        and not (family in ("ip", "ip6") and name in XTABLES)
        and name != NFT_TABLE[1]  # ours in another family: judged as ours
    ]


def snapshot_problems(
    snap: Snapshot, seed: int, log: RunLog, desired: MasqConfig | None
) -> list[str]:
    """Everything wrong with one snapshot; ``desired`` None means 'not at rest'."""
    view = nat_view(snap.text)
    problems = foreign_problems(view, seed, log, snap.start, snap.end)
    nftables = log.dataplane == "nftables"
    problems += [f"stray line: {line}" for line in stray_lines(view, ours=not nftables)]
    if nftables:
        tables = parse_ruleset(snap.nft)
        problems += foreign_table_problems(tables, seed, log, snap.start, snap.end)
        problems += [f"stray table: {t}" for t in stray_tables(tables)]
        deleted = any(  # a foreign nft deleted it, and the repair's window is open
            t.kind == "table" and t.start <= snap.end and snap.start <= end
            for t, end in tamper_windows(log)
        )
        if _ours(tables) != [NFT_TABLE] and not (deleted and _ours(tables) == []):
            problems.append(f"tables of ours: {_ours(tables)}, only {NFT_TABLE} allowed")
    if desired is not None:
        problems += ours_problems(log.dataplane, snap.text, snap.nft, desired)
    return problems


def judge_snapshots(log: RunLog, wins: Sequence[Window], out: list[Violation]) -> SnapshotStats:
    times, configs = _effective(log.pushes)
    tampered = [(t.start, end) for t, end in tamper_windows(log)]
    open_windows = _merged([*((w.start, w.end) for w in wins), *tampered])
    starts, ends = open_windows
    stats = SnapshotStats()
    for snap in log.snapshots:
        stats.total += 1
        i = bisect.bisect_left(ends, snap.start - REST_MARGIN)
        at_rest = snap.phase != "settle" and not (i < len(starts) and starts[i] <= snap.end)
        stats.at_rest += at_rest
        desired = _at(times, configs, snap.start) if at_rest else None
        for problem in snapshot_problems(snap, log.seed, log, desired):
            out.append(Violation(snap.start, f"table ({snap.phase})", problem))
        if log.dataplane == "nftables":
            stats.double_jumps_seen += len(_ours(parse_ruleset(snap.nft))) > 1
            continue
        post = nat_view(snap.text).rules.get("POSTROUTING", [])
        jumps = _jumps(nat_view(snap.text))
        stats.double_jumps_seen += len(jumps) > 1
        names = [r.split('--comment "')[-1].split('"')[0] for r in post]
        if (
            len(jumps) == 1
            and "soak kube-proxy before" in names
            and "soak kube-proxy after" in names
        ):
            mine = post.index(jumps[0])
            before = names.index("soak kube-proxy before")
            stats.jump_between_foreign += before < mine < names.index("soak kube-proxy after")
    return stats


# -- exits --------------------------------------------------------------------------------


def _reads_during(log: RunLog, start: float, end: float) -> list[str]:
    """The config errors of every dir state an agent alive in [start, end] could have read."""
    errors = []
    current: Push | None = None
    for p in log.pushes:
        if p.start <= start:
            current = p
        if p.end >= start and p.start <= end:
            for files in possible_reads(p.before, p.files):
                if (e := read(files).error) is not None:
                    errors.append(e)
    if current is not None and (e := read(current.files).error) is not None:
        errors.append(e)
    return errors


def judge_exits(log: RunLog, blocked: Sequence[Interval], out: list[Violation]) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    for life in log.lives:
        who = f"{life.role} agent #{life.index}"
        if "Traceback" in life.log:
            out.append(Violation(life.ended, "traceback", f"{who}: {life.log[-2000:]}"))
        code = life.returncode
        if code == -9 and life.signal == "KILL":
            count("SIGKILLed")
        elif code == -15 and life.signal == "TERM" and not life.log.strip():
            # TERM before Python ran our first line (operations.md, Signals): the
            # default action; with the handler installed first, nothing was logged or done.
            count("ended by SIGTERM during interpreter start-up")
        elif code == 0 and life.signal == "TERM":
            count("exit 0 on SIGTERM")
            signalled = life.signalled_at or life.ended
            took = life.ended - signalled
            locked = any(h.requested <= signalled <= h.released for h in log.locks)
            if took > TERM_WITHIN + (LOCK_WAIT if locked else 0.0):
                out.append(Violation(life.ended, "exit", f"{who}: SIGTERM took {took:.2f}s"))
        elif code == 1 and life.signal in (None, "TERM", "KILL"):
            # A TERM that arrives once the agent has chosen exit 1 (its one line printed,
            # the handler gone: operations.md, Signals) leaves that code; before, it is 0.
            # A KILL sent while the agent was already exiting (it had printed its one line
            # and was leaving the interpreter) finds nothing to kill: the code stays 1.
            errors = error_lines(life.log)
            reasons = {
                CONFIG_ERROR_PREFIX + e for e in _reads_during(log, life.spawned, life.ended)
            }
            if len(errors) == 1 and errors[0] in reasons:
                count("exit 1 on a broken config")
            else:
                count("exit 1, undocumented")
                out.append(Violation(life.ended, "exit", f"{who}: exit 1 with {errors!r}"))
        else:
            count(f"exit {code}")
            out.append(
                Violation(
                    life.ended,
                    "exit",
                    f"{who}: exit {code} (sent {life.signal}): {life.log[-800:]}",
                )
            )
    _kept_running_on_broken(log, blocked, out)
    return dict(sorted(counts.items()))


def _kept_running_on_broken(log: RunLog, blocked: Sequence[Interval], out: list[Violation]) -> None:
    """An agent must leave a dir that stays broken, within a window's time of seeing it."""
    others = [o for o in blocked if o.why != "broken config"]
    for i, p in enumerate(log.pushes):
        if read(p.files).valid:
            continue
        fixed = log.pushes[i + 1].start if i + 1 < len(log.pushes) else log.finished
        for life in log.lives:
            if life.spawned >= fixed or life.alive_until <= p.end:
                continue
            deadline, _ = window_end(max(p.end, life.spawned), others)
            if deadline < fixed and life.alive_until > deadline:
                out.append(
                    Violation(
                        deadline,
                        "kept running",
                        f"{life.role} agent #{life.index} still running"
                        f" {life.alive_until - p.end:.2f}s after the broken push ({p.label})",
                    )
                )


# -- after the storm ----------------------------------------------------------------------


def judge_final(log: RunLog, out: list[Violation]) -> float | None:
    final = _effective(log.pushes)[1][-1]
    if log.recovered_at is None:
        out.append(
            Violation(log.storm_end, "recovery", "the kernel never reached the desired state")
        )
    elif log.recovered_at - log.storm_end > RECOVERY_BOUND:
        took = log.recovered_at - log.storm_end
        out.append(
            Violation(
                log.recovered_at,
                "recovery",
                f"the desired state took {took:.2f}s after the storm, more than one resync"
                f" ({RECOVERY_BOUND:g}s)",
            )
        )
    finals = [s for s in log.snapshots if s.phase == "final"]
    if not finals:
        out.append(Violation(log.finished, "final", "no final snapshot"))
    for snap in finals:
        for problem in ours_problems(log.dataplane, snap.text, snap.nft, final):
            out.append(Violation(snap.start, "final", problem))
    if log.dry_run is None:
        out.append(Violation(log.finished, "final", "no --dry-run after the storm"))
    else:
        code, stdout, stderr = log.dry_run
        changes = [ln for ln in stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        if code != 0 or "in sync, nothing to do" not in stdout or changes or "Traceback" in stderr:
            out.append(
                Violation(
                    log.finished, "final", f"--dry-run exit {code}: {stdout!r} {stderr[-500:]!r}"
                )
            )
    return None if log.recovered_at is None else log.recovered_at - log.storm_end


NETLINK_PATH = "nftables: elements over netlink"


def judge_paths(log: RunLog, out: list[Violation]) -> None:
    """In nftables mode every agent that got as far as its config reads and writes the
    elements over netlink and watches the notifications: the soak covers that path."""
    if log.dataplane != "nftables":
        return
    for life in log.lives:
        if "config loaded" in life.log and NETLINK_PATH not in life.log:
            who = f"{life.role} agent #{life.index}"
            out.append(Violation(life.ended, "path", f"{who} did not use netlink"))
        elif "config loaded" in life.log and "notifications=watched" not in life.log:
            who = f"{life.role} agent #{life.index}"
            out.append(Violation(life.ended, "path", f"{who} did not watch notifications"))


def judge(log: RunLog) -> Judgement:
    violations: list[Violation] = []
    blocked = obstructions(log)
    wins = windows(log, blocked)
    probes, stale = judge_probes(log, wins, violations)
    snaps = judge_snapshots(log, wins, violations)
    exits = judge_exits(log, blocked, violations)
    judge_paths(log, violations)
    recovery = judge_final(log, violations)
    if probes.final == 0:
        violations.append(Violation(log.finished, "final", "no probe after recovery"))
    violations.sort(key=lambda v: v.at)
    return Judgement(violations, wins, stale, probes, snaps, exits, recovery)
