"""Every command-line choice, parsed once into one immutable value the shell passes around."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from masq.core.model import DEFAULT_CHAIN

Backend = Literal["auto", "nft", "legacy"]
LogFormat = Literal["text", "json"]
DEFAULT_METRICS_BIND = "0.0.0.0:9931"


@dataclass(frozen=True, slots=True)
class Options:
    # upstream-compatible (v1/v2)
    masq_chain: str = DEFAULT_CHAIN
    nomasq_all_reserved_ranges: bool = False
    enable_ipv6: bool = False
    resync_interval: float = 60.0
    random_fully: bool = True
    to_ports: str | None = None
    verbosity: int = 0
    # ours
    config_dir: str = "/etc/config"
    config_prefix: str = "ip-masq"
    once: bool = False
    dry_run: bool = False
    cleanup: bool = False
    fail_on_conflict: bool = False
    iptables_backend: Backend = "auto"
    # observability (issue 5)
    metrics_bind_address: str = DEFAULT_METRICS_BIND  # "0" disables the HTTP server
    log_format: LogFormat = "text"
    explain: str | None = None
    validate: bool = False
