"""The soak's pure parts, without namespaces: the schedule replays by seed and keeps its
rules, the model reads a swap as the agent may, and the checker catches each kind of
violation it exists for (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
from integration.expected import DEFAULT_CHAIN
from integration.topology import DEST_DOC_A, DEST_DOC_B, NODE_UPLINK, POD_IP

from soak import checker, faults, kubeproxy, kubeproxy_nft
from soak.catalogue import DESTINATIONS, MAIN_FILE, bad_inputs
from soak.dataplane import Dataplane
from soak.events import ForeignWrite, Life, Probe, Push, RunLog, Snapshot, Tamper
from soak.model import (
    EXPECTED_JUMP,
    NFT_TABLE,
    expected_chain,
    expected_table,
    possible_reads,
    read,
    verdicts,
)
from soak.nft_view import TableView, parse_ruleset
from soak.schedule import NO_BREAKAGE_IN_LAST, TAMPER_GAP, TAMPERS, Fault, build, scenario

ALL_FAULTS: tuple[Fault, ...] = ("kill", "second-agent", "lock", "restore-fail")


def test_the_schedule_is_a_function_of_seed_duration_and_faults() -> None:
    one = build(42, 120, ALL_FAULTS)
    assert build(42, 120, ALL_FAULTS) == one
    assert build(42, 120, ALL_FAULTS).digest == one.digest
    assert build(43, 120, ALL_FAULTS).digest != one.digest
    assert not any(op.kind == "lock" for op in build(42, 300, ("kill", "restore-fail")).ops)


@pytest.mark.parametrize("seed", range(8))
def test_the_schedule_keeps_its_rules(seed: int) -> None:
    """Valid pushes are valid and broken ones broken (by the agent's own library); a broken
    config is the only push until its fix; the storm ends on a valid config."""
    schedule = build(seed, 300, ALL_FAULTS)
    broken_at: float | None = None
    for op in schedule.ops:
        assert 0 <= op.at < 300
        if op.kind == "broken":
            assert not read(op.files).valid, op.label
            assert broken_at is None and op.at <= 300 - NO_BREAKAGE_IN_LAST
            broken_at = op.at
        elif op.kind in ("config", "fix"):
            assert read(op.files).valid, op.line()
            assert (op.kind == "fix") == (broken_at is not None), op.line()
            broken_at = None
    assert broken_at is None
    assert any(op.kind == "lock" for op in schedule.ops)


def test_the_rolling_update_scenario_is_two_agents_and_valid_changes_only() -> None:
    schedule = scenario("rolling-update", 1, 20, ALL_FAULTS)
    assert schedule == scenario("rolling-update", 1, 20, ())
    assert schedule.ops[0].kind == "second-agent" and schedule.ops[0].seconds == 20
    assert all(op.kind == "config" and read(op.files).valid for op in schedule.ops[1:])
    assert len(schedule.ops) > 20


def test_every_destination_flips_and_every_bad_class_is_pushed() -> None:
    schedule = build(1, 1800, ALL_FAULTS)
    configs = [c for op in schedule.ops if (c := read(op.files).config) is not None]
    seen = {(d, verdicts(c)[d]) for c in configs for d in range(len(DESTINATIONS))}
    assert len(seen) == 2 * len(DESTINATIONS)
    pushed = {op.label for op in schedule.ops if op.kind == "broken"}
    assert pushed == set(bad_inputs())


def test_a_swap_may_be_read_as_any_mix_of_before_and_after() -> None:
    old = (("a", "1"), ("b", "2"))
    new = (("a", "3"), ("c", "4"))
    reads = possible_reads(old, new)
    assert old in reads and new in reads
    assert (("a", "3"), ("b", "2"), ("c", "4")) in reads  # added key linked, removed not yet
    assert (("a", "1"),) in reads
    assert len(reads) == 8


# -- the checker on made-up runs ----------------------------------------------------------

SEED = 5
KEEP_DOC_A = ((MAIN_FILE, "nonMasqueradeCIDRs: [203.0.113.0/24]\n"),)
DEFAULTS = ((MAIN_FILE, "masqLinkLocal: false\n"),)  # RFC 1918 kept, DOC_A masqueraded
DOC_A = DESTINATIONS.index(DEST_DOC_A)


def nat_text(files: tuple[tuple[str, str | bytes], ...], gen: int = 1) -> str:
    config = read(files).config
    assert config is not None
    chains = kubeproxy.generation(SEED, gen)
    hooks = kubeproxy.hook_lines()
    return "\n".join(
        [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            ":IP-MASQ-AGENT - [0:0]",
            *(f":{name} - [0:0]" for name in sorted(chains)),
            *hooks[:3],
            EXPECTED_JUMP,
            hooks[3],
            *expected_chain(config),
            *(rule for name in sorted(chains) for rule in chains[name]),
            "COMMIT",
        ]
    )


def run_log(*probes: tuple[float, bool], lives: list[Life] | None = None) -> RunLog:
    """Defaults until t=10, then DOC_A kept; one agent alive throughout; probes to DOC_A."""
    log = RunLog(SEED, 20, "nft", "iptables", "x", {}, storm_start=0, storm_end=20)
    log.pushes = [
        Push(-5, -5, (), DEFAULTS, "initial", ""),
        Push(10, 10.001, DEFAULTS, KEEP_DOC_A, "config", "~ip-masq-agent"),
    ]
    log.lives = lives or [Life("primary", 1, -4, 30, 30.1, 0, "TERM", 30, False, "")]
    log.probes = [
        Probe(i, DOC_A, t, t + 0.001, NODE_UPLINK if masq else POD_IP)
        for i, (t, masq) in enumerate(probes)
    ]
    log.probes_sent = len(probes)
    log.recovered_at, log.finished = 20.5, 31
    return log


def kinds(log: RunLog) -> list[str]:
    return [v.kind for v in checker.judge(log).violations if v.kind != "final"]


def test_probes_are_judged_against_the_model_with_a_window_after_a_change() -> None:
    assert kinds(run_log((5, True), (11, True), (11.5, False), (13, False))) == []
    assert kinds(run_log((5, False))) == ["leak"]  # pod address where the model masquerades
    assert kinds(run_log((13, True))) == ["over-masquerade"]  # window closed at 12
    restart = [
        Life("primary", 1, -4, 10.5, 10.5, -9, "KILL", 10.5, True, ""),
        Life("primary", 2, 11.5, 30, 30.1, 0, "TERM", 30, False, ""),
    ]
    assert kinds(run_log((13, True), lives=restart)) == []  # restart: window until 13.5
    assert kinds(run_log((13.6, True), lives=restart)) == ["over-masquerade"]


def test_exits_must_be_the_documented_ones() -> None:
    broken = ((MAIN_FILE, "nonMasqueradeCIDRs: [10.0.0.1/8]\n"),)
    error = read(broken).error
    log = run_log()
    log.pushes.append(Push(15, 15.001, KEEP_DOC_A, broken, "broken", "misaligned"))
    log.pushes.append(Push(18, 18.001, broken, KEEP_DOC_A, "fix", ""))
    exit_1 = Life("primary", 1, -4, 15.1, 15.2, 1, None, None, False, "")
    later = Life("primary", 2, 16, 30, 30.1, 0, "TERM", 30, False, "")
    documented = dataclasses.replace(exit_1, log=f"time=x level=info\nip-masq-agent: {error}\n")
    log.lives = [documented, later]
    assert kinds(log) == []
    log.lives = [dataclasses.replace(exit_1, log="ip-masq-agent: something else\n"), later]
    assert kinds(log) == ["exit"]
    # A TERM (the second agent stopped) after the agent chose exit 1 leaves that code.
    log.lives = [dataclasses.replace(documented, signal="TERM", signalled_at=15.15), later]
    assert kinds(log) == []
    log.lives = [dataclasses.replace(exit_1, signal="TERM", log="ip-masq-agent: other\n"), later]
    assert kinds(log) == ["exit"]
    # A KILL that found the agent already leaving on its one line: the same.
    log.lives = [dataclasses.replace(documented, signal="KILL", signalled_at=15.19), later]
    assert kinds(log) == []
    log.lives = [dataclasses.replace(exit_1, signal="KILL", log="ip-masq-agent: other\n"), later]
    assert kinds(log) == ["exit"]
    log.lives = [dataclasses.replace(documented, log=documented.log + "Traceback (most..."), later]
    assert "traceback" in kinds(log)
    log.lives = [dataclasses.replace(later, signal=None, returncode=-9)]
    assert "exit" in kinds(log)
    stays = Life("primary", 1, -4, 17.9, 18.1, -9, "KILL", 17.9, False, "")
    log.lives = [stays, later]
    assert kinds(log) == ["kept running"]  # on a broken dir for 2.9 s


def test_sigterm_must_end_in_exit_0_even_during_start_up() -> None:
    log = run_log()
    early = Life("second", 1, 5, 5.1, 5.2, -15, "TERM", 5.1, False, "time=x msg=starting\n")
    log.lives.append(early)
    assert kinds(log) == ["exit"]  # the default action: no handler in place
    log.lives[-1] = dataclasses.replace(early, returncode=0)
    assert kinds(log) == []
    # Before Python ran the agent's first line (nothing logged) no handler can exist yet.
    log.lives[-1] = dataclasses.replace(early, log="")
    assert kinds(log) == []
    assert checker.judge(log).exits == {
        "ended by SIGTERM during interpreter start-up": 1,
        "exit 0 on SIGTERM": 1,
    }


def test_a_wrong_probe_while_two_agents_run_is_a_violation_like_any_other() -> None:
    """Agents on one node serialise their writes: a second agent excuses nothing."""
    two = [
        Life("primary", 1, -4, 30, 30.1, 0, "TERM", 30, False, ""),
        Life("second", 1, 9, 14, 14.1, 0, "TERM", 14, False, ""),
    ]
    log = run_log(lives=two)
    doc_b = DESTINATIONS.index(DEST_DOC_B)  # masqueraded by both configs of the run
    log.probes = [Probe(0, doc_b, 11.0, 11.001, POD_IP)]  # inside the window opened at 10
    log.probes_sent = 1
    violations = [v for v in checker.judge(log).violations if v.kind != "final"]
    assert [v.kind for v in violations] == ["leak in a window"]
    assert "2 agents running" in violations[0].text


def test_an_oversized_file_is_judged_by_what_the_agent_reads_of_it() -> None:
    """The agent reads 1 MiB + 1 byte of each file; its error names that many bytes."""
    error = read(((MAIN_FILE, "#" * (3 << 20)),)).error
    assert error is not None and "file is over the limit of 1048576 bytes" in error


def test_snapshots_must_hold_exactly_what_each_writer_wrote() -> None:
    log = run_log()
    log.foreign = [ForeignWrite(1, 0.0, 0.05, 0, 0), ForeignWrite(2, 16.0, 16.05, 0, 0)]
    good = Snapshot(5, 5.01, nat_text(DEFAULTS), "storm")
    assert checker.snapshot_problems(good, SEED, log, read(DEFAULTS).config) == []
    tampered = good.text.replace(" --dport 80 ", " --dport 81 ", 1)
    assert checker.snapshot_problems(dataclasses.replace(good, text=tampered), SEED, log, None)
    doubled = good.text.replace(EXPECTED_JUMP, f"{EXPECTED_JUMP}\n{EXPECTED_JUMP}")
    assert checker.snapshot_problems(dataclasses.replace(good, text=doubled), SEED, log, None) == []
    assert checker.snapshot_problems(
        dataclasses.replace(good, text=doubled), SEED, log, read(DEFAULTS).config
    )
    stale = dataclasses.replace(good, start=17, end=17.01)  # gen 2 was written at 16
    assert checker.snapshot_problems(stale, SEED, log, None)
    stray = good.text.replace("COMMIT", "-A POSTROUTING -j MASQUERADE\nCOMMIT")
    assert checker.snapshot_problems(dataclasses.replace(good, text=stray), SEED, log, None)
    log.snapshots = [dataclasses.replace(good, text=doubled)]
    assert kinds(log) == ["table (storm)"]  # at rest: no window open at t=5


def test_a_snapshot_racing_a_foreign_write_is_not_judged_on_the_chains_content() -> None:
    """A listing is a netlink dump, which can skip rules when a commit lands during it: a
    foreign chain short of a rule is a problem in a snapshot no foreign write overlapped,
    and no problem in one taken while the writer committed (its marker is still checked)."""
    log = run_log()
    log.foreign = [ForeignWrite(1, 0.0, 0.05, 0, 0), ForeignWrite(2, 16.0, 16.05, 0, 0)]
    good = Snapshot(5, 5.01, nat_text(DEFAULTS), "storm")
    dropped = "\n".join(
        line
        for i, line in enumerate(good.text.splitlines())
        if not (line.startswith(f"-A {kubeproxy.SERVICES} -d ") and i % 2)
    )
    assert dropped != good.text
    short = dataclasses.replace(good, text=dropped + "\n")
    assert checker.snapshot_problems(short, SEED, log, None)
    racing = dataclasses.replace(short, start=0.01, end=0.04)  # inside gen 1's write
    assert checker.snapshot_problems(racing, SEED, log, None) == []


# -- the nftables dataplane ---------------------------------------------------------------

AGENT_LISTING = """\
# Warning: table ip nat is managed by iptables-nft, do not touch!
table ip nat {
\tchain POSTROUTING {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\t counter packets 0 bytes 0 jump KUBE-SOAK-POSTROUTING
\t}
}
table ip ip-masq-agent {
\tset masquerade-v4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcounter
\t\telements = { 10.78.1.0/24 counter packets 7 bytes 588, 192.168.100.2 counter packets 0 bytes 0 }
\t}

\tset non-masquerade-v4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcounter
\t\telements = { 10.0.0.0/8 counter packets 0 bytes 0, 172.20.0.0/16 counter packets 0 bytes 0,
\t\t\t     192.168.100.0/24 counter packets 0 bytes 0 }
\t}

