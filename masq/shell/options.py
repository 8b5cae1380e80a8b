"""Every command-line choice, parsed once into one immutable value the shell passes around."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from masq.core.config import DEFAULT_RESYNC_SECONDS
from masq.core.names import DEFAULT_CHAIN, DEFAULT_TABLE
from masq.core.nat import PortRange

Backend = Literal["auto", "nft", "legacy"]
DataplaneName = Literal["iptables", "nftables"]
LogFormat = Literal["text", "json"]
DISABLED_BIND = "0"


@dataclass(frozen=True, slots=True)
class BindAddress:
    """Where the HTTP endpoints listen; ``str`` spells it as the flag takes it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DEFAULT_METRICS_BIND = BindAddress("0.0.0.0", 9931)


@dataclass(frozen=True, slots=True)
class Options:
    # upstream-compatible (v1/v2)
    masq_chain: str = DEFAULT_CHAIN
    nomasq_all_reserved_ranges: bool = False
    enable_ipv6: bool = False
    resync_interval: float = DEFAULT_RESYNC_SECONDS
    random_fully: bool = True
    to_ports: tuple[PortRange, ...] = ()  # empty: no --to-ports
    verbosity: int = 0
    # ours
    config_dir: str = "/etc/config"
    config_prefix: str = "ip-masq"
    once: bool = False
    dry_run: bool = False
    cleanup: bool = False
    fail_on_conflict: bool = False
    iptables_backend: Backend = "auto"
    dataplane: DataplaneName = "iptables"
    nft_table: str = DEFAULT_TABLE
    metrics_bind_address: BindAddress | None = DEFAULT_METRICS_BIND  # None: no HTTP server
    metrics_max_cidr_series: int = 300  # per family; the rest summed under cidr="other"
    log_format: LogFormat = "text"
    explain: str | None = None
    explain_source: str | None = None
    explain_interface: str | None = None
    validate: bool = False


def parse_bind(bind: str) -> BindAddress | None:
    """``host:port``, ``[v6]:port`` or ``:port`` (all IPv4 interfaces); ``"0"`` is None.

    Raises ``ValueError`` with a one-line reason for anything else.
    """
    text = bind.strip()
    if text == DISABLED_BIND:
        return None
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(
            "want host:port (port 0-65535; 0 picks a free one), :port, or 0 to disable"
        )
    if host.startswith("[") and host.endswith("]"):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError("not an IPv6 address") from None
    elif ":" in host or "[" in host or "]" in host:
        raise ValueError("bracket an IPv6 host, as [::1]:9931")
    elif host == "":
        host = "0.0.0.0"
    return BindAddress(host, int(port_text))
