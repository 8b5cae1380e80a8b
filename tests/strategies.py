"""Hypothesis strategies shared by the property tests: configs whose CIDRs overlap, nest,
touch, cover link-local or are /0, in both families, and the addresses worth probing."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import strategies as st

from masq.core.addresses import Family, IPAddress, IPNetwork, sorted_cidrs
from masq.core.config import MasqConfig
from masq.core.decision import LINK_LOCAL
from masq.core.fragment import Fragment
from masq.core.nat import NatOptions, PortRange
from masq.core.nftables.table import TableOptions

BITS: dict[Family, int] = {"ipv4": 32, "ipv6": 128}


def network(family: Family, value: int, prefix: int) -> IPNetwork:
    bits = BITS[family]
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1) if prefix else 0
    cls = ipaddress.IPv4Network if family == "ipv4" else ipaddress.IPv6Network
    return cls((value & mask, prefix))


@st.composite
def cidrs(draw: st.DrawFn, family: Family) -> IPNetwork:
    """Mostly near a few seeds (so CIDRs nest, touch and overlap), sometimes /0 or anywhere."""
    bits = BITS[family]
    seed = draw(
        st.sampled_from(
            [
                0x0A000000 << (bits - 32),
                int(LINK_LOCAL[family].network_address),
                draw(st.integers(0, (1 << bits) - 1)),
            ]
        )
    )
    jitter = draw(st.integers(0, 1 << (bits // 2)))
    prefix = draw(
        st.one_of(st.just(0), st.integers(0, bits), st.integers(6, 20), st.integers(bits - 8, bits))
    )
    return network(family, seed ^ jitter, prefix)


@st.composite
def configs(draw: st.DrawFn, ipv6: bool = True) -> MasqConfig:
    families: list[Family] = ["ipv4", "ipv6"] if ipv6 else ["ipv4"]
    nets = st.one_of(*(cidrs(f) for f in families))
    return MasqConfig(
        non_masquerade_cidrs=sorted_cidrs(draw(st.lists(nets, max_size=10))),
        masquerade_cidrs=sorted_cidrs(draw(st.lists(nets, max_size=5))),
        masq_link_local=draw(st.booleans()),
        masq_link_local_ipv6=draw(st.booleans()),
    )


def table_options() -> st.SearchStrategy[TableOptions]:
    return st.builds(
        TableOptions,
        enable_ipv6=st.booleans(),
        nat=st.builds(
            NatOptions,
            random_fully=st.booleans(),
            to_ports=st.sampled_from(
                [(), (PortRange(1024, 29999), PortRange(32768, 65535)), (PortRange(7, 7),)]
            ),
        ),
    )


def boundaries(config: MasqConfig) -> list[IPAddress]:
    """First and last address of every CIDR in play (link-local included), and neighbours."""
    out: list[IPAddress] = []
    for net in [*config.non_masquerade_cidrs, *config.masquerade_cidrs, *LINK_LOCAL.values()]:
        top = (1 << net.max_prefixlen) - 1
        cls = ipaddress.IPv4Address if net.version == 4 else ipaddress.IPv6Address
        first, last = int(net.network_address), int(net.broadcast_address)
        out += [cls(v) for v in (first - 1, first, last, last + 1) if 0 <= v <= top]
    return out


def probe_addresses(config: MasqConfig, data: st.DataObject) -> list[IPAddress]:
    points = boundaries(config)
    picked = data.draw(st.lists(st.sampled_from(points), max_size=16)) if points else []
    randoms = data.draw(st.lists(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), max_size=6))
    return [*picked, *randoms]


SOURCES = ("a.yaml", "b.yaml", "c.json", "d")
LIST_FIELDS = ("non_masquerade_cidrs", "masquerade_cidrs", "source_cidrs")
"""The fragment fields of the CIDR list keys a history step edits."""


def _cidr_list(draw: st.DrawFn, nets: st.SearchStrategy[IPNetwork], size: int) -> object:
    return draw(st.none() | st.lists(nets, max_size=size).map(sorted_cidrs))


@st.composite
def fragment_histories(draw: st.DrawFn, ipv6: bool = True) -> list[list[Fragment]]:
    """A config directory over time, as the shell's loader passes it to merge: each step
    adds, removes or edits one file (one CIDR in or out of a list, sourceCIDRs included, a
    list set or unset, a flag or limit changed, or the file rewritten); files not touched
    stay the same objects."""
    families: list[Family] = ["ipv4", "ipv6"] if ipv6 else ["ipv4"]
    nets = st.one_of(*(cidrs(f) for f in families))

    def fresh(source: str) -> Fragment:
        return Fragment(
            source=source,
            non_masquerade_cidrs=_cidr_list(draw, nets, 6),  # type: ignore[arg-type]
            masquerade_cidrs=_cidr_list(draw, nets, 3),  # type: ignore[arg-type]
            source_cidrs=_cidr_list(draw, nets, 2),  # type: ignore[arg-type]
            masq_link_local=draw(st.none() | st.booleans()),
            cidr_limit=draw(st.sampled_from([None, None, None, 4, 64])),
        )

    files = {s: fresh(s) for s in draw(st.lists(st.sampled_from(SOURCES), unique=True))}
    history = [sorted(files.values(), key=lambda f: f.source)]
    for _ in range(draw(st.integers(1, 6))):
        source = draw(st.sampled_from(SOURCES))
        before = files.get(source)
        step = draw(st.sampled_from(["add", "remove", "rewrite", "edit", "edit", "edit"]))
        if before is None or step == "rewrite":
            files[source] = fresh(source)
        elif step == "remove":
            del files[source]
        else:
            key = draw(st.sampled_from(LIST_FIELDS))
            listed = list(getattr(before, key) or ())
            drop: bool = draw(st.booleans())
            if listed and drop:
                listed.pop(draw(st.integers(0, len(listed) - 1)))
            else:
                listed.append(draw(nets))
            unset = draw(st.integers(0, 9)) == 0
            edited = None if unset else sorted_cidrs(listed)
            if key == "non_masquerade_cidrs":
                files[source] = replace(before, non_masquerade_cidrs=edited)
            elif key == "masquerade_cidrs":
                files[source] = replace(before, masquerade_cidrs=edited)
            else:
                files[source] = replace(before, source_cidrs=edited)
        history.append(sorted(files.values(), key=lambda f: f.source))
    return history


INTERFACES = ("eth0", "eth1", "eth10", "eth", "ens5", "wlan0", "bond0.100")
"""Output interfaces the egress properties send packets through."""
interface_entries = st.sampled_from(INTERFACES) | st.sampled_from(("eth", "e", "wl", "bond0")).map(
    lambda p: p + "*"
)
"""outputInterfaces entries: exact names and trailing-* patterns that overlap them."""


@st.composite
def egress_configs(draw: st.DrawFn, ipv6: bool = True) -> MasqConfig:
    """``configs`` with egress selection: outputInterfaces, sourceCIDRs and SNAT addresses,
    each present or not (absent means the config is one of ``configs``)."""
    from dataclasses import replace

    from pyrsistent import pvector

    base = draw(configs(ipv6))
    families: list[Family] = ["ipv4", "ipv6"] if ipv6 else ["ipv4"]
    sources = st.one_of(*(cidrs(f) for f in families))
    return replace(
        base,
        output_interfaces=pvector(sorted(set(draw(st.lists(interface_entries, max_size=3))))),
        source_cidrs=sorted_cidrs(draw(st.lists(sources, max_size=3))),
        output_address=draw(st.none() | st.just(ipaddress.IPv4Address("192.0.2.10"))),
        output_address_ipv6=draw(st.none() | st.just(ipaddress.IPv6Address("2001:db8::10"))),
    )


def probe_sources(config: MasqConfig, data: st.DataObject, family: Family) -> list[IPAddress]:
    """Source addresses at the edges of the config's sourceCIDRs of ``family``, and random."""
    cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    top = (1 << BITS[family]) - 1
    points = [
        cls(v)
        for net in config.source_cidrs
        if net.version == (4 if family == "ipv4" else 6)
        for v in (
            int(net.network_address) - 1,
            int(net.network_address),
            int(net.broadcast_address),
            int(net.broadcast_address) + 1,
        )
        if 0 <= v <= top
    ]
    picked = data.draw(st.lists(st.sampled_from(points), max_size=4)) if points else []
    return [*picked, data.draw(st.ip_addresses(v=4 if family == "ipv4" else 6))]


