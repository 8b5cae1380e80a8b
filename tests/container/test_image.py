"""The container image: built with buildah on a debootstrapped base, its entrypoint run in a
network namespace with only NET_ADMIN and NET_RAW, installs the chain there.

`buildah run` never applies the image's ENTRYPOINT, so the tests read it from the image
config and run exactly that command with the agent's arguments.  Every `buildah run` is
wrapped in `ip netns exec` of a namespace created here: chroot isolation shares the caller's
network namespace, and the host's must never be touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ci import cannot_run
from integration.expected import RFC1918

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent.parent
TAG = "localhost/ip-masq-agent:ci"
AGENT_CAPS = ("CAP_NET_ADMIN", "CAP_NET_RAW")
# Every capability up to CAP_CHECKPOINT_RESTORE (40).  buildah 1.28 lets `--cap-drop ALL`
# override any `--cap-add`, so everything but the agent's two is dropped by name.
ALL_CAPS = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def cap_args(keep: tuple[str, ...]) -> list[str]:
    args: list[str] = []
    for cap in ALL_CAPS:
        if f"CAP_{cap}" not in keep:
            args += ["--cap-drop", f"CAP_{cap}"]
    for cap in keep:
        args += ["--cap-add", cap]
    return args


def require_tools() -> None:
    """Skip on a developer machine without the tools; in CI a missing tool is a failure."""
    missing = [
        t for t in ("buildah", "debootstrap", "ip", "iptables-nft-save") if not shutil.which(t)
    ]
    problem = f"missing tools: {missing}" if missing else ""
    if os.geteuid() != 0:
        problem = "needs root"
    if problem:
        cannot_run(f"the container test: {problem}")


@pytest.fixture(scope="module")
def image() -> str:
    require_tools()
    start = time.monotonic()
    build = run(
        [str(ROOT / "scripts" / "build-image.sh"), "--debootstrap-base", "--tag", TAG],
        timeout=1500,
    )
    took = time.monotonic() - start
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    for line in build.stdout.splitlines():
        if line.startswith("build-image:"):
            print(line, file=sys.stderr)
    print(f"container test: base + image build took {took:.0f}s", file=sys.stderr)
    return TAG


@pytest.fixture(scope="module")
def entrypoint(image: str) -> list[str]:
    inspect = run(["buildah", "inspect", "--type", "image", image])
    assert inspect.returncode == 0, inspect.stderr
    config = json.loads(inspect.stdout)["OCIv1"]["config"]
    entry: list[str] = config["Entrypoint"]
    assert entry and entry[0].endswith("ip-masq-agent")
    return entry


@pytest.fixture
def container(image: str) -> Iterator[str]:
    name = f"ip-masq-agent-ci-{uuid.uuid4().hex[:8]}"
    made = run(["buildah", "from", "--name", name, image])
    assert made.returncode == 0, made.stderr
    try:
        yield name
    finally:
        run(["buildah", "rm", name])


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"imact-{uuid.uuid4().hex[:8]}"
    made = run(["ip", "netns", "add", name])
    assert made.returncode == 0, made.stderr
    try:
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        run(["ip", "netns", "delete", name])


def run_in(
    netns: str,
    container: str,
    command: list[str],
    caps: tuple[str, ...] = AGENT_CAPS,
    volumes: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", netns, "buildah", "run", "--isolation", "chroot"]
    argv += cap_args(caps)
    for volume in volumes:
        argv += ["--volume", volume]
    return run([*argv, container, "--", *command])


def nat_rules(netns: str, save: str = "iptables-nft-save") -> list[str]:
    saved = run(["ip", "netns", "exec", netns, save, "-t", "nat"])
    assert saved.returncode == 0, saved.stderr
    return [line for line in saved.stdout.splitlines() if line.startswith(("-A", ":"))]


def chain_destinations(rules: list[str], action: str) -> list[str]:
    return [
        line.split()[3]
        for line in rules
        if line.startswith("-A IP-MASQ-AGENT -d ") and line.endswith(f"-j {action}")
    ]


def assert_agent_chain(rules: list[str], nomasq: tuple[str, ...]) -> None:
    assert any(line.startswith(":IP-MASQ-AGENT ") for line in rules), rules
    jumps = [r for r in rules if r.startswith("-A POSTROUTING") and r.endswith("-j IP-MASQ-AGENT")]
    assert len(jumps) == 1, rules
    assert "--dst-type LOCAL" in jumps[0]
    returns = chain_destinations(rules, "RETURN")
    assert sorted(returns) == sorted(("169.254.0.0/16", *nomasq)), rules
    chain = [r for r in rules if r.startswith("-A IP-MASQ-AGENT")]
    assert chain[-1].startswith("-A IP-MASQ-AGENT -m comment") and "-j MASQUERADE" in chain[-1]


def test_runs_with_exactly_net_admin_and_net_raw(netns: str, container: str) -> None:
    status = run_in(netns, container, ["grep", "^CapEff:", "/proc/self/status"])
    assert status.returncode == 0, status.stderr
    effective = int(status.stdout.split()[1], 16)
    assert effective == (1 << 12) | (1 << 13)  # CAP_NET_ADMIN, CAP_NET_RAW


@pytest.mark.parametrize(
    ("backend", "save"), [("nft", "iptables-nft-save"), ("legacy", "iptables-legacy-save")]
)
def test_entrypoint_once_installs_default_chain(
    netns: str, container: str, entrypoint: list[str], backend: str, save: str
) -> None:
    args = ["--once", "--metrics-bind-address", "0", "--iptables-backend", backend]
    result = run_in(netns, container, [*entrypoint, *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert_agent_chain(nat_rules(netns, save), RFC1918)


def test_entrypoint_once_applies_the_example_configmaps(
    netns: str, container: str, entrypoint: list[str], tmp_path: Path
) -> None:
    """The example ConfigMaps, laid out as the kubelet would, are read by the image's agent."""
    expected: list[str] = []
    for manifest in ("config-custom.yaml", "config-cloud.yaml"):
        cm = yaml.safe_load((ROOT / "examples" / manifest).read_text(encoding="utf-8"))
        for key, text in cm["data"].items():
            (tmp_path / key).write_text(text, encoding="utf-8")
            expected += yaml.safe_load(text).get("nonMasqueradeCIDRs", [])
    args = ["--once", "--metrics-bind-address", "0", "--iptables-backend", "nft"]
    result = run_in(netns, container, [*entrypoint, *args], volumes=(f"{tmp_path}:/etc/config:ro",))
    assert result.returncode == 0, result.stdout + result.stderr
    rules = nat_rules(netns)
    assert_agent_chain(rules, tuple(sorted(set(expected))))
    assert chain_destinations(rules, "MASQUERADE --random-fully") == ["10.240.0.0/16"]


