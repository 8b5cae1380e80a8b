"""A kube-proxy-like foreign writer of its own nftables table; stdlib only, run with ``python -S``.

Every PERIOD seconds it commits table ``ip kube-proxy-soak`` with one ``nft -f -`` batch,
the way kube-proxy's nftables mode does: every chain declared and flushed, a set of
cluster IPs and a verdict map of services updated element by element (stale elements
deleted, current ones added), rules refilled, stale chains flushed and deleted.  Services
come and go between generations.  Its postrouting-hooked nat chains run before ours
(``srcnat - 5``) and after it (``srcnat + 20``) and masquerade only packets carrying mark
0x4000, which the prober never sets, so the masquerade model holds whatever the order.
The content of generation N is ``generation(seed, N)``, written as ``nft list table``
prints it (counter values aside), so the checker can compare any snapshot with it.

    python -S kubeproxy_nft.py SEED PERIOD LOG
        LOG gets one line per generation: "N start end nft-exit 0".
"""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script (python -S kubeproxy_nft.py): find the soak package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from soak.kubeproxy import churn

FAMILY = "ip"
TABLE = "kube-proxy-soak"
CLUSTER_IPS = "cluster-ips"
SERVICE_IPS = "service-ips"
MARK = "0x00004000"

BASE_CHAINS: dict[str, str] = {  # name -> its hook line, as nft prints it
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting-early": "type nat hook postrouting priority srcnat - 5; policy accept;",
    "nat-postrouting-late": "type nat hook postrouting priority 120; policy accept;",  # srcnat+20
    "filter-forward": "type filter hook forward priority -110; policy accept;",
}
SETS: dict[str, tuple[str, ...]] = {  # name -> its declaration lines, as nft prints them
    CLUSTER_IPS: ("type ipv4_addr", 'comment "soak cluster IPs"'),
    SERVICE_IPS: ("type ipv4_addr . inet_proto . inet_service : verdict",),
}
SET_KIND = {CLUSTER_IPS: "set", SERVICE_IPS: "map"}


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation of the table, as ``nft list table`` prints it with counters stripped
    (``counter packets N bytes M`` printed as ``counter``)."""

    chains: dict[str, tuple[str, ...]]  # name -> (hook line, if any, then) its rules
    elements: dict[str, frozenset[str]]  # set or map name -> its elements

    def stale(self, last: Generation | None) -> tuple[set[str], dict[str, set[str]]]:
        """Chains and element keys the last applied generation had and this one has not."""
        if last is None:
            return set(), {}
        chains = set(last.chains) - set(self.chains)
        keys = {
            name: {_key(e) for e in last.elements[name]} - {_key(e) for e in self.elements[name]}
            for name in SETS
        }
        return chains, keys


def _key(element: str) -> str:
    """A set element, or a map element's key (without ``: verdict``)."""
    return element.split(" : ", 1)[0]


def generation_marker(gen: int) -> str:
    return f'ip daddr 10.96.0.0/12 return comment "soak-generation {gen}"'


def generation(seed: int, gen: int) -> Generation:
    """The table's chains and elements for generation ``gen``."""
    rng = random.Random(f"kube-proxy-nft/{seed}/{gen}")
    chains: dict[str, tuple[str, ...]] = {
        "nat-prerouting": (BASE_CHAINS["nat-prerouting"], "jump services"),
        "nat-output": (BASE_CHAINS["nat-output"], "jump services"),
        "nat-postrouting-early": (
            BASE_CHAINS["nat-postrouting-early"],
            "counter jump masquerading",
        ),
        "nat-postrouting-late": (BASE_CHAINS["nat-postrouting-late"], "jump masquerading"),
        "filter-forward": (
            BASE_CHAINS["filter-forward"],
            f"ct state new ip daddr @{CLUSTER_IPS} counter",
        ),
        "masquerading": (
            f"meta mark & {MARK} == 0x00000000 return",
            f"meta mark set meta mark ^ {MARK}",
            "masquerade fully-random",
        ),
        "mark-for-masquerade": (f"meta mark set meta mark | {MARK}",),
    }
    cluster_ips: set[str] = set()
    services: set[str] = set()
    for i in sorted(rng.sample(range(200), rng.randint(60, 120))):
        ip = f"10.96.{i // 250}.{i % 250 + 1}"
        svc = f"svc-{i:03d}"
        cluster_ips.add(ip)
        services.add(f"{ip} . tcp . 80 : goto {svc}")
        endpoints = rng.randint(1, 3)
        seps = [f"sep-{i:03d}-{j}" for j in range(endpoints)]
        picks = ", ".join(f"{j} : goto {sep}" for j, sep in enumerate(seps))
        chains[svc] = (
            f'numgen random mod {endpoints} vmap {{ {picks} }} comment "svc-{i} gen {gen}"',
        )
        for j, sep in enumerate(seps):
            pod = f"10.245.{i}.{j + 1}"
            chains[sep] = (
                f"ip saddr {pod} jump mark-for-masquerade",
                f"meta l4proto tcp dnat to {pod}:8080",
            )
    chains["services"] = (
        f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
        generation_marker(gen),
    )
    return Generation(
        chains, {CLUSTER_IPS: frozenset(cluster_ips), SERVICE_IPS: frozenset(services)}
    )


def batch(new: Generation, last: Generation | None) -> str:
    """One transaction from the last applied generation (None: none yet) to ``new``."""
    t = f"{FAMILY} {TABLE}"
    stale_chains, stale_keys = new.stale(last)
    lines = [f"add table {t}"]
    for name, rules in sorted(new.chains.items()):
        spec = f" {{ {rules[0]} }}" if name in BASE_CHAINS else ""
        lines.append(f"add chain {t} {name}{spec}")
    for name, decl in SETS.items():
        lines.append(f"add {SET_KIND[name]} {t} {name} {{ {'; '.join(decl)}; }}")
    lines += [f"flush chain {t} {name}" for name in sorted(new.chains.keys() | stale_chains)]
    for name, keys in sorted(stale_keys.items()):
        if keys:
            lines.append(f"delete element {t} {name} {{ {', '.join(sorted(keys))} }}")
    for name, elements in sorted(new.elements.items()):
        if elements:
            lines.append(f"add element {t} {name} {{ {', '.join(sorted(elements))} }}")
    for name, rules in sorted(new.chains.items()):
        body = rules[1:] if name in BASE_CHAINS else rules
        lines += [f"add rule {t} {name} {rule}" for rule in body]
    lines += [f"delete chain {t} {name}" for name in sorted(stale_chains)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    seed, period, log = int(argv[0]), float(argv[1]), argv[2]
    last: Generation | None = None  # the last generation that was applied

    def write(gen: int) -> tuple[int, int]:
        nonlocal last
        new = generation(seed, gen)
        done = subprocess.run(
            ["nft", "-f", "-"], input=batch(new, last).encode(), capture_output=True, check=False
        )
        if done.returncode == 0:
            last = new
        else:
            sys.stderr.write(done.stderr.decode(errors="replace"))
        return done.returncode, 0

    return churn(period, log, write)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