\tchain snat-to-node {
\t\tmasquerade fully-random
\t}

\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat + 10; policy accept;
\t\tfib daddr type local return
\t\tip daddr @masquerade-v4 counter packets 3 bytes 252 jump snat-to-node
\t\tip daddr 169.254.0.0/16 counter packets 12 bytes 1008 return
\t\tip daddr @non-masquerade-v4 counter packets 5 bytes 420 return
\t\tcounter packets 0 bytes 0 jump snat-to-node
\t}
}
"""
"""What nft 1.0.6 lists for the agent's table (counters made up), under iptables-nft's."""

LISTED_CONFIG = (
    (
        MAIN_FILE,
        "nonMasqueradeCIDRs: [10.0.0.0/8, 10.77.0.0/16, 172.20.0.0/16, 192.168.100.0/24]\n"
        "masqueradeCIDRs: [10.78.1.0/24, 192.168.100.2/32]\n",
    ),
)


def nft_text(*tables: TableView) -> str:
    """Tables as nft lists them (elements on one line, which nft does for short sets)."""
    out = []
    for t in tables:
        out.append(f"table {t.family} {t.name} {{")
        for name, declaration in t.declarations.items():
            kind = "map" if " : " in declaration[0] else "set"
            out += [f"\t{kind} {name} {{", *(f"\t\t{d}" for d in declaration)]
            if t.elements.get(name):
                out.append(f"\t\telements = {{ {', '.join(sorted(t.elements[name]))} }}")
            out.append("\t}")
        for name, rules in t.chains.items():
            out += [f"\tchain {name} {{", *(f"\t\t{r}" for r in rules), "\t}"]
        out.append("}")
    return "\n".join(out) + "\n"


def foreign_table(gen: int) -> TableView:
    g = kubeproxy_nft.generation(SEED, gen)
    return TableView(
        kubeproxy_nft.FAMILY,
        kubeproxy_nft.TABLE,
        chains=g.chains,
        declarations=dict(kubeproxy_nft.SETS),
        elements=g.elements,
    )


def test_the_listing_reader_reads_nft_as_it_prints() -> None:
    """Counters go, wrapped element lines join, /32 elements print bare; the agent's real
    listing for a config equals the model's table for it."""
    tables = parse_ruleset(AGENT_LISTING)
    assert sorted(tables) == [("ip", "ip-masq-agent"), ("ip", "nat")]
    config = read(LISTED_CONFIG).config
    assert config is not None
    assert tables[NFT_TABLE] == expected_table(config)  # 10.77.0.0/16 is covered: not stored
    assert parse_ruleset(nft_text(foreign_table(3)))[("ip", "kube-proxy-soak")] == foreign_table(3)