def test_without_net_admin_fails_in_one_line(
    netns: str, container: str, entrypoint: list[str]
) -> None:
    """The agent cannot work without NET_ADMIN: it must say so and exit non-zero, no traceback."""
    args = ["--once", "--metrics-bind-address", "0", "--iptables-backend", "nft"]
    result = run_in(netns, container, [*entrypoint, *args], caps=("CAP_NET_RAW",))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "ip-masq-agent:" in result.stderr
    assert nat_rules(netns) == [
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]


def test_entrypoint_once_in_nftables_mode_installs_the_table(
    netns: str, container: str, entrypoint: list[str]
) -> None:
    """The image's nft, with only NET_ADMIN and NET_RAW: the agent's table with the default
    CIDRs as set elements and its base chain at srcnat + 10, no iptables chain; a second run
    finds the table right and writes nothing."""
    args = ["--once", "--metrics-bind-address", "0", "--dataplane=nftables"]
    result = run_in(netns, container, [*entrypoint, *args])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    listing = run(
        ["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "ip", "ip-masq-agent"]
    )
    assert listing.returncode == 0, listing.stderr
    objects = json.loads(listing.stdout)["nftables"]
    sets = {o["set"]["name"]: o["set"] for o in objects if "set" in o}
    assert sorted(sets) == ["masquerade-v4", "non-masquerade-v4"]
    prefixes = [e["elem"]["val"]["prefix"] for e in sets["non-masquerade-v4"]["elem"]]
    assert sorted(f"{p['addr']}/{p['len']}" for p in prefixes) == sorted(RFC1918)
    chains = {o["chain"]["name"]: o["chain"] for o in objects if "chain" in o}
    assert sorted(chains) == ["postrouting", "snat-to-node"]
    assert (chains["postrouting"]["hook"], chains["postrouting"]["prio"]) == ("postrouting", 110)
    assert not [line for line in nat_rules(netns) if "IP-MASQ-AGENT" in line]
    again = run_in(netns, container, [*entrypoint, *args])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "table updated" not in again.stderr, again.stderr
