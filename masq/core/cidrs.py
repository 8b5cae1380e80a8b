"""Strict CIDR parsing: only a plain ``address/prefix`` ever reaches a rule.

The stdlib parser alone is not enough: it accepts a bare address (an implicit
/32) and scoped IPv6 (``fe80::%eth0/64``).  The character check runs first, so
whitespace, quotes or iptables words can never slip through.
"""

from __future__ import annotations

import ipaddress
import re

from returns.result import Failure, Result, Success

from masq.core.model import IPNetwork

_SHAPE = re.compile(r"[0-9A-Fa-f:.]+/(?:0|[1-9][0-9]{0,2})", re.ASCII)


def parse_cidr(text: str) -> Result[IPNetwork, str]:
    """The canonical network for ``text``, or why it is not a plain, aligned CIDR."""
    if not text:
        return Failure("empty CIDR")
    if "/" not in text and _SHAPE.fullmatch(text + "/0"):
        return Failure("missing prefix length (write e.g. 10.0.0.0/8 or fd00::/8)")
    if _SHAPE.fullmatch(text) is None:
        return Failure(
            "not a plain CIDR (only an address and a prefix length, like 10.0.0.0/8 or"
            " fd00::/8; no spaces, quotes or other words)"
        )
    address_text, prefix_text = text.split("/", 1)
    try:
        address = ipaddress.ip_address(address_text)
    except ValueError:
        return Failure(
            "invalid address (IPv4 octets are 0-255 without leading zeros; IPv6 as in RFC 4291)"
        )
    if int(prefix_text) > address.max_prefixlen:
        return Failure(f"prefix length over {address.max_prefixlen} for IPv{address.version}")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        aligned = ipaddress.ip_network(text, strict=False)
        return Failure(f"host bits set (misaligned); did you mean {aligned}?")
    return Success(net)