def test_the_nft_writer_deletes_what_the_last_generation_had_and_this_one_has_not() -> None:
    one, two = kubeproxy_nft.generation(SEED, 1), kubeproxy_nft.generation(SEED, 2)
    first = kubeproxy_nft.batch(one, None)
    assert "delete" not in first and first.startswith("add table ip kube-proxy-soak\n")
    second = kubeproxy_nft.batch(two, one).splitlines()
    gone = sorted(one.chains.keys() - two.chains.keys())
    assert gone and [f"delete chain ip kube-proxy-soak {c}" for c in gone] == second[-len(gone) :]
    assert all(f"flush chain ip kube-proxy-soak {c}" in second for c in gone)
    keys = [line for line in second if line.startswith("delete element ip kube-proxy-soak service")]
    assert len(keys) == 1 and " : goto " not in keys[0]  # a map element is deleted by its key
    assert two.chains["services"][-1] == kubeproxy_nft.generation_marker(2)


def nft_run_log() -> tuple[RunLog, Snapshot]:
    log = run_log()
    log.dataplane = "nftables"
    log.foreign = [
        ForeignWrite(1, 0.0, 0.05, 0, 0),
        ForeignWrite(2, 16.0, 16.05, 0, 0),
        ForeignWrite(1, 0.0, 0.04, 0, 0, "nft"),
        ForeignWrite(2, 16.0, 16.04, 0, 0, "nft"),
    ]
    config = read(DEFAULTS).config
    assert config is not None
    nat = "\n".join(
        line
        for line in nat_text(DEFAULTS).splitlines()
        if DEFAULT_CHAIN not in line  # the agent removes its iptables chain in this mode
    )
    ruleset = AGENT_LISTING.partition("table ip ip-masq-agent")[0]  # iptables-nft's table
    ruleset += nft_text(expected_table(config), foreign_table(1))
    return log, Snapshot(5, 5.01, nat, "storm", ruleset)


