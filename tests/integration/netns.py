"""Network-namespace harness: pod -> node -> dest, the real agent in node, real packets.

Everything runs inside namespaces this module creates (names carry our pid, so parallel or
crashed runs never collide) and deletes again; nothing touches the host's own tables.

Addresses (documentation and private ranges only, never real public addresses):

    pod  eth0 10.244.1.2/24  fd00:244::2/64      (default routes via node)
    node vpod 10.244.1.1/24  fd00:244::1/64
    node vup  192.168.100.1/24  fd00:100::1/64   (uplink: what masquerading rewrites to)
    dest eth0 192.168.100.2/24  fd00:100::2/64
    dest lo   203.0.113.10 198.51.100.10 172.20.0.10 169.254.10.10 /32, 2001:db8::10/128
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Backend = Literal["nft", "legacy"]
BACKENDS: tuple[Backend, ...] = ("nft", "legacy")
Family = Literal[4, 6]
FAMILIES: tuple[Family, ...] = (4, 6)

REPO_ROOT = Path(__file__).resolve().parents[2]
AGENT_PYTHON = sys.executable
DEFAULT_CHAIN = "IP-MASQ-AGENT"

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
_ports = itertools.count(20000)

# Comments exactly as DESIGN.md's rule block (and upstream) spell them.
JUMP_COMMENT = (
    "ip-masq-agent: ensure nat POSTROUTING directs all non-LOCAL destination traffic "
    "to our custom {chain} chain"
)
RETURN_COMMENT = "ip-masq-agent: local traffic is not subject to MASQUERADE"
MASQ_EXCEPTION_COMMENT = "ip-masq-agent: destination is in masqueradeCIDRs"
FINAL_COMMENT = "ip-masq-agent: outbound traffic is subject to MASQUERADE (must be last in chain)"

_LISTENER = r"""
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
kind = socket.SOCK_STREAM if sys.argv[4] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
if kind == socket.SOCK_STREAM:
    s.listen(1)
print("ready", flush=True)
try:
    if kind == socket.SOCK_STREAM:
        c, addr = s.accept()
        c.close()
    else:
        _, addr = s.recvfrom(2048)
    print(addr[0], addr[1], flush=True)
except OSError:
    print("timeout", flush=True)
"""

_SENDER = r"""
import socket, sys, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
if sys.argv[3] == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(float(sys.argv[4]))
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.close()
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:  # same socket: one conntrack entry, one NAT decision
        s.sendto(b"probe", (sys.argv[1], int(sys.argv[2])))
        time.sleep(0.1)
"""


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

    # -- packets -----------------------------------------------------------------------

    def source_seen(
        self,
        dest_ip: str,
        port: int | None = None,
        *,
        proto: Literal["udp", "tcp"] = "udp",
        timeout: float = 5.0,
        flush: bool = True,
    ) -> str:
        """Send from pod to ``dest_ip``; return the source address the listener in dest saw.

        ``POD_IP``/``POD_IP6`` means not masqueraded, ``NODE_UPLINK``/``NODE_UPLINK6``
        means masqueraded.  NAT is decided per connection, so each probe uses a fresh port
        and (by default) flushes conntrack in node first.
        """
        return self.source_seen_with_port(dest_ip, port, proto=proto, timeout=timeout, flush=flush)[
            0
        ]

    def source_seen_with_port(
        self,
        dest_ip: str,
        port: int | None = None,
        *,
        proto: Literal["udp", "tcp"] = "udp",
        timeout: float = 5.0,
        flush: bool = True,
    ) -> tuple[str, int]:
        """``source_seen``, plus the source port the listener saw (``--to-ports`` checks)."""
        if flush:
            self.conntrack_flush()
        port = next(_ports) if port is None else port
        family = "6" if ":" in dest_ip else "4"
        python = [AGENT_PYTHON, "-I", "-S", "-c"]
        listener = subprocess.Popen(
            self.in_ns(self.dest, [*python, _LISTENER, family, str(port), str(timeout), proto]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sender: subprocess.Popen[str] | None = None
        try:
            assert listener.stdout is not None
            ready = listener.stdout.readline().strip()
            if ready != "ready":
                raise RuntimeError(f"listener in {self.dest} failed: {listener.stderr}")
            sender = subprocess.Popen(
                self.in_ns(self.pod, [*python, _SENDER, dest_ip, str(port), proto, str(timeout)]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            out, err = listener.communicate(timeout=timeout + 5)
        finally:
            for proc in (listener, sender):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=5)
        seen = out.strip()
        if seen in ("", "timeout") or " " not in seen:
            raise AssertionError(
                f"no {proto} packet from pod reached {dest_ip}:{port} within {timeout}s "
                f"(listener stderr: {err.strip()!r})\nnode nat table:\n{self.save()}"
            )
        address, seen_port = seen.split()
        return address, int(seen_port)

    # -- the agent ---------------------------------------------------------------------

    def agent_argv(
        self, config_dir: Path | str | None, *flags: str, once: bool = True
    ) -> list[str]:
        argv = [AGENT_PYTHON, "-m", "masq"]
        if once:
            argv.append("--once")
        if config_dir is not None:
            argv += ["--config-dir", str(config_dir)]
        if not any(flag.startswith("--iptables-backend") for flag in flags):
            argv += ["--iptables-backend", self.backend]
        if not any(flag.startswith("--metrics-bind-address") for flag in flags):
            argv += ["--metrics-bind-address", "0"]
        return self.in_ns(self.node, [*argv, *flags])

    def run_agent(
        self, config_dir: Path | str | None, *flags: str, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """One ``--once`` run of the real agent in node; never raises on its exit code."""
        return subprocess.run(
            self.agent_argv(config_dir, *flags),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=agent_env(),
            check=False,
        )

    def start_agent(self, config_dir: Path | str, *flags: str, log: Path) -> subprocess.Popen[str]:
        """The agent as a daemon in node, output to ``log`` (a pipe could fill and block it)."""
        with log.open("w") as out:
            return subprocess.Popen(
                self.agent_argv(config_dir, *flags, once=False),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=REPO_ROOT,
                env=agent_env(),
            )


def agent_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("CI", None)  # the agent must not change behaviour under CI
    return env


def stop_agent(proc: subprocess.Popen[str], timeout: float = 5.0) -> int:
    """SIGTERM, bounded wait, SIGKILL as a last resort; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


