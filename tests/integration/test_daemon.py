"""Daemon mode: reaction to config changes (plain files and the ConfigMap ``..data`` swap),
periodic resync healing decay, bad config ending the daemon, SIGTERM."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from integration.agent import configmap_layout, daemon, error_lines, wait_for, write_config
from integration.expected import (
    DEFAULT_CHAIN,
    RETURN_COMMENT,
    RFC1918,
    expected_rules,
    jump_rule,
)
from integration.packets import verdicts
from integration.topology import DEST_DOC_A, DEST_DOC_B, DEST_UPLINK, Topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Generous bounds: these tests prove the reaction happens; the latency itself is a figure
# recorded in benchmarks/results/integration-latency.txt, not a timed assertion.
REACT_WITHIN = 5.0
START_WITHIN = 10.0


def record(latency_record: list[str], topo: Topology, what: str, seconds: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} backend={topo.backend} {what}: {seconds * 1000:.0f} ms"
    print(line)
    latency_record.append(line)


def started(topo: Topology, proc: subprocess.Popen[str], rules: list[str], log: Path) -> None:
    took = wait_for(lambda: proc.poll() is not None or topo.rules() == rules, START_WITHIN)
    assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{log.read_text()}"
    assert took is not None, f"daemon did not apply its first sync:\n{log.read_text()}"


def test_file_change_reaches_the_kernel(
    topo: Topology, config_dir: Path, tmp_path: Path, latency_record: list[str]
) -> None:
    log = tmp_path / "agent.log"
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    with daemon(topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(topo, proc, expected_rules(["10.0.0.0/8"]), log)
        want = expected_rules(["10.0.0.0/8", "203.0.113.0/24"])
        t0 = time.monotonic()
        write_config(
            config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8, 203.0.113.0/24]\n"
        )
        took = wait_for(lambda: topo.rules() == want, REACT_WITHIN)
        elapsed = time.monotonic() - t0
        assert took is not None, f"no reaction within {REACT_WITHIN}s:\n{log.read_text()}"
        record(latency_record, topo, "file rewrite (atomic rename)", elapsed)
        # a new file appearing counts too
        want = expected_rules(["10.0.0.0/8", "198.51.100.0/24", "203.0.113.0/24"])
        t0 = time.monotonic()
        write_config(config_dir, "ip-masq-second", "nonMasqueradeCIDRs: [198.51.100.0/24]\n")
        assert wait_for(lambda: topo.rules() == want, REACT_WITHIN) is not None, log.read_text()
        record(latency_record, topo, "new file", time.monotonic() - t0)
        assert verdicts(topo, DEST_DOC_A, DEST_DOC_B) == {DEST_DOC_A: "kept", DEST_DOC_B: "kept"}
        # and a file removed
        want = expected_rules(["10.0.0.0/8", "203.0.113.0/24"])
        (config_dir / "ip-masq-second").unlink()
        assert wait_for(lambda: topo.rules() == want, REACT_WITHIN) is not None, log.read_text()
        assert proc.poll() is None, log.read_text()


def test_configmap_data_swap_triggers_a_resync(
    nft_topo: Topology, config_dir: Path, tmp_path: Path, latency_record: list[str]
) -> None:
    log = tmp_path / "agent.log"
    old = configmap_layout(
        config_dir, {"ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8]\n"}, "2026_11_26_13_00_00.1"
    )
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(["10.0.0.0/8"]), log)
        want = expected_rules(["10.0.0.0/8", "198.51.100.0/24"])
        t0 = time.monotonic()
        configmap_layout(
            config_dir,
            {"ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8, 198.51.100.0/24]\n"},
            "2026_11_26_13_05_00.2",
        )
        shutil.rmtree(old)  # the kubelet removes the old timestamped dir after the swap
        took = wait_for(lambda: nft_topo.rules() == want, REACT_WITHIN)
        elapsed = time.monotonic() - t0
        assert took is not None, f"no reaction to the ..data swap:\n{log.read_text()}"
        record(latency_record, nft_topo, "ConfigMap ..data symlink swap", elapsed)
        assert proc.poll() is None, log.read_text()


def test_periodic_resync_heals_decay(nft_topo: Topology, config_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    with daemon(nft_topo, config_dir, "--resync-interval", "1", log=log) as proc:
        started(nft_topo, proc, expected_rules(RFC1918), log)
        nft_topo.ipt("-t", "nat", "-D", "POSTROUTING", "1")
        assert nft_topo.jumps_to() == []
        healed = wait_for(lambda: nft_topo.jumps_to() == [jump_rule()], REACT_WITHIN, 0.1)
        assert healed is not None, f"jump not restored by the resync:\n{log.read_text()}"
        assert proc.poll() is None, log.read_text()


# name -> iptables arguments that decay our chain (our chain holds the RFC 1918 defaults)
CHAIN_DECAYS: dict[str, tuple[str, ...]] = {
    "deleted-rule": ("-t", "nat", "-D", DEFAULT_CHAIN, "-d", "192.168.0.0/16", "-m", "comment",
                     "--comment", RETURN_COMMENT, "-j", "RETURN"),
    "chain-flushed": ("-t", "nat", "-F", DEFAULT_CHAIN),
    "stray-rule": ("-t", "nat", "-I", DEFAULT_CHAIN, "1", "-d", "203.0.113.0/24", "-j", "RETURN"),
}  # fmt: skip


def in_sync_lines(log: Path) -> int:
    """Syncs that found our chain as it must be (logged at --v=1, once per family)."""
    return log.read_text().count('msg="in sync"')


def test_periodic_resync_heals_decay_in_our_chain(
    topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """A rule deleted from our chain, the chain flushed, a stray rule added: the next periodic
    resync (1 s) heals each, on both iptables backends.  Each decay comes right after a
    resync that found everything in sync, the moment the nft backend's shortcut (an
    unchanged ruleset generation means no listing) is armed: it must not hide the decay."""
    log = tmp_path / "agent.log"
    pristine = expected_rules(RFC1918)
    with daemon(topo, config_dir, "--resync-interval=1", "--v=1", log=log) as proc:
        started(topo, proc, pristine, log)
        for name, decay in CHAIN_DECAYS.items():
            idle = in_sync_lines(log)
            armed = wait_for(lambda: in_sync_lines(log) > idle, REACT_WITHIN)  # noqa: B023
            assert armed is not None, f"no idle resync before {name}:\n{log.read_text()}"
            topo.ipt(*decay)  # the next resync is about 1 s away
            assert topo.rules() != pristine, name  # the decay is real
            healed = wait_for(lambda: topo.rules() == pristine, REACT_WITHIN, 0.05)
            assert healed is not None, f"{name} not healed:\n{topo.rules()}\n{log.read_text()}"
        assert topo.jumps_to() == [jump_rule()]
        assert verdicts(topo, DEST_DOC_A, DEST_UPLINK) == {DEST_DOC_A: "masq", DEST_UPLINK: "kept"}
        assert proc.poll() is None, log.read_text()
    text = log.read_text()
    assert text.count("rules updated") == 1 + len(CHAIN_DECAYS), text  # start, then each heal


def test_bad_config_ends_the_daemon_and_keeps_the_rules(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(["10.0.0.0/8"]), log)
        before = nft_topo.snapshot()
        write_config(config_dir, "ip-masq-broken", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
        assert wait_for(lambda: proc.poll() is not None, REACT_WITHIN) is not None, (
            f"daemon kept running on a bad config:\n{log.read_text()}"
        )
        assert proc.returncode == 1, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text, text
    errors = error_lines(text)
    assert len(errors) == 1 and "ip-masq-broken" in errors[0], text
    assert nft_topo.snapshot() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_exits_0_within_a_second_and_leaves_the_rules(
    topo: Topology, config_dir: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    log = tmp_path / "agent.log"
    with daemon(topo, config_dir, log=log) as proc:
        started(topo, proc, expected_rules(RFC1918), log)
        time.sleep(0.2)  # let it settle into its idle wait
        before = topo.snapshot()
        t0 = time.monotonic()
        proc.send_signal(signum)
        try:
            code = proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit within 1 s of {signum.name}:\n{log.read_text()}")
        elapsed = time.monotonic() - t0
        assert code == 0, f"exit {code} after {elapsed:.3f}s:\n{log.read_text()}"
    assert "Traceback" not in log.read_text()
    assert topo.snapshot() == before
    assert topo.jumps_to() == [jump_rule()]
    assert verdicts(topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}


def test_idle_resyncs_write_nothing(nft_topo: Topology, config_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    with daemon(nft_topo, config_dir, "--resync-interval", "1", log=log) as proc:
        started(nft_topo, proc, expected_rules(RFC1918), log)
        assert verdicts(nft_topo, DEST_DOC_A) == {DEST_DOC_A: "masq"}
        before = nft_topo.snapshot()
        time.sleep(2.5)  # at least two periodic resyncs
        assert nft_topo.snapshot() == before
        assert proc.poll() is None, log.read_text()
    assert log.read_text().count("rules updated") == 1, log.read_text()


def test_in_place_edits_do_not_kill_the_daemon(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """Not every tool renames: ``echo ... > file`` truncates first, then writes.  The daemon
    must not act on the empty or half-written file in between (it would exit on it)."""
    log = tmp_path / "agent.log"
    path = config_dir / "ip-masq-agent"
    path.write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(["10.0.0.0/8"]), log)
        for i in range(1, 6):
            cidrs = ["10.0.0.0/8", *(f"198.18.{j}.0/24" for j in range(i))]
            with path.open("w") as out:  # truncate, then write in two pieces
                out.write("nonMasqueradeCIDRs:\n")
                out.flush()
                time.sleep(0.05)
                out.write("".join(f"  - {c}\n" for c in cidrs))
            want = expected_rules(cidrs)
            reached = wait_for(lambda: nft_topo.rules() == want, REACT_WITHIN)  # noqa: B023
            assert proc.poll() is None, f"daemon died on edit {i}:\n{log.read_text()}"
            assert reached is not None, f"edit {i} never applied:\n{log.read_text()}"


def test_config_resync_interval_overrides_the_flag(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """``resyncInterval: 1s`` (a Go duration) in the config beats ``--resync-interval=600``."""
    log = tmp_path / "agent.log"
    write_config(config_dir, "ip-masq-agent", "resyncInterval: 1s\n")
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(RFC1918), log)
        nft_topo.ipt("-t", "nat", "-D", "POSTROUTING", "1")
        healed = wait_for(lambda: nft_topo.jumps_to() == [jump_rule()], REACT_WITHIN, 0.1)
        assert healed is not None, f"no periodic resync within {REACT_WITHIN}s:\n{log.read_text()}"


def test_bad_config_at_start_exits_1_and_writes_nothing(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [not-a-cidr]\n")
    with daemon(nft_topo, config_dir, log=log) as proc:
        assert wait_for(lambda: proc.poll() is not None, START_WITHIN) is not None, log.read_text()
        assert proc.returncode == 1, log.read_text()
    errors = error_lines(log.read_text())
    assert len(errors) == 1 and "ip-masq-agent" in errors[0], log.read_text()
    assert "IP-MASQ-AGENT" not in nft_topo.save()


def test_configmap_key_removal_leaves_a_dangling_link_briefly(
    nft_topo: Topology, config_dir: Path, tmp_path: Path
) -> None:
    """The kubelet swaps ``..data`` first and removes a dropped key's link afterwards: the
    daemon sees a dangling ``ip-masq-extra`` in between and must neither die nor keep it."""
    log = tmp_path / "agent.log"
    old = configmap_layout(
        config_dir,
        {
            "ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
            "ip-masq-extra": "nonMasqueradeCIDRs: [198.51.100.0/24]\n",
        },
        "2026_11_26_13_00_00.1",
    )
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(["10.0.0.0/8", "198.51.100.0/24"]), log)
        configmap_layout(
            config_dir,
            {"ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8]\n"},
            "2026_11_26_13_05.2",
        )
        shutil.rmtree(old)
        time.sleep(0.5)  # the dangling link lives a while
        (config_dir / "ip-masq-extra").unlink()
        want = expected_rules(["10.0.0.0/8"])
        reached = wait_for(lambda: nft_topo.rules() == want, REACT_WITHIN)
        assert proc.poll() is None, f"daemon died on the dangling link:\n{log.read_text()}"
        assert reached is not None, log.read_text()


def test_config_dir_created_or_replaced_while_running(nft_topo: Topology, tmp_path: Path) -> None:
    """A missing dir means defaults; when it appears (or is replaced, as a remount does)
    the daemon follows without waiting for the periodic resync."""
    log = tmp_path / "agent.log"
    config_dir = tmp_path / "later"
    with daemon(nft_topo, config_dir, "--resync-interval", "600", log=log) as proc:
        started(nft_topo, proc, expected_rules(RFC1918), log)
        config_dir.mkdir()
        write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
        want = expected_rules(["10.0.0.0/8"])
        assert wait_for(lambda: nft_topo.rules() == want, REACT_WITHIN) is not None, (
            f"no reaction to the dir appearing:\n{log.read_text()}"
        )
        shutil.rmtree(config_dir)
        config_dir.mkdir()
        write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [198.18.0.0/15]\n")
        want = expected_rules(["198.18.0.0/15"])
        assert wait_for(lambda: nft_topo.rules() == want, REACT_WITHIN) is not None, (
            f"no reaction to the dir being replaced:\n{log.read_text()}"
        )
        assert proc.poll() is None, log.read_text()
