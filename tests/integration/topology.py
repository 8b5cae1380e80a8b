"""The network-namespace topology: pod -> node -> dest, created and deleted per test.

Everything runs inside namespaces this module creates (names carry our pid, so parallel or
crashed runs never collide) and deletes again; nothing touches the host's own tables.
``Topology`` also reads the node's tables back (``iptables-save``, rule lists, snapshots).

Addresses (documentation and private ranges only, never real public addresses):

    pod  eth0 10.244.1.2/24  fd00:244::2/64      (default routes via node)
    node vpod 10.244.1.1/24  fd00:244::1/64
    node vup  192.168.100.1/24  fd00:100::1/64   (uplink: what masquerading rewrites to)
    dest eth0 192.168.100.2/24  fd00:100::2/64
    dest lo   203.0.113.10 198.51.100.10 172.20.0.10 169.254.10.10 /32, 2001:db8::10/128
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from integration.expected import DEFAULT_CHAIN, Family

Backend = Literal["nft", "legacy"]
BACKENDS: tuple[Backend, ...] = ("nft", "legacy")

REPO_ROOT = Path(__file__).resolve().parents[2]

POD_IP = "10.244.1.2"
NODE_POD_GW = "10.244.1.1"
NODE_UPLINK = "192.168.100.1"
DEST_UPLINK = "192.168.100.2"
DEST_DOC_A = "203.0.113.10"  # TEST-NET-3: masqueraded by default, reserved range
DEST_DOC_B = "198.51.100.10"  # TEST-NET-2: likewise
DEST_PRIVATE = "172.20.0.10"  # inside RFC 1918 172.16.0.0/12
DEST_LINK_LOCAL = "169.254.10.10"
POD_IP6 = "fd00:244::2"
NODE_POD_GW6 = "fd00:244::1"
NODE_UPLINK6 = "fd00:100::1"
DEST_UPLINK6 = "fd00:100::2"
DEST_DOC6 = "2001:db8::10"

NS_PREFIX = "mqit"
_ids = itertools.count(1)


def run(
    argv: Sequence[str],
    *,
    timeout: float = 30.0,
    check: bool = True,
    stdin: str | bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never a shell string) with a bounded timeout; text output."""
    proc = subprocess.run(
        list(argv),
        env=env,
        cwd=REPO_ROOT if env is not None else None,
        input=stdin.decode() if isinstance(stdin, bytes) else stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
        )
    return proc