@contextlib.contextmanager
def daemon(
    topo: Topology, config_dir: Path, *flags: str, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """A running agent daemon, stopped on the way out whatever happened inside."""
    proc = topo.start_agent(config_dir, *flags, log=log)
    try:
        yield proc
    finally:
        stop_agent(proc)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Poll ``predicate()`` until true; seconds it took, or None after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None
        time.sleep(interval)


@contextlib.contextmanager
def topology(backend: Backend) -> Iterator[Topology]:
    """A fresh topology, deleted on the way out whatever happened inside."""
    topo = Topology.fresh(backend)
    try:
        topo.create()
        yield topo
    finally:
        topo.destroy()


def write_config(config_dir: Path, name: str, content: str | bytes) -> Path:
    """Write one config file atomically (``name`` as given: include the prefix yourself)."""
    path = config_dir / name
    tmp = config_dir / f".{name}.tmp"
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)  # atomic, as a config-management tool would
    return path


def configmap_layout(config_dir: Path, files: Mapping[str, str | bytes], stamp: str) -> Path:
    """The kubelet's ConfigMap volume: a timestamped dir, ``..data`` -> it, key -> ..data/key."""
    data = config_dir / f"..{stamp}"
    data.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (data / name).write_bytes(content)
        else:
            (data / name).write_text(content)
    tmp_link = config_dir / "..data_tmp"
    tmp_link.symlink_to(data.name)
    tmp_link.replace(config_dir / "..data")  # atomic swap, as the kubelet does it
    for name in files:
        link = config_dir / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    return data


def error_lines(stderr: str) -> list[str]:
    """stderr minus the agent's structured log records (``time=... level=...``)."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("time=")]


# -- expected rule text (DESIGN.md's block, exactly as iptables-save prints it) ----------

RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
RESERVED = (
    *RFC1918,
    "100.64.0.0/10",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
)


def canonical(cidrs: Iterable[str]) -> list[str]:
    """Deduplicated, in the agent's canonical order (family, network address, prefix)."""
    nets = {ipaddress.ip_network(c) for c in cidrs}
    ordered = sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return [str(n) for n in ordered]


def jump_rule(chain: str = DEFAULT_CHAIN) -> str:
    comment = JUMP_COMMENT.format(chain=chain)
    return (
        f'-A POSTROUTING -m comment --comment "{comment}" -m addrtype ! --dst-type LOCAL -j {chain}'
    )


def expected_rules(
    non_masquerade: Iterable[str],
    masquerade: Iterable[str] = (),
    *,
    chain: str = DEFAULT_CHAIN,
    family: Family = 4,
    keep_link_local: bool = True,
    random_fully: bool = True,
) -> list[str]:
    """Our chain for a config, in order: exceptions, link-local, RETURNs, final MASQUERADE."""
    rf = " --random-fully" if random_fully else ""
    keep = [c for c in canonical(non_masquerade) if (":" in c) == (family == 6)]
    masq = [c for c in canonical(masquerade) if (":" in c) == (family == 6)]
    lines = [
        f'-A {chain} -d {c} -m comment --comment "{MASQ_EXCEPTION_COMMENT}" -j MASQUERADE{rf}'
        for c in masq
    ]
    if keep_link_local:
        link_local = "fe80::/10" if family == 6 else "169.254.0.0/16"
        keep = [link_local, *keep]
    lines += [f'-A {chain} -d {c} -m comment --comment "{RETURN_COMMENT}" -j RETURN' for c in keep]
    lines.append(f'-A {chain} -m comment --comment "{FINAL_COMMENT}" -j MASQUERADE{rf}')
    return lines


def counted(save_text: str, chain: str) -> dict[str, str]:
    """``iptables-save -c`` lines of one chain: rule text -> its ``[packets:bytes]``."""
    out = {}
    for line in save_text.splitlines():
        if line.startswith("[") and f"] -A {chain} " in line:
            counters, rule = line.split(" ", 1)
            out[rule] = counters
    return out


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, (
        f"agent exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr


def assert_config_error(proc: subprocess.CompletedProcess[str], file_name: str) -> None:
    """Bad config: exit 1, no traceback, one error line (besides log records) naming the file."""
    assert proc.returncode == 1, (
        f"expected exit 1, got {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = error_lines(proc.stderr)
    assert len(errors) == 1, f"expected one error line, got {errors!r}"
    assert file_name in errors[0], errors[0]


def verdicts(topo: Topology, *dests: str) -> dict[str, str]:
    """Per destination: 'kept' (dest saw the pod) or 'masq' (dest saw the node)."""
    out = {}
    for dest in dests:
        seen = topo.source_seen(dest)
        if seen in (POD_IP, POD_IP6):
            out[dest] = "kept"
        elif seen in (NODE_UPLINK, NODE_UPLINK6):
            out[dest] = "masq"
        else:
            out[dest] = f"unexpected source {seen}"
    return out
