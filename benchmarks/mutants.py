# ruff: noqa: E501  (one mutant per line reads better than wrapped strings)
"""Hand-made mutation test of masq/core: does the fast suite notice a wrong core?

Each mutant is one textual change to one core file that changes behaviour (an off-by-one,
a dropped guard, a swapped argument).  They are applied one at a time, in place, and the
unit and property suites that exercise the core run against each with the default
hypothesis profile and an empty hypothesis database (a fresh directory per mutant, so no
failure found for one mutant is replayed for the next).  A mutant is killed when pytest
fails.  Tests that need root and a kernel (the ``netns`` fixture) are left out, so the
figure is what a developer's fast run catches on any machine.

The original file is written back in ``finally`` (Ctrl-C and SIGTERM included), its
timestamps restored and no bytecode written for a mutant, so nothing of one survives the
run; a backup under benchmarks/results/ also lets the next run undo a run that was killed
outright.  A mutant whose text no longer occurs (the core moved on) is reported as stale
and left out of the total.

Run: .venv/bin/python benchmarks/mutants.py [--only SUBSTRING] [--list]
Writes benchmarks/results/mutants.txt.  Doubles as the pytest plugin (``-p mutants``)
that deselects the root-only tests in each run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "masq" / "core"
RESULT = ROOT / "benchmarks" / "results" / "mutants.txt"
BACKUP = ROOT / "benchmarks" / "results" / ".mutant-backup.json"

SUITES = [
    "tests/properties",
    "tests/unit/test_mutants_core.py",
    "tests/unit/test_fragment_cases.py",
    "tests/unit/test_upstream_config.py",
    "tests/unit/test_upstream_rules.py",
    "tests/unit/test_explain.py",
    "tests/unit/test_explain_nft.py",
    "tests/unit/test_public_api.py",
    "tests/unit/test_metrics.py",  # the shell's reading of the core's traffic counters
]
"""The unit stage's suites that exercise the core (the shell's own tests are left out)."""


@dataclass(frozen=True, slots=True)
class Mutant:
    module: str  # path under masq/core
    old: str  # must occur exactly once in the file
    new: str
    what: str


MUTANTS = [
    # duration
    Mutant("duration.py", "    if hours or minutes:", "    if minutes:", "1h5s: the zero minutes dropped"),
    Mutant("duration.py", "    ns = int(total)", "    ns = round(total)", "sub-nanosecond rounded, not cut"),
    Mutant("duration.py", "if total > _MAX_NS:", "if total >= _MAX_NS:", "Go's largest duration refused"),
    # plain, fragment
    Mutant("plain.py", "                parse_constant=_reject_constant,\n", "", "JSON NaN/Infinity as floats"),
    Mutant("plain.py", "        return [_to_plain(v) for v in value]", "        return value", "JSON lists not converted"),
    Mutant("fragment.py", "    if isinstance(value, bool):\n        return Success(value)", "    if isinstance(value, int):\n        return Success(value)", "a boolean key takes integers"),
    Mutant("fragment.py", "    if value < 0:", "    if value <= 0:", "cidrLimit 0 refused"),
    Mutant("fragment.py", "    if key in seen:", "    if key in seen and False:", "duplicate keys accepted"),
    Mutant("fragment.py", "    if len(raw) > MAX_FRAGMENT_BYTES:", "    if len(raw) > MAX_FRAGMENT_BYTES + 1:", "size limit off by one"),
    # addresses
    Mutant("addresses.py", "return (net.version, int(net.network_address), net.prefixlen)", "return (net.version, net.prefixlen, int(net.network_address))", "canonical order by prefix first"),
    Mutant("addresses.py", "        if version == end[0] and last <= end[1]:", "        if version == end[0] and last < end[1]:", "a CIDR covering its last address kept"),
    # merge
    Mutant("merge.py", "first <= out[-1][2] + 1", "first <= out[-1][2]", "adjacent spans not joined"),
    Mutant("merge.py", "    for prefix in range(net.prefixlen):", "    for prefix in range(net.prefixlen - 1):", "immediate supernet unnamed"),
    Mutant("merge.py", "lambda f: f.masq_link_local, _bool_text, max, _OR)", "lambda f: f.masq_link_local, _bool_text, min, _OR)", "masqLinkLocal: AND"),
    Mutant("merge.py", 'str, min, "the smallest wins")', 'str, max, "the smallest wins")', "cidrLimit: the largest"),
    Mutant("merge.py", "    if count <= limit:", "    if count < limit:", "cidrLimit met exactly refused"),
    Mutant("merge.py", "if setters else sorted_cidrs(default)", "if frags else sorted_cidrs(default)", "v2's dropped defaults"),
    Mutant("merge.py", "union[i][2] < last:", "union[i][2] <= last:", "coverage ending on the last address missed"),
    Mutant("merge.py", "return _Resolved(value, (_conflict(self.key, shown, f\"{self.rule}: {self.text(value)}\"),))", "return _Resolved(value, (_conflict(self.key, shown, f\"{self.rule}: {self.text(max(distinct))}\"),))", "conflict names another value"),
    # decision
    Mutant("decision.py", "link_local=None if masq_link_local(config, family) else LINK_LOCAL[family],", "link_local=LINK_LOCAL[family],", "masqLinkLocal ignored"),
    Mutant("decision.py", 'return self.step(ip) in ("masquerade", "default")', 'return self.step(ip) == "default"', "masqueradeCIDRs keep their source"),
    Mutant("decision.py", 'ipaddress.IPv6Network("fe80::/10")', 'ipaddress.IPv6Network("fe80::/64")', "IPv6 link-local too narrow"),
    # nat
    Mutant("nat.py", "        remaining -= r.size", "        remaining -= 0", "--to-ports shares not proportional"),
    Mutant("nat.py", "math.floor(p * PROBABILITY_SCALE + 0.5)", "math.floor(p * PROBABILITY_SCALE)", "probability truncated, not rounded"),
    Mutant("nat.py", "                if first <= last", "                if first < last", "a one-port range refused"),
    Mutant("nat.py", 'TO_PORTS_PROTOCOLS = ("tcp", "udp", "sctp")', 'TO_PORTS_PROTOCOLS = ("tcp", "udp")', "sctp left out"),
    # iptables codec, rules, plan, evaluate
    Mutant("iptables/codec.py", "    if rule.destination is not None and rule.destination.prefixlen > 0:", "    if rule.destination is not None:", "-d 0.0.0.0/0 rendered"),
    Mutant("iptables/codec.py", "    if not words.done or (ports_text is not None and to_ports is None):", "    if ports_text is not None and to_ports is None:", "trailing words ignored"),
    Mutant("iptables/codec.py", "        elif rule.jump_chain == self.chain:", "        else:", "foreign POSTROUTING rules kept"),
    Mutant("iptables/codec.py", '_ESCAPE = re.compile(r"([\\"\'\\\\])")', '_ESCAPE = re.compile(r"([\\"\\\\])")', "single quotes not escaped"),
    Mutant("iptables/codec.py", 'f"{rule.probability:.11f}"', 'f"{rule.probability:.10f}"', "probability with 10 decimals"),
    Mutant("iptables/codec.py", 'if tokens[i][0] == "-c" and (i == 0 or tokens[i - 1][0] not in _STRING_OPTIONS):', 'if tokens[i][0] == "-c":', "a -c comment read as counters"),
    Mutant("iptables/rules.py", 'keeps += [("non-masquerade", n) for n in decision.non_masquerade if n != decision.link_local]', 'keeps += [("non-masquerade", n) for n in decision.non_masquerade]', "link-local RETURN written twice"),
    Mutant("iptables/rules.py", "    for net in decision.masquerade:", "    for net in decision.masquerade[:1]:", "only the first exception"),
    Mutant("iptables/plan.py", "        if rule == keep and not kept:", "        if rule == keep:", "duplicate jumps kept"),
    Mutant("iptables/plan.py", "        DeleteRuleAt(chain, oi + 1)", "        DeleteRuleAt(chain, oi)", "delete positions from 0"),
    Mutant("iptables/plan.py", "else InsertRule(chain, di + 1, rule))", "else InsertRule(chain, di, rule))", "insert positions from 0"),
    Mutant("iptables/evaluate.py", "    return rule.destination is None or ip in rule.destination", "    return rule.destination is not None and ip in rule.destination", "a rule without -d never matches"),
    Mutant("iptables/traffic.py", "            cidr = str(every_destination(ruleset.family) if net is None else net)", '            cidr = str(net)', "catch-all counted as None"),
    # nftables codec, table, plan, evaluate, traffic
    Mutant("nftables/codec.py", ' or gen.get("offset"):', ":", "numgen offset ignored"),
    Mutant("nftables/codec.py", "numgen random mod {rule.numgen[0]} < {rule.numgen[1]}", "numgen random mod {rule.numgen[1]} < {rule.numgen[0]}", "numgen arguments swapped"),
    Mutant("nftables/codec.py", "    if s.counter:", "    if False:", "sets rendered without counter"),
    Mutant("nftables/codec.py", "f\"srcnat {'+' if offset > 0 else '-'} {abs(offset)}\"", "f\"srcnat {'-' if offset > 0 else '+'} {abs(offset)}\"", "priority sign swapped"),
    Mutant("nftables/codec.py", '            words.append("fully-random")', '            words.append("random")', "random instead of fully-random"),
    Mutant("nftables/table.py", '            nfproto=d.family if nft_family == "inet" else None,', "            nfproto=d.family,", "ip catch-all with nfproto"),
    Mutant("nftables/table.py", "            elements=frozenset(uncovered(nets)),", "            elements=frozenset(nets),", "covered CIDRs stored"),
    Mutant("nftables/table.py", "NftRule(verdict=\"return\", family=d.family, daddr=d.link_local, counter=True)", "NftRule(verdict=\"return\", family=d.family, daddr=d.link_local)", "link-local rule uncounted"),
    Mutant("nftables/table.py", '    return "inet" if options.enable_ipv6 else "ip"', '    return "inet"', "always inet"),
    Mutant("nftables/plan.py", "        if len(stale) + len(missing) > SET_RELOAD_AFTER_EDITS:", "        if len(stale) + len(missing) >= SET_RELOAD_AFTER_EDITS:", "reload threshold off by one"),
    Mutant("nftables/plan.py", "        if have.opaque:", "        if False:", "opaque elements ignored"),
    Mutant("nftables/plan.py", "        if v1 == v2 and first <= last:", "        if v1 == v2 and first < last:", "touching intervals accepted"),
    Mutant("nftables/plan.py", "    return deletes + adds + chains", "    return adds + deletes + chains", "adds before deletes"),
    Mutant("nftables/plan.py", "    return all(want.base == observed.chains[n].base for n, want in desired.chains.items())", "    return True", "a moved hook kept"),
    Mutant("nftables/evaluate.py", "enumerate(chain.rules if chain else (), start=1)", "enumerate(chain.rules if chain else ())", "positions from 0"),
    Mutant("nftables/evaluate.py", "    if rule.local or (rule.nfproto is not None and rule.nfproto != family):", "    if rule.local:", "nfproto ignored"),
    Mutant("nftables/traffic.py", '            family: Family = rule.nfproto or "ipv4"', '            family: Family = "ipv4"', "ipv6 catch-all filed as ipv4"),
]  # fmt: skip


# --- the pytest plugin (-p mutants) ------------------------------------------------


def pytest_configure(config: object) -> None:
    """Point hypothesis at this mutant's empty database before any test runs."""
    home = os.environ.get("MUTANTS_HYPOTHESIS_HOME")
    if home:
        from hypothesis.configuration import set_hypothesis_home_dir

        set_hypothesis_home_dir(home)


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """Leave out the tests that need root and a kernel (they use a ``netns`` fixture)."""
    if not os.environ.get("MUTANTS_HYPOTHESIS_HOME"):
        return
    items[:] = [i for i in items if "netns" not in getattr(i, "fixturenames", ())]


