"""What only the nftables dataplane has, against a real kernel: its table's family, element
counters and handles, decay healed, foreign tables untouched, dataplane switches under
traffic, v1/v2 leftovers, --cleanup, --dry-run/--validate/--explain, nodes that lack one of
the tool sets, and /metrics from element counters.

Scenarios that hold for both dataplanes (every decision, the config files, bad input, steady
state for every rule shape) are written once in their own files, parametrized by ``plane``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from integration import flows, nft
from integration.agent import (
    agent_argv,
    agent_env,
    assert_ok,
    daemon,
    error_lines,
    run_agent,
    wait_for,
    write_config,
)
from integration.expected import FAMILIES, RFC1918
from integration.nft import NFTABLES, TABLE, agent_objects, iptables_objects, nft_objects
from integration.packets import http_get, verdicts
from integration.planes import IptablesPlane, NftablesPlane, kernel_snapshot
from integration.topology import (
    BACKENDS,
    DEST_DOC6,
    DEST_DOC_A,
    DEST_DOC_B,
    DEST_LINK_LOCAL,
    DEST_PRIVATE,
    DEST_UPLINK,
    NODE_UPLINK,
    POD_IP,
    Backend,
    Topology,
    run,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

METRICS_PORT = 9931  # inside the node namespace only


@pytest.fixture
def nftables(nft_topo: Topology) -> NftablesPlane:
    return NftablesPlane(nft_topo)


# --- the table: family, counters, handles --------------------------------------------------


def test_the_table_is_ip_without_ipv6_and_inet_with_it(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    """An inet nat chain turns IPv6 NAT on, so the table is inet only with --enable-ipv6; a
    change of the flag swaps the tables (one batch) and IPv6 NAT follows."""
    topo = nftables.topo
    assert_ok(nftables.run_agent(config_dir))
    assert nft.our_tables(topo) == ["ip"]
    assert verdicts(topo, DEST_DOC6) == {DEST_DOC6: "kept"}
    assert_ok(nftables.run_agent(config_dir, "--enable-ipv6"))
    assert nft.our_tables(topo) == ["inet"]
    assert verdicts(topo, DEST_DOC6, DEST_DOC_A) == {DEST_DOC6: "masq", DEST_DOC_A: "masq"}
    assert_ok(nftables.run_agent(config_dir))
    assert nftables.installed() == nftables.expected(RFC1918)
    assert verdicts(topo, DEST_DOC6) == {DEST_DOC6: "kept"}


def test_each_new_flow_counts_once_where_it_was_decided_and_syncs_never_reset_it(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    """N new flows to a CIDR raise its set element's counter by exactly N (the nat chain sees a
    flow's first packet only); the link-local and catch-all rules count the same way, and
    each set lookup rule counts the sum of its set's elements.  A sync
    that finds the table right writes nothing: every handle and counter stays as it was."""
    topo = nftables.topo
    write_config(
        config_dir,
        "ip-masq-agent",
        f"nonMasqueradeCIDRs: [{', '.join(RFC1918)}]\n"
        "masqueradeCIDRs: [198.51.100.0/24, 172.20.0.10/32]\n",
    )
    assert_ok(nftables.run_agent(config_dir))
    sent = {DEST_DOC_B: 13, DEST_PRIVATE: 11, DEST_UPLINK: 7, DEST_DOC_A: 5, DEST_LINK_LOCAL: 3}
    for dest, count in sent.items():
        seen = flows.burst(topo, [dest], count)[dest]
        kept = dest in (DEST_UPLINK, DEST_LINK_LOCAL)
        assert {address for address, _ in seen} == {POD_IP if kept else NODE_UPLINK}, dest
        assert len(seen) == count
    counters = {
        "masquerade": nft.element_counters(topo, "ip", "masquerade-v4"),
        "non-masquerade": nft.element_counters(topo, "ip", "non-masquerade-v4"),
        "rules": nft.rule_counters(topo, "ip"),
    }
    assert counters == {
        "masquerade": {"198.51.100.0/24": 13, "172.20.0.10/32": 11},
        "non-masquerade": {"10.0.0.0/8": 0, "172.16.0.0/12": 0, "192.168.0.0/16": 7},
        "rules": {
            # each set lookup counts what its elements count, summed
            "ip daddr @masquerade-v4 counter jump snat-to-node": 24,
            "ip daddr 169.254.0.0/16 counter return": 3,
            "ip daddr @non-masquerade-v4 counter return": 7,
            "counter jump snat-to-node": 5,
        },
    }
    listed = nft.nft(topo, "-a", "list", "table", "ip", TABLE)
    proc = nftables.run_agent(config_dir)
    assert_ok(proc)
    assert not nftables.wrote(proc), proc.stderr
    assert nft.nft(topo, "-a", "list", "table", "ip", TABLE) == listed  # handles and counters
    flows.burst(topo, [DEST_UPLINK, DEST_DOC_B], 2)
    assert nft.element_counters(topo, "ip", "non-masquerade-v4")["192.168.0.0/16"] == 9
    assert nft.element_counters(topo, "ip", "masquerade-v4")["198.51.100.0/24"] == 15


def test_one_cidr_added_is_one_element_and_every_other_counter_and_handle_stays(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    topo = nftables.topo
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n")
    assert_ok(nftables.run_agent(config_dir))
    flows.burst(topo, [DEST_UPLINK, DEST_DOC_A], 4)
    before = nft.handles(topo)
    rules = nft.rule_counters(topo, "ip")
    write_config(
        config_dir,
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]",
    )
    proc = nftables.run_agent(config_dir)
    assert_ok(proc)
    updates = [line for line in proc.stderr.splitlines() if "table updated" in line]
    assert len(updates) == 1 and updates[0].endswith(" ops=1"), proc.stderr
    # the same listing, handles included, but for the one new element
    assert nft.handles(topo).replace("172.16.0.0/12, ", "") == before
    assert nft.element_counters(topo, "ip", "non-masquerade-v4") == {
        "10.0.0.0/8": 0,
        "172.16.0.0/12": 0,
        "192.168.0.0/16": 4,
    }
    assert nft.rule_counters(topo, "ip") == rules
    assert verdicts(topo, DEST_PRIVATE) == {DEST_PRIVATE: "kept"}


# --- decay ---------------------------------------------------------------------------------

# name -> (nft command that decays the table, a destination, its verdict while decayed)
DECAYS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "deleted-element": (
        ("delete", "element", "ip", TABLE, "non-masquerade-v4", "{ 192.168.0.0/16 }"),
        DEST_UPLINK,
        "masq",
    ),
    "foreign-element": (
        ("add", "element", "ip", TABLE, "non-masquerade-v4", "{ 203.0.113.0/24 }"),
        DEST_DOC_A,
        "kept",
    ),
    "flushed-chain": (("flush", "chain", "ip", TABLE, "postrouting"), DEST_DOC_A, "kept"),
    "deleted-table": (("delete", "table", "ip", TABLE), DEST_DOC_A, "kept"),
    "rule-added-to-our-chain": (
        ("insert", "rule", "ip", TABLE, "postrouting", "ip", "daddr", "203.0.113.0/24", "return"),
        DEST_DOC_A,
        "kept",
    ),
}


@pytest.mark.parametrize("decay", sorted(DECAYS))
def test_decay_is_healed_by_the_next_sync(
    nftables: NftablesPlane, config_dir: Path, decay: str
) -> None:
    topo = nftables.topo
    assert_ok(nftables.run_agent(config_dir))
    pristine = nftables.installed()
    command, dest, decayed = DECAYS[decay]
    nft.nft(topo, *command)
    assert nftables.installed() != pristine
    assert verdicts(topo, dest) == {dest: decayed}  # the decay is real
    proc = nftables.run_agent(config_dir)
    assert_ok(proc)
    assert nftables.wrote(proc), proc.stderr
    assert nftables.installed() == pristine
    assert verdicts(topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}


def test_the_daemon_heals_every_decay_within_a_resync(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """Decay changes the ruleset generation, so the next periodic resync lists and heals."""
    topo = nftables.topo
    log = tmp_path / "agent.log"
    with daemon(topo, config_dir, *NFTABLES, "--resync-interval=1", log=log) as proc:
        pristine = nftables.expected(RFC1918)
        assert wait_for(lambda: nftables.installed() == pristine, 10) is not None, log.read_text()
        for name in sorted(DECAYS):
            nft.nft(topo, *DECAYS[name][0])
            healed = wait_for(lambda: nftables.installed() == pristine, 5, 0.05)
            assert healed is not None, (name, nftables.installed(), log.read_text())
        assert verdicts(topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}
        assert proc.poll() is None, log.read_text()


# --- foreign tables ------------------------------------------------------------------------


def test_foreign_tables_are_never_touched(nft_topo: Topology, config_dir: Path) -> None:
    """kube-proxy's tables, a table of our name in the ip6 family, a firewall and the iptables-nft
    tables' foreign rules: listed with their handles they stay the same, counters aside, through
    syncs, a config change, switches to iptables and back, and --cleanup."""
    topo = nft_topo
    nft.add_foreign(topo)
    before = nft.foreign_state(topo)
    assert {"ip kube-proxy", "ip6 kube-proxy", f"ip6 {TABLE}", "inet firewall", "ip nat"} <= set(
        before
    )
    v6 = ("--enable-ipv6",)
    steps: list[tuple[str, tuple[str, ...]]] = [
        ("nftables sync", (*NFTABLES, *v6)),
        ("traffic", ()),
        ("nftables sync after a config change", (*NFTABLES, *v6)),
        ("switch to iptables", v6),
        ("switch back to nftables", NFTABLES),
        ("cleanup", (*NFTABLES, "--cleanup")),
    ]
    for step, flags in steps:
        if step == "traffic":
            verdicts(topo, DEST_DOC_A, DEST_UPLINK, DEST_DOC6)
        else:
            if "config change" in step:
                write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
            assert_ok(run_agent(topo, config_dir, *flags))
        assert nft.foreign_state(topo) == before, step
    assert agent_objects(topo) == set()


# --- switching dataplanes ------------------------------------------------------------------


def test_switching_dataplanes_under_traffic_never_sends_a_wrong_source(
    nft_topo: Topology, config_dir: Path
) -> None:
    """A new flow every 10 ms to a destination that must be masqueraded and to one that must
    keep the pod's address while the agent moves between dataplanes (and between the ip and
    inet tables): each switch makes the new dataplane right before removing the old one, so no
    flow leaves with the wrong source, and after each switch one dataplane holds it all."""
    topo = nft_topo
    assert_ok(run_agent(topo, config_dir))
    assert agent_objects(topo) == iptables_objects()
    steps: list[tuple[tuple[str, ...], set[str]]] = [
        (NFTABLES, nft_objects("ip")),
        ((*NFTABLES, "--enable-ipv6"), nft_objects("inet")),
        ((), iptables_objects()),
        (NFTABLES, nft_objects("ip")),
        ((), iptables_objects()),
    ]
    must = {DEST_DOC_A: NODE_UPLINK, DEST_UPLINK: POD_IP}
    with flows.prober(topo, list(must)) as probe:
        for flags, objects in steps:
            time.sleep(0.3)  # flows between switches
            assert_ok(run_agent(topo, config_dir, *flags))
            assert agent_objects(topo) == objects, flags
        time.sleep(0.3)
    wrong = {dest: [s for s, _ in seen if s != must[dest]] for dest, seen in probe.seen.items()}
    assert wrong == {dest: [] for dest in must}
    for dest in must:
        assert probe.sent[dest] >= 100, probe.sent  # the prober ran across every switch
        assert len(probe.seen[dest]) == probe.sent[dest], (dest, probe.sent)


def test_v1_and_v2_chains_are_removed_from_every_backend_in_nftables_mode(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    """A node that v1 or v2 managed (either backend, both families, v2's quoted jump): the
    first nftables sync installs the table, then removes each chain and jump, nothing else."""
    topo = nftables.topo
    foreign = {
        4: "-A POSTROUTING -s 10.99.0.0/16 -j RETURN",
        6: "-A POSTROUTING -s fd00:99::/64 -j RETURN",
    }
    for backend in BACKENDS:
        for family in FAMILIES:
            nft.ipt(topo, backend, family, "-t", "nat", *foreign[family].split())
            nft.write_old_chain(topo, backend, family)
    nft.write_old_jump(topo, "nft", 4, v2_quotes=True)
    nft.write_old_jump(topo, "legacy", 6, v2_quotes=True)
    assert len(agent_objects(topo)) == 10
    assert verdicts(topo, DEST_UPLINK) == {DEST_UPLINK: "masq"}  # v1's chain is in charge
    assert_ok(nftables.run_agent(config_dir))
    assert agent_objects(topo) == nft_objects()
    for backend in BACKENDS:
        for family in FAMILIES:
            post = nft.ipt(topo, backend, family, "-t", "nat", "-S", "POSTROUTING")
            assert post.splitlines()[1:] == [foreign[family]], post
    assert verdicts(topo, DEST_UPLINK, DEST_DOC_A) == {DEST_UPLINK: "kept", DEST_DOC_A: "masq"}


def test_a_custom_masq_chain_moves_to_the_table_and_the_users_chains_stay(
    topo: Topology, config_dir: Path
) -> None:
    """--masq-chain=MY-MASQ on a node that iptables mode managed with the same flag (each
    backend): one nftables sync makes the table, then removes MY-MASQ and its jump, and
    nothing else: a user chain named MY-MASQ-USER beside it, with its own POSTROUTING jump,
    stays rule for rule."""
    chain, user = "MY-MASQ", "MY-MASQ-USER"
    backend = topo.backend
    assert_ok(run_agent(topo, config_dir, f"--masq-chain={chain}"))
    iptables = IptablesPlane(topo)
    assert iptables.installed(chain) == iptables.expected(RFC1918, chain=chain)
    for rule in (
        ("-N", user),
        ("-A", user, "-d", "198.18.0.0/15", "-j", "RETURN"),
        ("-A", "POSTROUTING", "-s", "10.99.0.0/16", "-j", user),
    ):
        nft.ipt(topo, backend, 4, "-t", "nat", *rule)
    before = nft.ipt(topo, backend, 4, "-t", "nat", "-S").splitlines()
    assert agent_objects(topo, chain) == {
        f"iptables-{backend} chain {chain}",
        f"iptables-{backend} jump 1 to {chain}",
    }
    proc = run_agent(topo, config_dir, *NFTABLES, f"--masq-chain={chain}")
    assert_ok(proc)
    assert "iptables chain removed" in proc.stderr, proc.stderr
    assert agent_objects(topo, chain) == nft_objects()
    assert NftablesPlane(topo).installed() == NftablesPlane(topo).expected(RFC1918)

    def ours(line: str) -> bool:
        words = line.split()
        return words[:2] in (["-N", chain], ["-A", chain]) or words[-2:] == ["-j", chain]

    after = nft.ipt(topo, backend, 4, "-t", "nat", "-S").splitlines()
    assert after == [line for line in before if not ours(line)]
    assert len([line for line in after if user in line]) == 3  # -N, -A and the jump
    assert verdicts(topo, DEST_UPLINK, DEST_DOC_A) == {DEST_UPLINK: "kept", DEST_DOC_A: "masq"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_old_pod_writing_the_chain_again_is_undone_at_the_next_resync(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path, backend: Backend
) -> None:
    """During a rolling update an old (v1) pod may write its chain and jump after the new
    agent switched to nftables: the next periodic resync removes them again.

    The daemon may remove them before the test could look (a resync every second), so the
    proof is the daemon's own line for this backend, after the write, and the node left with
    the table alone."""
    topo = nftables.topo
    log = tmp_path / "agent.log"

    def removals() -> int:
        lines = log.read_text().splitlines()
        return sum("iptables chain removed" in ln and f"iptables-{backend}" in ln for ln in lines)

    with daemon(topo, config_dir, *NFTABLES, "--resync-interval=1", log=log) as proc:
        assert wait_for(lambda: agent_objects(topo) == nft_objects(), 10) is not None
        before = removals()
        nft.write_old_chain(topo, backend, 4)
        removed = wait_for(
            lambda: removals() > before and agent_objects(topo) == nft_objects(), 5, 0.1
        )
        assert removed is not None, (agent_objects(topo), log.read_text())
        assert proc.poll() is None, log.read_text()
    assert verdicts(topo, DEST_UPLINK, DEST_DOC_A) == {DEST_UPLINK: "kept", DEST_DOC_A: "masq"}


# --- cleanup -------------------------------------------------------------------------------


@pytest.mark.parametrize("dataplane", ["nftables", "iptables"])
def test_cleanup_removes_both_tables_and_every_chain_and_nothing_else(
    nft_topo: Topology, config_dir: Path, dataplane: str
) -> None:
    """--cleanup, in either mode and without --enable-ipv6, removes the inet and the ip table and
    the chain and jumps in every backend and family; every foreign object stays; a second run
    finds nothing and writes nothing."""
    topo = nft_topo
    nft.add_foreign(topo)
    assert_ok(run_agent(topo, config_dir, *NFTABLES, "--enable-ipv6"))
    # and an ip table too (as a pod without --enable-ipv6 writes it), and v1's chains
    nft.nft(topo, "-f", "-", stdin=f"table ip {TABLE} {{\n chain postrouting {{ counter; }}\n}}\n")
    for backend in BACKENDS:
        for family in FAMILIES:
            nft.write_old_chain(topo, backend, family)
    assert len(agent_objects(topo)) == 10
    before = nft.foreign_state(topo)
    legacy = [nft.ipt(topo, "legacy", family, "-t", "nat", "-S") for family in FAMILIES]
    flags = NFTABLES if dataplane == "nftables" else ()
    assert_ok(run_agent(topo, config_dir, *flags, "--cleanup"))
    assert agent_objects(topo) == set()
    assert nft.foreign_state(topo) == before
    for family, text in zip(FAMILIES, legacy, strict=True):
        left = nft.ipt(topo, "legacy", family, "-t", "nat", "-S")
        assert left.splitlines() == [ln for ln in text.splitlines() if "IP-MASQ-AGENT" not in ln]
    assert verdicts(topo, DEST_DOC_A) == {DEST_DOC_A: "kept"}
    after = kernel_snapshot(topo)
    assert_ok(run_agent(topo, config_dir, *flags, "--cleanup"))
    assert kernel_snapshot(topo) == after


# --- --dry-run, --validate, --explain ------------------------------------------------------


def nft_batch(dry_run_output: str) -> str:
    """The nft section of --dry-run output as a batch: each line minus its ``+``/``-``/``*``."""
    lines: list[str] = []
    inside = False
    for line in dry_run_output.splitlines():
        if line.startswith("# "):
            inside = line.startswith("# nft table ")
        elif inside:
            lines.append(line[2:])
    return "".join(f"{line}\n" for line in lines)


def test_dry_run_prints_a_batch_nft_accepts_and_changes_nothing(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    topo = nftables.topo
    assert_ok(run_agent(topo, config_dir))  # an iptables-mode node about to switch
    before = kernel_snapshot(topo)
    proc = nftables.run_agent(config_dir, "--dry-run")
    assert_ok(proc)
    assert kernel_snapshot(topo) == before
    batch = nft_batch(proc.stdout)
    assert f"table ip {TABLE} {{" in batch, proc.stdout
    assert "elements = { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 }" in batch, proc.stdout
    assert "# ipv4 (iptables-nft): cleanup" in proc.stdout  # the switch would remove the chain
    nft.nft(topo, "-c", "-f", "-", stdin=batch)  # real nft syntax: the kernel checks it all
    assert_ok(nftables.run_agent(config_dir))
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 198.18.0.0/15]\n")
    before = kernel_snapshot(topo)
    proc = nftables.run_agent(config_dir, "--dry-run")
    assert_ok(proc)
    assert kernel_snapshot(topo) == before
    assert f"+ add element ip {TABLE} non-masquerade-v4 {{ 198.18.0.0/15 }}" in proc.stdout
    nft.nft(topo, "-c", "-f", "-", stdin=nft_batch(proc.stdout))


def test_validate_does_not_depend_on_the_dataplane_and_reads_no_kernel(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    topo = nftables.topo
    write_config(config_dir, "ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n")
    write_config(config_dir, "ip-masq-b", "masqLinkLocal: false\n")
    before = kernel_snapshot(topo)
    iptables_mode = run_agent(topo, config_dir, "--validate")
    nftables_mode = nftables.run_agent(config_dir, "--validate")
    assert_ok(nftables_mode)
    assert "# conflicts: 1" in nftables_mode.stdout and "# valid" in nftables_mode.stdout
    assert nftables_mode.stdout == iptables_mode.stdout
    assert kernel_snapshot(topo) == before


def test_explain_in_nftables_mode_reads_the_live_table_and_agrees_with_the_packets(
    nftables: NftablesPlane, config_dir: Path
) -> None:
    """--explain names the table it read, the deciding rule of postrouting and, for a set,
    the element with its counter; its verdict is the packets' verdict; it writes nothing."""
    topo = nftables.topo
    write_config(config_dir, "ip-masq-agent", "masqueradeCIDRs: [172.20.0.0/16]\n")
    assert_ok(nftables.run_agent(config_dir))
    found = verdicts(topo, DEST_DOC_A, DEST_UPLINK, DEST_PRIVATE, DEST_LINK_LOCAL)
    assert found == {
        DEST_DOC_A: "masq",
        DEST_UPLINK: "kept",
        DEST_PRIVATE: "masq",
        DEST_LINK_LOCAL: "kept",
    }
    deciding = {
        DEST_DOC_A: "counter jump snat-to-node",
        DEST_UPLINK: "ip daddr @non-masquerade-v4 counter return (element 192.168.0.0/16,"
        " counter 1 packets",
        DEST_PRIVATE: "ip daddr @masquerade-v4 counter jump snat-to-node (element"
        " 172.20.0.0/16, counter 1 packets",
        DEST_LINK_LOCAL: "ip daddr 169.254.0.0/16 counter return",
    }
    before = kernel_snapshot(topo)
    for dest, verdict in found.items():
        proc = nftables.run_agent(config_dir, f"--explain={dest}")
        assert_ok(proc)
        shown = proc.stdout
        assert f"masqueraded: {'yes' if verdict == 'masq' else 'no'}" in shown, shown
        assert f"rules: live, read from nft table ip {TABLE}\n" in shown, shown
        assert f"of postrouting: {deciding[dest]}" in shown, shown
        assert "IP-MASQ-AGENT" not in shown  # no iptables chain decides anything here
    assert kernel_snapshot(topo) == before  # read-only


# --- a node with only one of the tool sets -------------------------------------------------


def tools(tmp_path: Path, *names: str) -> str:
    """A PATH of one directory holding links to exactly these tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        found = shutil.which(name)
        assert found is not None, name
        (bin_dir / name).symlink_to(found)
    return str(bin_dir)


IPTABLES_TOOLS = tuple(
    f"{base}-{backend}{suffix}"
    for base in ("iptables", "ip6tables")
    for backend in BACKENDS
    for suffix in ("", "-restore", "-save")
)


def run_with_path(
    topo: Topology, config_dir: Path, path: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """One --once run of the agent whose PATH is ``path`` only."""
    argv = agent_argv(topo, config_dir, *flags)
    ip = shutil.which(argv[0])
    assert ip is not None
    env = agent_env()
    env["PATH"] = path
    return run([ip, *argv[1:]], env=env, check=False)


def assert_quiet(proc: subprocess.CompletedProcess[str]) -> None:
    """Success with nothing an operator would have to look into."""
    assert_ok(proc)
    alarming = [
        line
        for line in proc.stderr.splitlines()
        if "level=warn" in line or "level=error" in line or "not found" in line
    ]
    assert alarming == [], proc.stderr


def test_nftables_mode_needs_no_iptables_binaries(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    topo = nftables.topo
    path = tools(tmp_path, "nft")
    assert_quiet(run_with_path(topo, config_dir, path, *NFTABLES))
    assert nftables.installed() == nftables.expected(RFC1918)
    second = run_with_path(topo, config_dir, path, *NFTABLES)
    assert_quiet(second)
    assert not nftables.wrote(second)
    assert verdicts(topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}


def test_iptables_mode_needs_no_nft(nft_topo: Topology, config_dir: Path, tmp_path: Path) -> None:
    path = tools(tmp_path, *IPTABLES_TOOLS)
    assert_quiet(run_with_path(nft_topo, config_dir, path, "--iptables-backend=auto"))
    iptables = IptablesPlane(nft_topo)
    assert iptables.installed() == iptables.expected(RFC1918)
    assert_quiet(run_with_path(nft_topo, config_dir, path, "--iptables-backend=auto"))
    assert verdicts(nft_topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}


def test_iptables_mode_without_nft_names_the_leftover_table_it_cannot_remove(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """iptables mode on a node without nft, with the table nftables mode left: the chain is
    made and the run succeeds, and a warning names the table that stays."""
    assert_ok(run_agent(nft_topo, config_dir, *NFTABLES))
    proc = run_with_path(nft_topo, config_dir, tools(tmp_path, *IPTABLES_TOOLS))
    assert_ok(proc)
    iptables = IptablesPlane(nft_topo)
    assert iptables.installed() == iptables.expected(RFC1918)  # make-before-break either way
    told = [
        line
        for line in proc.stderr.splitlines()
        if f"ip {TABLE}" in line and ("level=warn" in line or line in error_lines(proc.stderr))
    ]
    assert told, proc.stderr


def test_nftables_mode_without_nft_fails_in_one_line_and_changes_nothing(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """The iptables chain in place stays: nothing is removed before the table exists."""
    assert_ok(run_agent(nft_topo, config_dir))
    before = kernel_snapshot(nft_topo)
    proc = run_with_path(nft_topo, config_dir, tools(tmp_path, *IPTABLES_TOOLS), *NFTABLES)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "nft" in errors[0], proc.stderr
    assert kernel_snapshot(nft_topo) == before


# --- /metrics ------------------------------------------------------------------------------


def packets(topo: Topology) -> dict[tuple[str, str], float]:
    """``ip_masq_agent_packets_total`` of IPv4 by (cidr, action), scraped in node ({} while
    the agent does not answer yet)."""
    status, body = http_get(topo, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    if status != 200:
        return {}
    return {
        (s.labels["cidr"], s.labels["action"]): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name == "ip_masq_agent_packets_total" and s.labels["family"] == "ipv4"
    }


METRICS_CONFIG = (
    "nonMasqueradeCIDRs: [10.0.0.0/8, 10.240.0.0/16, 172.16.0.0/12, 192.168.0.0/16]\n"
    "masqueradeCIDRs: [198.51.100.0/24]\n"
)
SENT = {DEST_DOC_B: 7, DEST_DOC_A: 5, DEST_UPLINK: 4, DEST_LINK_LOCAL: 3}


def expected_packets(factor: int) -> dict[tuple[str, str], float]:
    """What /metrics must say after ``factor`` times SENT: each CIDR of the config under its
    action (10.240.0.0/16 is covered by 10.0.0.0/8, so not stored: it reads 0)."""
    return {
        ("198.51.100.0/24", "MASQUERADE"): 7.0 * factor,
        ("0.0.0.0/0", "MASQUERADE"): 5.0 * factor,
        ("192.168.0.0/16", "RETURN"): 4.0 * factor,
        ("169.254.0.0/16", "RETURN"): 3.0 * factor,
        ("10.0.0.0/8", "RETURN"): 0.0,
        ("10.240.0.0/16", "RETURN"): 0.0,
        ("172.16.0.0/12", "RETURN"): 0.0,
    }


def send(topo: Topology) -> None:
    for dest, count in SENT.items():
        flows.burst(topo, [dest], count)


def test_metrics_are_the_kernel_counters_per_cidr_also_in_steady_state(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """ip_masq_agent_packets_total per CIDR is the kernel's element counter (the link-local
    and catch-all rules' for theirs; a covered CIDR, not stored, reads 0): flows counted
    before the daemon started show at once, and flows sent while it is in steady state (a
    resync lists nothing then) show as well."""
    topo = nftables.topo
    write_config(config_dir, "ip-masq-agent", METRICS_CONFIG)
    assert_ok(nftables.run_agent(config_dir))
    send(topo)
    log = tmp_path / "agent.log"
    flags = (*NFTABLES, f"--metrics-bind-address=127.0.0.1:{METRICS_PORT}", "--resync-interval=1")
    with daemon(topo, config_dir, *flags, log=log) as proc:
        listed = wait_for(lambda: proc.poll() is not None or packets(topo) != {}, 10, 0.1)
        assert listed is not None and proc.poll() is None, log.read_text()
        assert packets(topo) == expected_packets(1)
        time.sleep(1.5)  # a resync that finds the table right
        send(topo)
        counted = wait_for(lambda: packets(topo) == expected_packets(2), 10, 0.2)
        assert counted is not None, packets(topo)
        assert proc.poll() is None, log.read_text()


def capped_packets(factor: int) -> dict[tuple[str, str], float]:
    """``expected_packets`` with 3 series: the first three in CIDR order, the rest summed
    per action under ``other`` (192.168.0.0/16 and link-local kept, 198.51.100.0/24
    masqueraded)."""
    return {
        ("0.0.0.0/0", "MASQUERADE"): 5.0 * factor,
        ("10.0.0.0/8", "RETURN"): 0.0,
        ("10.240.0.0/16", "RETURN"): 0.0,
        ("other", "MASQUERADE"): 7.0 * factor,
        ("other", "RETURN"): 7.0 * factor,
    }


def test_a_capped_scrape_reads_the_shown_counters_and_the_rule_totals(
    nftables: NftablesPlane, config_dir: Path, tmp_path: Path
) -> None:
    """With --metrics-max-cidr-series=3, a refreshing scrape (over netlink: the chain's rule
    counters and the three shown series' elements) shows the kernel's counters for those,
    and per action ``other`` = the set lookup and rule totals minus them, as a capped full
    listing would; flows sent while the daemon runs show at the next refresh."""
    topo = nftables.topo
    write_config(config_dir, "ip-masq-agent", METRICS_CONFIG)
    assert_ok(nftables.run_agent(config_dir))
    send(topo)
    log = tmp_path / "agent.log"
    flags = (
        *NFTABLES,
        f"--metrics-bind-address=127.0.0.1:{METRICS_PORT}",
        "--metrics-max-cidr-series=3",
        "--resync-interval=60",
    )
    with daemon(topo, config_dir, *flags, log=log) as proc:
        listed = wait_for(lambda: proc.poll() is not None or packets(topo) != {}, 10, 0.1)
        assert listed is not None and proc.poll() is None, log.read_text()
        assert packets(topo) == capped_packets(1)
        send(topo)
        counted = wait_for(lambda: packets(topo) == capped_packets(2), 12, 0.5)
        assert counted is not None, packets(topo)
        assert proc.poll() is None, log.read_text()
