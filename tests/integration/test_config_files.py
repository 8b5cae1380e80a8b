"""The config directory as DaemonSets ship it: several files, JSON and YAML, ConfigMap
symlinks, prefixes, conflicts.  Cases follow ip-masq-agent-v2's syncConfig tests, with
documentation and private ranges in place of its public addresses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integration.agent import assert_ok, configmap_layout, write_config
from integration.expected import RFC1918
from integration.packets import verdicts
from integration.planes import EACH_BACKEND, Plane, kernel_snapshot
from integration.topology import (
    DEST_DOC_A,
    DEST_DOC_B,
    DEST_LINK_LOCAL,
    DEST_PRIVATE,
    DEST_UPLINK,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_multiple_files_json_and_yaml_are_merged(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-config-0", "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n")
    write_config(
        config_dir,
        "ip-masqconfig-1",  # v2's own test names its second file without the dash
        '{\n  "nonMasqueradeCIDRs": ["192.168.100.0/24", "203.0.113.0/24"]\n}\n',
    )
    write_config(config_dir, "ip-masqconfig-2", "masqLinkLocal: true\n")
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(
        ["10.0.0.0/8", "192.168.100.0/24", "203.0.113.0/24"], keep_link_local=False
    )
    assert verdicts(
        plane.topo, DEST_UPLINK, DEST_DOC_A, DEST_DOC_B, DEST_PRIVATE, DEST_LINK_LOCAL
    ) == {
        DEST_UPLINK: "kept",
        DEST_DOC_A: "kept",
        DEST_DOC_B: "masq",
        DEST_PRIVATE: "masq",  # the explicit lists replace the RFC 1918 default
        DEST_LINK_LOCAL: "masq",
    }


def test_duplicates_within_and_across_files_give_one_rule(plane: Plane, config_dir: Path) -> None:
    """One rule per CIDR (nftables: one element; 10.240.0.0/16 is not stored, 10.0.0.0/8
    covers it)."""
    write_config(
        config_dir,
        "ip-masq-config-0",
        "nonMasqueradeCIDRs:\n  - 198.18.0.0/15\n  - 10.0.0.0/8\n  - 10.0.0.0/8\n"
        "masqLinkLocal: false\n",
    )
    write_config(config_dir, "ip-masqconfig-1", "masqLinkLocalIPv6: true\n")
    write_config(
        config_dir,
        "ip-masqconfig-2",
        "nonMasqueradeCIDRs:\n  - 10.240.0.0/16\n  - 10.0.0.0/8\n  - 192.0.2.0/24\n",
    )
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(
        ["10.0.0.0/8", "10.240.0.0/16", "192.0.2.0/24", "198.18.0.0/15"]
    )


def test_json_and_yaml_spellings_give_identical_rules(plane: Plane, tmp_path: Path) -> None:
    as_yaml = tmp_path / "yaml"
    as_json = tmp_path / "json"
    as_yaml.mkdir()
    as_json.mkdir()
    write_config(
        as_yaml,
        "ip-masq-agent",
        "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/8\nmasqLinkLocal: true\n"
        "masqueradeCIDRs: [10.9.0.0/16]\n",
    )
    write_config(
        as_json,
        "ip-masq-agent",
        '{"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8"], "masqLinkLocal": true,'
        ' "masqueradeCIDRs": ["10.9.0.0/16"]}',
    )
    assert_ok(plane.run_agent(as_yaml))
    from_yaml = kernel_snapshot(plane.topo)
    assert plane.installed() == plane.expected(
        ["10.0.0.0/8", "172.16.0.0/12"], ["10.9.0.0/16"], keep_link_local=False
    )
    proc = plane.run_agent(as_json)
    assert_ok(proc)
    assert not plane.wrote(proc)  # same config: the JSON run writes nothing
    assert kernel_snapshot(plane.topo) == from_yaml


def test_wrong_prefix_dot_names_and_directories_are_ignored(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-config-0", '{"nonMasqueradeCIDRs": ["10.0.0.0/8"]}')
    write_config(config_dir, "bad-prefix-config-1", '{"nonMasqueradeCIDRs": ["203.0.113.0/24"]}')
    write_config(config_dir, "bad-prefix-garbage", "{*")  # never read, so never an error
    write_config(config_dir, ".ip-masq-hidden", "nonMasqueradeCIDRs: [198.51.100.0/24]\n")
    (config_dir / "ip-masq-subdir").mkdir()
    write_config(config_dir / "ip-masq-subdir", "ip-masq-x", "nonMasqueradeCIDRs: [192.0.2.0/24]")
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(["10.0.0.0/8"])
    assert verdicts(plane.topo, DEST_DOC_A, DEST_DOC_B) == {DEST_DOC_A: "masq", DEST_DOC_B: "masq"}


def test_custom_config_prefix(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    write_config(config_dir, "mine-a", "nonMasqueradeCIDRs: [203.0.113.0/24]\n")
    assert_ok(plane.run_agent(config_dir, "--config-prefix", "mine-"))
    assert plane.installed() == plane.expected(["203.0.113.0/24"])


@EACH_BACKEND
def test_configmap_symlink_layout(plane: Plane, config_dir: Path) -> None:
    configmap_layout(
        config_dir,
        {
            "ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8, 192.168.0.0/16]\n",
            "ip-masq-extra": '{"masqueradeCIDRs": ["192.168.100.2/32"]}',
        },
        "2026_11_26_13_00_00.000000001",
    )
    assert sorted(os.listdir(config_dir)) == [
        "..2026_11_26_13_00_00.000000001",
        "..data",
        "ip-masq-agent",
        "ip-masq-extra",
    ]
    assert_ok(plane.run_agent(config_dir))
    assert plane.installed() == plane.expected(
        ["10.0.0.0/8", "192.168.0.0/16"], ["192.168.100.2/32"]
    )
    assert verdicts(plane.topo, DEST_UPLINK, DEST_PRIVATE) == {
        DEST_UPLINK: "masq",
        DEST_PRIVATE: "masq",
    }


def test_conflict_is_logged_with_every_source_and_resolved(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-team-a", "masqLinkLocal: true\n")
    write_config(config_dir, "ip-masq-team-b", "masqLinkLocal: false\n")
    proc = plane.run_agent(config_dir)
    assert_ok(proc)
    conflict_lines = [line for line in proc.stderr.splitlines() if "masqLinkLocal" in line]
    assert any(
        "ip-masq-team-a" in line and "ip-masq-team-b" in line and "conflict" in line.lower()
        for line in conflict_lines
    ), proc.stderr
    # resolution: masquerade wins; no file set nonMasqueradeCIDRs, so RFC 1918 still applies
    assert plane.installed() == plane.expected(RFC1918, keep_link_local=False)
    assert verdicts(plane.topo, DEST_LINK_LOCAL, DEST_UPLINK) == {
        DEST_LINK_LOCAL: "masq",
        DEST_UPLINK: "kept",
    }


def test_shadowed_cidr_conflict_is_logged(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-a", "nonMasqueradeCIDRs: [172.20.0.0/16, 10.0.0.0/8]\n")
    write_config(config_dir, "ip-masq-b", "masqueradeCIDRs: [172.16.0.0/12]\n")
    proc = plane.run_agent(config_dir)
    assert_ok(proc)
    assert any(
        "172.20.0.0/16" in line and "ip-masq-a" in line and "ip-masq-b" in line
        for line in proc.stderr.splitlines()
    ), proc.stderr
    assert verdicts(plane.topo, DEST_PRIVATE) == {DEST_PRIVATE: "masq"}


@EACH_BACKEND
def test_fail_on_conflict_exits_nonzero_and_leaves_rules(plane: Plane, config_dir: Path) -> None:
    write_config(config_dir, "ip-masq-team-a", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    assert_ok(plane.run_agent(config_dir, "--fail-on-conflict"))
    assert plane.installed() == plane.expected(["10.0.0.0/8"])
    before = kernel_snapshot(plane.topo)
    write_config(config_dir, "ip-masq-team-b", "masqLinkLocal: true\n")
    write_config(config_dir, "ip-masq-team-c", "masqLinkLocal: false\n")
    proc = plane.run_agent(config_dir, "--fail-on-conflict")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "masqLinkLocal" in proc.stderr, proc.stderr
    assert kernel_snapshot(plane.topo) == before
    assert plane.installed() == plane.expected(["10.0.0.0/8"])