def test_nftables_snapshots_hold_one_table_of_ours_and_what_each_writer_wrote() -> None:
    log, good = nft_run_log()
    desired = read(DEFAULTS).config

    def problems(snap: Snapshot, at_rest: bool = False) -> list[str]:
        return checker.snapshot_problems(snap, SEED, log, desired if at_rest else None)

    assert problems(good) == problems(good, at_rest=True) == []

    tampered = good.nft.replace("10.245.", "10.246.", 1)
    assert problems(dataclasses.replace(good, nft=tampered))  # a foreign rule changed
    element = sorted(foreign_table(1).elements["cluster-ips"])[0]
    dropped = good.nft.replace(f"{element}, ", "", 1)
    assert problems(dataclasses.replace(good, nft=dropped))  # a foreign element gone
    assert problems(dataclasses.replace(good, start=17, end=17.01))  # gen 2 was written at 16
    config = read(DEFAULTS).config
    assert config is not None
    inet = dataclasses.replace(expected_table(config), family="inet")
    assert problems(dataclasses.replace(good, nft=good.nft + nft_text(inet)))  # any time
    gone = good.nft.replace("table ip ip-masq-agent", "table ip ip-masq-agent-old")
    assert problems(dataclasses.replace(good, nft=gone))  # ours missing, a stray table
    jump = f"{EXPECTED_JUMP}\n:{DEFAULT_CHAIN} - [0:0]\nCOMMIT"
    assert problems(dataclasses.replace(good, text=good.text.replace("COMMIT", jump)))
    extra = good.nft.replace("192.168.0.0/16 counter", "192.168.0.0/16 counter, 11.0.0.0/8 counter")
    assert problems(dataclasses.replace(good, nft=extra)) == []  # not at rest: anything goes
    assert problems(dataclasses.replace(good, nft=extra), at_rest=True)
    log.snapshots = [dataclasses.replace(good, nft=extra)]
    assert kinds(log) == ["table (storm)"]  # at rest: no window open at t=5