def environment_problem() -> str | None:
    """Why the integration tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "integration tests need root (ip netns, iptables)"
    for tool in (
        "ip",
        "conntrack",
        "nft",
        "iptables-nft",
        "iptables-legacy",
        "ip6tables-nft",
        "ip6tables-legacy",
    ):
        if shutil.which(tool) is None:
            return f"integration tests need {tool} on PATH"
    probe = f"{NS_PREFIX}-{os.getpid()}-probe"
    try:
        added = run(["ip", "netns", "add", probe], check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` unavailable: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False, timeout=10)
    return None


def sweep_stale_namespaces() -> None:
    """Delete namespaces left by earlier runs of this harness whose process is gone."""
    listing = run(["ip", "netns", "list"], check=False, timeout=10).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) < 3 or parts[0] != NS_PREFIX or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            run(["ip", "netns", "del", name], check=False, timeout=10)
        except PermissionError:
            pass


def save_binary(backend: Backend, family: Family) -> str:
    return f"{'ip6' if family == 6 else 'ip'}tables-{backend}-save"


def tables_binary(backend: Backend, family: Family) -> str:
    return f"{'ip6' if family == 6 else 'ip'}tables-{backend}"


def strip_save_comments(text: str) -> str:
    """iptables-save output minus its '#' lines (timestamps, legacy warnings)."""
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))


@dataclass
class Topology:
    """Three namespaces joined by veth pairs; the agent and its tables live in ``node``."""

    pod: str
    node: str
    dest: str
    backend: Backend

    @classmethod
    def fresh(cls, backend: Backend) -> Topology:
        base = f"{NS_PREFIX}-{os.getpid()}-{next(_ids)}"
        return cls(pod=f"{base}-pod", node=f"{base}-node", dest=f"{base}-dest", backend=backend)

    # -- lifecycle ---------------------------------------------------------------------

    def create(self) -> None:
        for ns in (self.pod, self.node, self.dest):
            run(["ip", "netns", "add", ns])
            # no duplicate address detection, also for the link-local addresses the kernel
            # adds: tentative addresses delay neighbour discovery by a second or two
            for key in ("all", "default"):
                run(self.in_ns(ns, ["sysctl", "-q", "-w", f"net.ipv6.conf.{key}.accept_dad=0"]))
        # Each veth end is created straight inside its namespace: no name ever exists in
        # the host's namespace.
        for near, near_name, far, far_name in (
            (self.pod, "eth0", self.node, "vpod"),
            (self.node, "vup", self.dest, "eth0"),
        ):
            veth = ["type", "veth", "peer", "name", far_name, "netns", far]
            run(["ip", "link", "add", near_name, "netns", near, *veth])
        batches = {
            self.pod: [
                "link set lo up",
                "link set eth0 up",
                "addr add 10.244.1.2/24 dev eth0",
                "-6 addr add fd00:244::2/64 dev eth0 nodad",
                "route add default via 10.244.1.1",
                "-6 route add default via fd00:244::1",
            ],
            self.node: [
                "link set lo up",
                "link set vpod up",
                "link set vup up",
                "addr add 10.244.1.1/24 dev vpod",
                "-6 addr add fd00:244::1/64 dev vpod nodad",
                "addr add 192.168.100.1/24 dev vup",
                "-6 addr add fd00:100::1/64 dev vup nodad",
                f"route add {DEST_DOC_A}/32 via {DEST_UPLINK}",
                f"route add {DEST_DOC_B}/32 via {DEST_UPLINK}",
                f"route add {DEST_PRIVATE}/32 via {DEST_UPLINK}",
                f"route add {DEST_LINK_LOCAL}/32 via {DEST_UPLINK}",
                f"-6 route add {DEST_DOC6}/128 via {DEST_UPLINK6}",
            ],
            self.dest: [
                "link set lo up",
                "link set eth0 up",
                "addr add 192.168.100.2/24 dev eth0",
                "-6 addr add fd00:100::2/64 dev eth0 nodad",
                f"addr add {DEST_DOC_A}/32 dev lo",
                f"addr add {DEST_DOC_B}/32 dev lo",
                f"addr add {DEST_PRIVATE}/32 dev lo",
                f"addr add {DEST_LINK_LOCAL}/32 dev lo",
                f"-6 addr add {DEST_DOC6}/128 dev lo nodad",
                "route add 10.244.1.0/24 via 192.168.100.1",
                "-6 route add fd00:244::/64 via fd00:100::1",
            ],
        }
        for ns, lines in batches.items():
            v4 = [line for line in lines if not line.startswith("-6 ")]
            v6 = [line.removeprefix("-6 ") for line in lines if line.startswith("-6 ")]
            run(["ip", "-n", ns, "-batch", "-"], stdin="\n".join(v4) + "\n")
            run(["ip", "-6", "-n", ns, "-batch", "-"], stdin="\n".join(v6) + "\n")
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            run(self.in_ns(self.node, ["sysctl", "-q", "-w", key]))

    def destroy(self) -> None:
        for ns in (self.pod, self.node, self.dest):
            run(["ip", "netns", "del", ns], check=False, timeout=10)

    @staticmethod
    def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    # -- tables ------------------------------------------------------------------------

    def ipt(self, *args: str, family: Family = 4, check: bool = True) -> str:
        """Run iptables/ip6tables of this topology's backend in node; return stdout."""
        argv = self.in_ns(self.node, [tables_binary(self.backend, family), "-w", "5", *args])
        return run(argv, check=check).stdout

    def save(self, *, family: Family = 4, table: str | None = "nat", counters: bool = False) -> str:
        """``iptables-save`` in node for this backend, '#' lines removed (they hold a clock)."""
        argv = [save_binary(self.backend, family)]
        if table is not None:
            argv += ["-t", table]
        if counters:
            argv.append("-c")
        return strip_save_comments(run(self.in_ns(self.node, argv)).stdout)

    def snapshot(self) -> tuple[str, str]:
        """Everything both families' tables hold, with counters: the 'nothing changed' oracle."""
        return (
            self.save(family=4, table=None, counters=True),
            self.save(family=6, table=None, counters=True),
        )

    def rules(self, chain: str = DEFAULT_CHAIN, *, family: Family = 4) -> list[str]:
        """The ``-A`` lines of one nat chain as iptables-save prints them (no counters)."""
        return [
            line
            for line in self.save(family=family).splitlines()
            if line.startswith(f"-A {chain} ")
        ]

    def chains(self, *, family: Family = 4) -> list[str]:
        return [
            line[1:].split()[0] for line in self.save(family=family).splitlines() if line[:1] == ":"
        ]

    def jumps_to(self, chain: str = DEFAULT_CHAIN, *, family: Family = 4) -> list[str]:
        return [line for line in self.rules("POSTROUTING", family=family) if f"-j {chain}" in line]

    def nft_handles(self, chain: str = DEFAULT_CHAIN, family: Family = 4) -> str:
        """``nft -a list chain`` (rule handles): survives only if nothing was rewritten."""
        table = "ip6" if family == 6 else "ip"
        return run(
            self.in_ns(self.node, ["nft", "-a", "list", "chain", table, "nat", chain])
        ).stdout

    def conntrack_flush(self) -> None:
        for family in ("ipv4", "ipv6"):
            run(self.in_ns(self.node, ["conntrack", "-F", "-f", family]), check=False, timeout=10)


@contextlib.contextmanager
def namespace(label: str) -> Iterator[str]:
    """One bare namespace (loopback up), named for this process and ``label``, deleted on
    the way out whatever happened inside; one a killed run leaves is swept like a
    topology's (``sweep_stale_namespaces``).  For benchmarks and round trips that need a
    kernel but no topology."""
    name = f"{NS_PREFIX}-{os.getpid()}-{label}"
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        yield name
    finally:
        run(["ip", "netns", "del", name], check=False, timeout=10)


@contextlib.contextmanager
def topology(backend: Backend) -> Iterator[Topology]:
    """A fresh topology, deleted on the way out whatever happened inside."""
    topo = Topology.fresh(backend)
    try:
        topo.create()
        yield topo
    finally:
        topo.destroy()