def canonical_ipv4_cidrs() -> st.SearchStrategy[str]:
    """Aligned IPv4 CIDRs as ``ip_network`` prints them; /0, /31, /32 and repeats likely."""
    return st.builds(
        lambda value, prefix: str(
            ipaddress.IPv4Network((value >> (32 - prefix) << (32 - prefix), prefix))
        ),
        st.sampled_from((0x0A000000, 0xC0A80100, 0xFFFFFFFF)) | st.integers(0, 2**32 - 1),
        st.sampled_from((0, 8, 24, 30, 31, 32)) | st.integers(0, 32),
    )


NEAR_MISSES = (
    "none",
    "host bits set",
    "octet over 255",
    "octet with a leading zero",
    "prefix over 32",
    "prefix with a leading zero",
    "not a CIDR",
    "IPv6",
    "IPv6 misaligned",
    "not text",
)
"""Kinds of entry other than a canonical IPv4 CIDR, most of them one step away from one
(``none``: no such entry; ``IPv6``: a valid IPv6 CIDR)."""


@st.composite
def near_miss(draw: st.DrawFn, kind: str) -> object:
    """An entry of ``kind`` (one of ``NEAR_MISSES`` but ``none``)."""
    prefix = draw(st.integers(0, 31))
    value = draw(st.integers(0, 2**32 - 1)) | 1 << draw(st.integers(0, 31 - prefix))
    octets = [str(value >> shift & 255) for shift in (24, 16, 8, 0)]
    aligned = str(ipaddress.IPv4Network((value, prefix), strict=False))
    address = aligned.split("/", maxsplit=1)[0]
    i = draw(st.integers(0, 3))
    if kind == "host bits set":
        return f"{ipaddress.IPv4Address(value)}/{prefix}"
    if kind in ("octet over 255", "octet with a leading zero"):
        wrong = str(draw(st.integers(256, 999))) if kind == "octet over 255" else "0" + octets[i]
        return ".".join([*octets[:i], wrong, *octets[i + 1 :]]) + f"/{prefix}"
    if kind == "prefix over 32":
        return f"{address}/{draw(st.integers(33, 99))}"
    if kind == "prefix with a leading zero":
        return f"{address}/0{prefix}"
    if kind == "not a CIDR":
        return draw(
            st.sampled_from([f"{address}/", address, f" {aligned}", f"{aligned}\n", "", "pods"])
        )
    if kind == "IPv6":
        return draw(st.sampled_from(["fd00::/8", "::/0", f"::ffff:{address}/128", "fd00::/128"]))
    if kind == "IPv6 misaligned":
        return draw(st.sampled_from(["fd00::1/8", "fe80::%eth0/64", "fd00::/129", "fd00::/08"]))
    assert kind == "not text", kind
    return draw(st.sampled_from([None, 7, True, 1.5, [aligned]]))


@st.composite
def ipv4_lists(draw: st.DrawFn, kind: str = "none") -> list[object]:
    """A CIDR list as a file holds it: canonical IPv4 entries (repeats and any order), with
    one to three entries of ``kind`` among them unless ``kind`` is ``none``, so those alone
    decide which path the list takes."""
    texts: list[object] = draw(st.lists(canonical_ipv4_cidrs(), max_size=10))
    if kind != "none":
        for _ in range(draw(st.integers(1, 3))):
            texts.insert(draw(st.integers(0, len(texts))), draw(near_miss(kind)))
    return texts