def test_tampers_come_with_the_nftables_dataplane_only_and_never_meet_a_repair_back_off() -> None:
    """A foreign nft tampers with the agent's table only in nftables runs, in every kind over
    a long run, never twice within the agent's repair back-off window, nor while a second
    agent (whose writes the agent repairs too) runs or has just stopped."""
    assert "tamper" in Dataplane("nftables", "nft").faults
    assert "tamper" not in Dataplane("iptables", "nft").faults
    assert not any(op.kind == "tamper" for op in build(3, 300, ALL_FAULTS).ops)
    kinds_seen: set[str] = set()
    for seed in range(8):
        ops = build(seed, 300, (*ALL_FAULTS, "tamper")).ops
        tampers = [op for op in ops if op.kind == "tamper"]
        assert tampers, seed
        kinds_seen |= {op.label for op in tampers}
        assert all(b.at - a.at >= TAMPER_GAP for a, b in itertools.pairwise(tampers))
        seconds = [(op.at, op.at + op.seconds) for op in ops if op.kind == "second-agent"]
        for op in tampers:
            assert all(op.at >= end + TAMPER_GAP for start, end in seconds if start <= op.at)
    assert kinds_seen == set(TAMPERS)


def test_a_tamper_excuses_wrong_probes_for_its_window_only() -> None:
    """nftables: after a foreign nft changed the agent's table, probes may be wrong for
    BUDGET after it (longer while the agent is down), then must be right again; a tamper
    nft refused opens no window."""
    log = run_log((5.5, False), (7.5, False))  # DOC_A kept while the model masquerades
    log.dataplane = "nftables"
    assert kinds(log) == ["leak", "leak"]
    log.tampers = [Tamper(5.0, 5.01, "set-flush", 0, "flush set ip ip-masq-agent x")]
    assert kinds(log) == ["leak"]  # the window closed at 7.01
    log.lives = [
        Life("primary", 1, -4, 5.2, 5.2, -9, "KILL", 5.2, False, ""),
        Life("primary", 2, 6.5, 30, 30.1, 0, "TERM", 30, False, ""),
    ]
    assert kinds(log) == []  # down from 5.2 to 6.5: the window closes at 8.5
    log.tampers = [dataclasses.replace(log.tampers[0], rc=1)]
    assert kinds(log) == ["leak", "leak"]


