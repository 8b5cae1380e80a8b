"""The summary a reader can trust: what ran, what was injected, what was seen, what broke.

Times in the summary are seconds after the storm started (``+12.345``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from soak.catalogue import DESTINATIONS
from soak.checker import Judgement, Violation
from soak.events import RunLog
from soak.model import read, verdicts
from soak.schedule import Schedule

TIMELINE_BEFORE = 4.0
TIMELINE_AFTER = 1.0
NAMED_REPAIR = re.compile(r'msg="foreign change[^"]*" by="?pid ')
"""A repair line naming the process whose commit it repairs (not "notifications lost")."""


def _pct(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return (
        f"n={len(values)} p50 {_pct(values, 0.5):.3f}s p99 {_pct(values, 0.99):.3f}s"
        f" max {max(values):.3f}s"
    )


def replay_command(log: RunLog) -> str:
    scenario = "" if log.scenario == "storm" else f" --scenario {log.scenario}"
    return (
        f"python -m tests.soak --seed {log.seed} --seconds {log.seconds:g}"
        f" --dataplane {log.dataplane} --backend {log.backend}{scenario}"
    )


def summary(log: RunLog, verdict: Judgement, schedule: Schedule) -> str:
    out = [
        *_what_ran(log, verdict, schedule),
        *_what_was_seen(log, verdict),
        *_outcome(log, verdict),
        "RESULT: " + ("PASS" if not verdict.violations else "FAIL"),
    ]
    return "\n".join(out)


def _writes(log: RunLog) -> tuple[str, str]:
    """What the agent's writes are called in this dataplane (singular, plural)."""
    return ("nft batch", "nft batches") if log.dataplane == "nftables" else ("restore", "restores")


def _what_ran(log: RunLog, verdict: Judgement, schedule: Schedule) -> list[str]:
    out = [
        f"=== soak summary: {log.dataplane}/{log.backend} {log.scenario} seed={log.seed}"
        f" {log.seconds:g}s"
        f" schedule={schedule.digest} ({len(schedule.ops)} ops)",
        f"replay: {replay_command(log)}",
        "operations: " + ", ".join(f"{k} {v}" for k, v in log.op_counts.items()),
    ]
    swaps = [p for p in log.pushes if p.kind != "initial"]
    added = sum(1 for p in swaps for n in dict(p.files).keys() - dict(p.before).keys())
    removed = sum(1 for p in swaps for n in dict(p.before).keys() - dict(p.files).keys())
    broken = sorted({p.label for p in swaps if p.kind == "broken"})
    out.append(
        f"config: {len(swaps)} kubelet swaps (keys added {added}, removed {removed});"
        f" {len(broken)} broken-input classes pushed: {', '.join(broken) or '-'}"
    )
    kills = [x for x in log.lives if x.signal == "KILL"]
    skipped = sum(1 for n in log.notes if "not running" in n)
    fails = [c for c in log.restore_calls if c.failed]
    lock_seconds = sum(h.released - (h.held or h.requested) for h in log.locks)
    second = sum(b - a for a, b in log.second_agent)
    write, writes = _writes(log)
    writers = ", ".join(
        f"{name} {sum(1 for w in log.foreign if w.writer == name)} generations"
        f" ({sum(1 for w in log.foreign if w.writer == name and (w.restore_rc or w.hooks_rc))}"
        " not applied)"
        for name in sorted({w.writer for w in log.foreign})
    )
    out.append(
        f"faults: SIGKILL {len(kills)} delivered ({sum(x.write_in_flight for x in kills)} with"
        f" a {write} in flight; {skipped} found the agent already down);"
        f" second agent {len(log.second_agent)}x, {second:.1f}s in all;"
        f" xtables lock held {len(log.locks)}x, {lock_seconds:.1f}s in all;"
        f" {writes} failed {len(fails)} of {len(log.restore_calls)}"
        f" ({len(log.restore_faults)} episodes); foreign writers: {writers or 'none'}"
    )
    starts = Counter(x.role for x in log.lives)
    tracebacks = sum("Traceback" in x.log for x in log.lives)
    out.append(
        f"agent: started primary {starts['primary']}x, second {starts['second']}x; exits: "
        + ", ".join(f"{k} {v}" for k, v in verdict.exits.items())
        + f"; tracebacks {tracebacks}"
    )
    return out


