"""A mode does not import what it does not use (the operations issue's steady ``--once``):
PyYAML only when a config file is YAML, the daemon's HTTP server and metrics library
only in daemon mode.  Each check runs in a fresh interpreter, where ``sys.modules`` starts
clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOAD = """
import sys
from masq.shell.agent import Agent, NoMetrics
from masq.shell.options import Options

Agent(Options(config_dir=sys.argv[1], iptables_backend="nft"), NoMetrics()).load()
print(" ".join(m for m in ("yaml", "prometheus_client", "http.server") if m in sys.modules))
"""


def loaded_modules(config_dir: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(config_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(done.stdout.split())


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, set()),
        ({"ip-masq-agent": '{"nonMasqueradeCIDRs": ["10.0.0.0/8"]}'}, set()),
        ({"ip-masq-agent": "nonMasqueradeCIDRs: [10.0.0.0/8]\n"}, {"yaml"}),
    ],
    ids=["empty dir", "JSON file", "YAML file"],
)
def test_reading_the_config_imports_yaml_only_for_a_yaml_file(
    tmp_path: Path, files: dict[str, str], expected: set[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert loaded_modules(tmp_path) == expected