def test_a_snapshot_without_our_table_is_allowed_only_while_a_deletion_is_repaired() -> None:
    log, good = nft_run_log()
    ruleset = AGENT_LISTING.partition("table ip ip-masq-agent")[0] + nft_text(foreign_table(1))
    gone = dataclasses.replace(good, nft=ruleset)
    assert checker.snapshot_problems(gone, SEED, log, None)
    log.tampers = [Tamper(4.9, 4.95, "table", 0, "delete table ip ip-masq-agent")]
    assert checker.snapshot_problems(gone, SEED, log, None) == []
    later = dataclasses.replace(gone, start=8.0, end=8.01)  # its window closed at 6.95
    assert checker.snapshot_problems(later, SEED, log, None)
    log.tampers = [dataclasses.replace(log.tampers[0], kind="chain-flush")]
    assert checker.snapshot_problems(gone, SEED, log, None)


def test_the_nft_fault_fails_batches_only_and_as_nft_does(tmp_path: Path) -> None:
    counter, calls = tmp_path / "counter", tmp_path / "calls"
    counter.write_text("1\n")

    def nft(*args: str) -> subprocess.CompletedProcess[str]:
        wrapper = [sys.executable, "-S", str(Path(faults.__file__)), "restore-wrapper", "nft"]
        argv = [*wrapper, str(counter), str(calls), "/bin/true", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    assert nft("-j", "list", "table", "ip", "x").returncode == 0  # a listing: not a write
    failed = nft("-f", "-")
    assert failed.returncode == 1 and "No buffer space available" in failed.stderr
    assert nft("-f", "-").returncode == 0
    assert [line.split()[0] for line in calls.read_text().splitlines()] == ["fail", "pass"]


def test_after_the_storm_one_resync_must_bring_the_desired_state() -> None:
    """Recovery within one resync (plus restart backoff and apply time) passes; later or
    never is a violation."""
    on_time = run_log((5, True))
    on_time.recovered_at = on_time.storm_end + checker.RECOVERY_BOUND - 0.1
    assert "recovery" not in kinds(on_time)
    late = run_log((5, True))
    late.recovered_at = late.storm_end + checker.RECOVERY_BOUND + 0.1
    assert "recovery" in kinds(late)
    never = run_log((5, True))
    never.recovered_at = None
    assert "recovery" in kinds(never)