def _what_was_seen(log: RunLog, verdict: Judgement) -> list[str]:
    out = []
    p = verdict.probes
    lost = p.sent - p.received
    out.append(
        f"probes: sent {p.sent}, received {p.received} (lost {lost}); inside windows"
        f" {p.in_windows} ({100 * p.in_windows / max(p.received, 1):.0f}%), during broken configs"
        f" {p.during_broken}, after recovery {p.final}; leaks {p.leaks},"
        f" over-masquerades {p.over_masquerade}, other sources {p.alien}"
    )
    out.append(
        "  masqueraded/kept per destination: "
        + ", ".join(
            f"{d} {m}/{k}"
            for d, m, k in zip(DESTINATIONS, p.masq_by_dest, p.kept_by_dest, strict=True)
        )
    )
    if log.dataplane == "nftables":
        logs = [life.log for life in log.lives]
        out.append(
            f"netlink: {sum('elements over netlink' in t for t in logs)} of {len(logs)} agent"
            f" lives; repairs on notifications {sum(t.count('foreign change') for t in logs)},"
            f" of them after lost notifications {sum(t.count('notifications lost') for t in logs)},"
            f" naming who {sum(len(NAMED_REPAIR.findall(t)) for t in logs)}"
        )
        kinds = Counter(t.kind for t in log.tampers if t.rc == 0)
        out.append(
            f"tampers with our table: {sum(kinds.values())} of {len(log.tampers)} applied ("
            + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none")
            + "), each judged by the probes after its window"
        )
    wins = verdict.windows
    plain = [w for w in wins if not w.extended_by]
    restarts = [w.end - w.start for w in wins if w.extended_by == {"restart"}]
    faulted = [w.end - w.start for w in wins if w.extended_by - {"restart"}]
    reasons = Counter(r for w in wins for r in w.extended_by)
    out.append(
        f"windows: {len(wins)} changes: {len(plain)} closed 2 s after the change;"
        f" {len(restarts)} extended by restarts only (max {max(restarts, default=0):.2f}s);"
        f" {len(faulted)} by faults (max {max(faulted, default=0):.2f}s); extensions: "
        + (", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none")
    )
    stale = verdict.staleness
    converged = [x for x in stale if x.converged]
    out.append(
        f"  staleness (change -> last probe with the old verdict) of {len(stale)} changes that"
        f" flip a destination: {len(converged)} converged before the next push,"
        f" {_spread([x.lag for x in converged])}; of those, without any extension"
        f" {_spread([x.lag for x in converged if not x.window.extended_by])}, restarts only"
        f" {_spread([x.lag for x in converged if x.window.extended_by == {'restart'}])}"
    )
    s = verdict.snapshots
    if log.dataplane == "nftables":
        out.append(
            f"tables: {s.total} snapshots, {s.at_rest} at rest; more than one table of ours in"
            f" {s.double_jumps_seen} (none allowed at any time)"
        )
    else:
        out.append(
            f"table: {s.total} snapshots, {s.at_rest} at rest; double jumps seen"
            f" {s.double_jumps_seen} (none allowed at rest); our jump between the foreign ones"
            f" in {s.jump_between_foreign}"
        )
    return out


def _outcome(log: RunLog, verdict: Judgement) -> list[str]:
    t0 = log.storm_start
    out = []
    recovery = "never" if verdict.recovery is None else f"{verdict.recovery:.2f}s"
    dry = "missing" if log.dry_run is None else f"exit {log.dry_run[0]}"
    dry_lines = [] if log.dry_run is None else log.dry_run[1].strip().splitlines()
    out.append(
        f"after the storm: desired state reached in {recovery}; --dry-run {dry}: {dry_lines}"
    )
    out.append(f"violations: {len(verdict.violations)}")
    if verdict.violations:
        by_kind = Counter(v.kind for v in verdict.violations)
        out.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
        out += [f"  {v.at - t0:+9.3f} {v.kind}: {v.text}" for v in verdict.violations[:10]]
        out.append("first violation's timeline:")
        out += timeline(log, verdict, verdict.violations[0])
    return out


def timeline(log: RunLog, verdict: Judgement, first: Violation) -> list[str]:
    """Everything that happened shortly before (and just after) ``first``."""
    t0 = log.storm_start
    lo, hi = first.at - TIMELINE_BEFORE, first.at + TIMELINE_AFTER
    rows: list[tuple[float, str]] = []
    for push in log.pushes:
        if lo <= push.start <= hi:
            reading = read(push.files)
            what = (
                "valid, masquerades " + "".join("M" if v else "k" for v in verdicts(reading.config))
                if reading.config is not None
                else f"INVALID: {reading.error}"
            )
            rows.append((push.start, f"push {push.kind} {push.label}: {what}"))
    for life in log.lives:
        if lo <= life.spawned <= hi:
            rows.append((life.spawned, f"{life.role} agent #{life.index} spawned"))
        if life.signalled_at is not None and lo <= life.signalled_at <= hi:
            rows.append(
                (life.signalled_at, f"{life.role} agent #{life.index} sent SIG{life.signal}")
            )
        if lo <= life.ended <= hi:
            rows.append(
                (life.ended, f"{life.role} agent #{life.index} gone, exit {life.returncode}")
            )
    for hold in log.locks:
        for at, what in ((hold.requested, "requested"), (hold.released, "released")):
            if lo <= at <= hi:
                rows.append((at, f"xtables lock {what}"))
    write, _ = _writes(log)
    for call in log.restore_calls:
        if lo <= call.at <= hi:
            rows.append((call.at, f"{write} {'FAILED (injected)' if call.failed else 'ran'}"))
    for tamper in log.tampers:
        if lo <= tamper.start <= hi:
            rows.append((tamper.start, f"tamper {tamper.kind} (nft exit {tamper.rc})"))
    for w in verdict.windows:
        if w.start <= first.at <= w.end:
            rows.append(
                (w.start, f"window opens (closes {w.end - t0:+.3f}, {sorted(w.extended_by)})")
            )
    for v in verdict.violations:
        if lo <= v.at <= hi:
            rows.append((v.at, f"VIOLATION {v.kind}: {v.text}"))
    rows.sort()
    return [f"  {at - t0:+9.3f} {text}" for at, text in rows[:80]]