# --- the run -------------------------------------------------------------------------


class _Stop(Exception):
    """SIGTERM, raised where the main thread is so ``finally`` restores the file."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _restore_leftover() -> None:
    """Undo a run that was killed before its ``finally`` ran (SIGKILL, power)."""
    if not BACKUP.exists():
        return
    saved = json.loads(BACKUP.read_text(encoding="utf-8"))
    Path(saved["path"]).write_text(saved["text"], encoding="utf-8")
    os.utime(saved["path"], ns=(saved["atime"], saved["mtime"]))
    BACKUP.unlink()
    print(f"restored {saved['path']} from an interrupted run", file=sys.stderr)


def _pytest(home: str) -> tuple[bool, str, float]:
    """Run the suites; (killed, last line of pytest's output, seconds)."""
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_PROFILE"}
    env |= {
        "MUTANTS_HYPOTHESIS_HOME": home,
        "PYTHONDONTWRITEBYTECODE": "1",  # no bytecode of a mutant left in __pycache__
        "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "mutants", "-p", "no:cacheprovider"]
    argv += ["-m", "not integration and not container and not soak", *SUITES]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines() or [done.stderr.strip()]
    return done.returncode != 0, lines[-1], time.monotonic() - start


def run_one(mutant: Mutant) -> tuple[str, str, float]:
    """("killed" | "survived" | "stale", pytest's summary, seconds) for one mutant."""
    path = CORE / mutant.module
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return "stale", f"text occurs {original.count(mutant.old)} times", 0.0
    stat = path.stat()
    BACKUP.write_text(
        json.dumps(
            {
                "path": str(path),
                "text": original,
                "atime": stat.st_atime_ns,
                "mtime": stat.st_mtime_ns,
            }
        ),
        encoding="utf-8",
    )
    try:
        path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
        with tempfile.TemporaryDirectory(prefix="mutant-hypothesis-") as home:
            killed, summary, seconds = _pytest(home)
    finally:
        path.write_text(original, encoding="utf-8")
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        BACKUP.unlink(missing_ok=True)
    return ("killed" if killed else "survived"), summary, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run the mutants whose file or text contains this")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    _restore_leftover()
    chosen = [
        m
        for m in MUTANTS
        if args.only is None or args.only in m.module or args.only in m.old or args.only in m.what
    ]
    if args.list:
        for m in chosen:
            print(f"{m.module}: {m.what}")
        return 0
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    rows: list[str] = []
    counts = {"killed": 0, "survived": 0, "stale": 0}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="mutant-hypothesis-") as home:
            failing, summary, seconds = _pytest(home)
        if failing:  # every mutant would count as killed
            print(f"the suites fail on the unchanged core: {summary}", file=sys.stderr)
            return 2
        print(f"baseline: the unchanged core passes in {seconds:.0f} s ({summary})", flush=True)
        for number, mutant in enumerate(chosen, start=1):
            outcome, summary, seconds = run_one(mutant)
            counts[outcome] += 1
            row = f"{outcome:8} {seconds:6.1f}s  {mutant.module}: {mutant.what}  ({summary})"
            rows.append(row)
            print(f"[{number}/{len(chosen)}] {row}", flush=True)
    except (KeyboardInterrupt, _Stop):
        print("interrupted: every file is restored; no result written", file=sys.stderr)
        return 130
    total = counts["killed"] + counts["survived"]
    share = 100 * counts["killed"] / total if total else 0.0
    summary = (
        f"killed {counts['killed']}/{total} ({share:.0f}%), stale {counts['stale']},"
        f" {time.monotonic() - started:.0f} s"
    )
    print(summary)
    if args.only is None:
        RESULT.write_text(
            "\n".join(
                [
                    "# benchmarks/mutants.py: hand-made mutants of masq/core, one at a time,",
                    "# against " + " ".join(SUITES),
                    "# (default hypothesis profile, empty database per mutant, root-only tests"
                    " left out)",
                    f"# python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}",
                    summary,
                    "",
                    *rows,
                    "",
                ]
            ),
            encoding="utf-8",
        )
    return 0 if counts["survived"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
