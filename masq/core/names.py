"""Names in the kernel the agent writes or must not take: chains, targets, defaults."""

from __future__ import annotations

import re

DEFAULT_CHAIN = "IP-MASQ-AGENT"
DEFAULT_TABLE = "ip-masq-agent"
"""The nftables table the agent owns (family ip, or inet with IPv6)."""
POSTROUTING = "POSTROUTING"
BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", POSTROUTING})
"""The nat table's built-in chains (FORWARD too: iptables refuses it as a user chain name)."""
MAX_CHAIN_NAME = 28  # XT_EXTENSION_MAXNAMELEN - 1
RESERVED_TARGETS = frozenset(
    {
        "ACCEPT",
        "DROP",
        "QUEUE",
        "RETURN",
        "MASQUERADE",
        "SNAT",
        "DNAT",
        "REDIRECT",
        "REJECT",
        "LOG",
        "NFLOG",
        "MARK",
        "CONNMARK",
        "NETMAP",
        "CT",
        "TRACE",
        "NOTRACK",
        "TPROXY",
        "CLASSIFY",
        "DSCP",
        "TOS",
        "TCPMSS",
        "AUDIT",
        "CHECKSUM",
        "NFQUEUE",
        "SECMARK",
        "CONNSECMARK",
        "TTL",
        "HL",
        "ULOG",
        "IDLETIMER",
        "LED",
        "SYNPROXY",
        "TEE",
        "HMARK",
    }
)
"""Names iptables refuses for a user chain: verdicts and the common target extensions."""
_CHAIN_CHARS = re.compile(r"[!-~]+")  # printable ASCII, no space


def valid_chain_name(name: str) -> bool:
    """Whether iptables accepts ``name`` for a user chain that our parser can read back."""
    return (
        0 < len(name) <= MAX_CHAIN_NAME
        and _CHAIN_CHARS.fullmatch(name) is not None
        and name[0] not in "-!"
        and not any(c in name for c in "\"'\\")
        and name not in RESERVED_TARGETS
        and name not in BUILTIN_CHAINS
    )


_TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def valid_table_name(name: str) -> bool:
    """Whether ``name`` is an nft table name the agent writes and reads back unquoted."""
    return _TABLE_NAME.fullmatch(name) is not None
