"""The model the observations are judged against: what a config dir means.

Pure functions over ConfigMap contents, decided by the agent's own public library
(``parse_fragment``, ``merge``, ``should_masquerade``) the way the agent reads its dir
with the soak's flags; the expected chain text comes from the integration harness's
independent rendering of DESIGN.md's rule block, the expected nftables table from the
shape docs/nftables.md gives (rendered here with ``ipaddress``, not the agent's code).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from integration.expected import expected_rules, jump_rule
from returns.result import Failure

from masq import MasqConfig, merge, parse_fragment, should_masquerade
from soak.catalogue import DESTINATIONS, Content, Files
from soak.nft_view import TableView

RESYNC_SECONDS = 5.0
"""``--resync-interval`` of every agent the soak runs."""

Verdicts = tuple[bool, ...]
"""should_masquerade for each of DESTINATIONS, in order."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What the agent makes of one state of its config dir: a config, or the error."""

    config: MasqConfig | None
    error: str | None

    @property
    def valid(self) -> bool:
        return self.config is not None


def files_of(mapping: Mapping[str, Content]) -> Files:
    return tuple(sorted(mapping.items()))


READ_LIMIT = (1 << 20) + 1
"""The agent reads each file up to just over 1 MiB (operations.md), so a larger one is judged
(and named in its error) by its first 1 MiB + 1 bytes."""


def _as_read(content: Content) -> Content:
    data = content.encode() if isinstance(content, str) else content
    return data[:READ_LIMIT] if len(data) > READ_LIMIT else content


@lru_cache(maxsize=4096)
def read(files: Files) -> Reading:
    """Parse and merge every file, as the agent does with ``--resync-interval=5``."""
    fragments = []
    for name, content in files:
        parsed = parse_fragment(_as_read(content), name)
        if isinstance(parsed, Failure):
            return Reading(None, str(parsed.failure()))
        fragments.append(parsed.unwrap())
    merged = merge(fragments, default_resync_interval=RESYNC_SECONDS)
    if isinstance(merged, Failure):
        return Reading(None, str(merged.failure()))
    return Reading(merged.unwrap().config, None)


@lru_cache(maxsize=4096)
def verdicts(config: MasqConfig) -> Verdicts:
    return tuple(should_masquerade(config, ipaddress.ip_address(d)) for d in DESTINATIONS)


def expected_chain(config: MasqConfig) -> list[str]:
    """Our chain's ``-A`` lines as iptables-save prints them for this config (IPv4)."""
    return expected_rules(
        [str(n) for n in config.non_masquerade_cidrs if n.version == 4],
        [str(n) for n in config.masquerade_cidrs if n.version == 4],
        keep_link_local=not config.masq_link_local,
    )


EXPECTED_JUMP = jump_rule()

NFT_TABLE = ("ip", "ip-masq-agent")
"""The agent's table without ``--enable-ipv6``: family ``ip``, never ``inet``."""
NFT_SET_DECLARATION = ("type ipv4_addr", "flags interval", "counter")


def _stored(cidrs: list[str]) -> frozenset[str]:
    """The elements an interval set holds for a CIDR list: those no other CIDR of the list
    covers, each with its counter, a /32 printed as a bare address (as nft prints them)."""
    nets = {ipaddress.IPv4Network(c) for c in cidrs if ":" not in c}
    kept = {n for n in nets if not any(n != o and n.subnet_of(o) for o in nets)}
    return frozenset(f"{n.network_address if n.prefixlen == 32 else n} counter" for n in kept)


def expected_table(config: MasqConfig) -> TableView:
    """Our nftables table for this config, as ``nft list ruleset`` prints it (counter
    values stripped): docs/nftables.md's table with the soak's default flags."""
    postrouting = [
        "type nat hook postrouting priority srcnat + 10; policy accept;",
        "fib daddr type local return",
        "ip daddr @masquerade-v4 counter jump snat-to-node",
    ]
    if not config.masq_link_local:
        postrouting.append("ip daddr 169.254.0.0/16 counter return")
    postrouting += ["ip daddr @non-masquerade-v4 counter return", "counter jump snat-to-node"]
    return TableView(
        *NFT_TABLE,
        chains={"snat-to-node": ("masquerade fully-random",), "postrouting": tuple(postrouting)},
        declarations={
            "masquerade-v4": NFT_SET_DECLARATION,
            "non-masquerade-v4": NFT_SET_DECLARATION,
        },
        elements={
            "masquerade-v4": _stored([str(n) for n in config.masquerade_cidrs]),
            "non-masquerade-v4": _stored([str(n) for n in config.non_masquerade_cidrs]),
        },
    )


def possible_reads(old: Files, new: Files) -> list[Files]:
    """Every dir the agent may read while the kubelet swaps ``old`` for ``new``.

    The kubelet swaps ``..data`` first, links added keys and unlinks removed ones after,
    and the agent opens each key's link on its own, so during a swap each key may be read
    as before or after (an absent key is skipped).  Both ends are included.
    """
    before, after = dict(old), dict(new)
    options: list[list[tuple[str, Content] | None]] = []
    for name in sorted(before.keys() | after.keys()):
        choices: list[tuple[str, Content] | None] = []
        for side in (before, after):
            entry = (name, side[name]) if name in side else None
            if entry not in choices:
                choices.append(entry)
        options.append(choices)
    reads = []
    for combo in itertools.product(*options):
        files = tuple(entry for entry in combo if entry is not None)
        if files not in reads:
            reads.append(files)
    return reads
