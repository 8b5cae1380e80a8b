"""Config cases of the Go agents' tests, re-expressed against our core.

Ported (by reading, not copying) from upstream v2 (Azure/ip-masq-agent-v2:
``TestConfigValidate``, ``TestSyncConfig``, ``TestMerge``, ``TestMergeIncomplete``)
and v1 (kubernetes-sigs/ip-masq-agent: ``TestConfigValidate``, ``TestSyncConfig``).
Where our semantics differ on purpose, the test says so in a ``DIFFERS`` note:

- per-key defaults: a file that sets only ``masqLinkLocal`` keeps the default
  ``nonMasqueradeCIDRs`` (v2 drops the defaults as soon as any file matches);
- deterministic order: CIDRs come out in canonical order (family, address,
  prefix), not in file order, so the tests compare exact lists in that order;
- disagreements are reported as conflicts (v2 ORs booleans silently);
- empty/null entries and misaligned CIDRs fail with a message naming the file,
  key and index, not Go's ``CIDR "" could not be parsed``.

Cases about reading the directory (missing dir, file-name prefix filtering)
belong to the shell and are not ported here.
"""

from __future__ import annotations

from integration.expected import RESERVED, RFC1918, canonical
from returns.result import Failure

from masq.core import config
from masq.core.errors import ConfigError
from masq.core.fragment import parse_fragment
from masq.core.merge import Merged, merge

RFC1918_TEXT = list(RFC1918)


def load(*files: tuple[str, str], enable_ipv6: bool = True) -> Merged:
    """Parse and merge, as the agent does for one config directory listing."""
    fragments = [parse_fragment(text, name).unwrap() for name, text in files]
    return merge(fragments, enable_ipv6=enable_ipv6).unwrap()


def cidrs(merged: Merged) -> list[str]:
    return [str(n) for n in merged.config.non_masquerade_cidrs]


def error(text: str, name: str = "ip-masq-config-0") -> ConfigError:
    result = parse_fragment(text, name)
    assert isinstance(result, Failure)
    failure: ConfigError = result.failure()
    return failure


# --- TestConfigValidate (v1 and v2) ---


def test_validate_empty_and_default_lists() -> None:
    assert cidrs(load(("f", "nonMasqueradeCIDRs: []"))) == []
    assert cidrs(load(("f", "nonMasqueradeCIDRs: " + str(RFC1918_TEXT)))) == RFC1918_TEXT


def test_validate_cidr_not_matching_regex() -> None:
    # Go: `CIDR "abcdefg" could not be parsed`; ours also names key and index.
    e = error("nonMasqueradeCIDRs: [abcdefg]")
    assert (e.key, e.index, e.value) == ("nonMasqueradeCIDRs", 0, "abcdefg")
    e = error("nonMasqueradeCIDRs: [10.0.0.0/8, abcdefg]")
    assert (e.key, e.index, e.value) == ("nonMasqueradeCIDRs", 1, "abcdefg")


def test_validate_cidr_matching_regex_but_unparsable() -> None:
    e = error("nonMasqueradeCIDRs: [10.256.0.0/16]")
    assert (e.index, e.value) == (0, "10.256.0.0/16")
    assert "invalid address" in e.message


def test_validate_misaligned_cidr_suggests_the_network() -> None:
    # Go names the IP and the network ("10.0.0.1" vs "10.0.0.0/8"); so do we.
    e = error("nonMasqueradeCIDRs: [10.0.0.1/8]")
    assert e.value == "10.0.0.1/8" and "did you mean 10.0.0.0/8?" in e.message


# --- TestSyncConfig, v2 happy paths ---


def test_v2_single_yaml_full_keys() -> None:
    m = load(
        (
            "ip-masq-config-0",
            "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/8\n"
            "masqLinkLocal: true\nmasqLinkLocalIPv6: true\n",
        )
    )
    # DIFFERS: canonical order (10/8 before 172.16/12), not file order.
    assert cidrs(m) == ["10.0.0.0/8", "172.16.0.0/12"]
    assert m.config.masq_link_local and m.config.masq_link_local_ipv6
    assert list(m.conflicts) == []


def test_v2_single_yaml_just_non_masquerade_cidrs() -> None:
    m = load(("ip-masq-config-0", "nonMasqueradeCIDRs:\n  - 192.168.0.0/16\n"))
    assert cidrs(m) == ["192.168.0.0/16"]
    assert m.config.masq_link_local is False


def test_v2_single_yaml_just_masq_link_local() -> None:
    m = load(("ip-masq-config-0", "masqLinkLocal: true\n"))
    # DIFFERS: v2 ends with an empty nonMasqueradeCIDRs here (its defaults are dropped
    # once any file matches); per-key defaults keep RFC 1918, as v1 does.
    assert cidrs(m) == RFC1918_TEXT
    assert m.config.masq_link_local is True


def test_v2_single_json_partial_keys() -> None:
    text = (
        '\t\t{\n\t\t  "nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8"],\n'
        '\t\t  "masqLinkLocal": true\n\t\t}\n'
    )
    m = load(("ip-masq-config-0", text))
    assert cidrs(m) == ["10.0.0.0/8", "172.16.0.0/12"]
    assert m.config.masq_link_local is True


def test_v2_single_json_just_non_masquerade_cidrs() -> None:
    m = load(("ip-masq-config-0", '{\n\t"nonMasqueradeCIDRs": ["192.168.0.0/16"]\n}'))
    assert cidrs(m) == ["192.168.0.0/16"]


def test_v2_single_json_just_masq_link_local() -> None:
    m = load(("ip-masq-config-0", '{\n\t"masqLinkLocal": true\n}'))
    # DIFFERS: defaults kept (see the YAML twin above).
    assert cidrs(m) == RFC1918_TEXT
    assert m.config.masq_link_local is True


def test_v2_single_json_all_keys_with_ipv6() -> None:
    text = (
        '{"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8", "fc00::/7"],'
        ' "masqLinkLocal": true,\n          "masqLinkLocalIPv6": true}'
    )
    m = load(("ip-masq-config-0", text))
    assert cidrs(m) == ["10.0.0.0/8", "172.16.0.0/12", "fc00::/7"]
    assert m.config.masq_link_local and m.config.masq_link_local_ipv6


def test_v2_multiple_json_files_full_keys() -> None:
    m = load(
        (
            "ip-masq-config-0",
            '{"nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8", "fc00::/7"],'
            ' "masqLinkLocal": false, "masqLinkLocalIPv6": false}',
        ),
        (
            "ip-masq-config-1",
            '{"nonMasqueradeCIDRs": ["1.0.0.0/8", "2.2.0.0/16"],'
            ' "masqLinkLocal": true, "masqLinkLocalIPv6": false}',
        ),
    )
    assert cidrs(m) == ["1.0.0.0/8", "2.2.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "fc00::/7"]
    assert m.config.masq_link_local is True and m.config.masq_link_local_ipv6 is False
    # DIFFERS: v2 ORs silently; we report the disagreement with both sources.
    assert [str(c) for c in m.conflicts] == [
        "conflict on masqLinkLocal: ip-masq-config-0=false, ip-masq-config-1=true;"
        " OR: true (masquerade) wins: true"
    ]


def test_v2_multiple_yaml_files_partial_keys_duplicate_cidr() -> None:
    m = load(
        (
            "ip-masq-config-0",
            "nonMasqueradeCIDRs:\n  - 155.128.0.0/9\n  - 10.0.0.0/8\nmasqLinkLocal: false\n",
        ),
        ("ip-masq-config-1", "masqLinkLocalIPv6: true\n"),
        (
            "ip-masq-config-2",
            "nonMasqueradeCIDRs:\n  - 10.240.0.0/16\n  - 10.0.0.0/8\n  - 180.132.128.0/18\n",
        ),
    )
    assert cidrs(m) == ["10.0.0.0/8", "10.240.0.0/16", "155.128.0.0/9", "180.132.128.0/18"]
    assert m.config.masq_link_local is False and m.config.masq_link_local_ipv6 is True
    assert list(m.conflicts) == []


# --- TestSyncConfig, v2 sad paths ---


def test_v2_invalid_json_and_yaml() -> None:
    assert "not valid YAML or JSON" in error("{*").message
    assert "not valid YAML or JSON" in error("*").message


def test_v2_empty_entries() -> None:
    # Go: `CIDR "" could not be parsed` for all four; ours names the index and kind.
    assert str(error("nonMasqueradeCIDRs:\n  - \n")) == (
        "ip-masq-config-0: nonMasqueradeCIDRs[0]: null entry: expected a CIDR string"
    )
    mixed = (
        "nonMasqueradeCIDRs:\n  - 192.168.0.0/24\n  - \n  - fd88:1234::/80\n"
        "masqLinkLocal: true\nmasqLinkLocalIPv6: true\n"
    )
    assert error(mixed).index == 1
    assert "empty entry" in error('nonMasqueradeCIDRs:\n  - ""\n').message
    e = error('{"nonMasqueradeCIDRs": [null, "172.168.0.0/16"]}', "ip-masq-config-1")
    assert (e.source, e.index) == ("ip-masq-config-1", 0) and "null entry" in e.message


# --- TestMerge / TestMergeIncomplete (v2) ---


def test_v2_merge_both_full() -> None:
    c1 = (
        "c1",
        "nonMasqueradeCIDRs: [155.128.0.0/9, 10.240.0.0/16, 180.132.128.0/18, 3.3.3.0/24]\n"
        "masqLinkLocal: false\nmasqLinkLocalIPv6: true\n",
    )
    c2 = (
        "c2",
        "nonMasqueradeCIDRs: [1.0.0.0/8, 2.2.0.0/16, 3.3.3.0/24]\n"
        "masqLinkLocal: true\nmasqLinkLocalIPv6: false\n",
    )
    first = load(c1)
    assert cidrs(first) == ["3.3.3.0/24", "10.240.0.0/16", "155.128.0.0/9", "180.132.128.0/18"]
    assert (first.config.masq_link_local, first.config.masq_link_local_ipv6) == (False, True)
    both = load(c1, c2)
    assert cidrs(both) == [
        "1.0.0.0/8",
        "2.2.0.0/16",
        "3.3.3.0/24",
        "10.240.0.0/16",
        "155.128.0.0/9",
        "180.132.128.0/18",
    ]
    assert (both.config.masq_link_local, both.config.masq_link_local_ipv6) == (True, True)
    # DIFFERS: both booleans disagree, and we say so (v2 is silent).
    assert [c.key for c in both.conflicts] == ["masqLinkLocal", "masqLinkLocalIPv6"]
    # Order-independent, unlike v2's incremental c.merge(c1); c.merge(c2).
    assert load(c2, c1) == both


def test_v2_merge_incomplete() -> None:
    c1 = ("c1", "nonMasqueradeCIDRs: [10.128.0.192/26, 100.16.0.0/12]\n")
    m = load(c1, c1)  # v2 merges c1 twice; duplication changes nothing
    assert cidrs(m) == ["10.128.0.192/26", "100.16.0.0/12"]
    assert (m.config.masq_link_local, m.config.masq_link_local_ipv6) == (False, False)
    m = load(c1, ("c2", "masqLinkLocal: true\n"))
    assert cidrs(m) == ["10.128.0.192/26", "100.16.0.0/12"]
    assert m.config.masq_link_local is True
    assert list(m.conflicts) == []  # c2 has no opinion on the CIDRs: no conflict


# --- TestSyncConfig (v1): resyncInterval and cidrLimit ---


def test_v1_yaml_all_keys() -> None:
    m = load(
        (
            "config",
            "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/8\n"
            "cidrLimit: 64\nmasqLinkLocal: true\nresyncInterval: 5s\n",
        )
    )
    assert cidrs(m) == ["10.0.0.0/8", "172.16.0.0/12"]
    assert (m.config.cidr_limit, m.config.masq_link_local, m.config.resync_interval) == (
        64,
        True,
        5.0,
    )


def test_v1_defaults_for_absent_keys() -> None:
    # v1 keeps the defaults for keys a file leaves out; so do we (per key).
    m = load(("config", "masqLinkLocal: true\n"))
    assert cidrs(m) == RFC1918_TEXT
    assert (m.config.cidr_limit, m.config.resync_interval) == (64, 60.0)
    m = load(("config", "resyncInterval: 5m\n"))
    assert cidrs(m) == RFC1918_TEXT and m.config.resync_interval == 300.0


def test_v1_json_resync_interval_plain_and_escaped() -> None:
    assert load(("config", '{"resyncInterval": "5m"}')).config.resync_interval == 300.0
    escaped = '{"resyncInterval": "\\u0035\\u006d"}'  # JSON escapes for "5m"
    assert load(("config", escaped)).config.resync_interval == 300.0
    m = load(("config", '{"nonMasqueradeCIDRs": ["192.168.0.0/16"], "masqLinkLocal": true}'))
    assert cidrs(m) == ["192.168.0.0/16"] and m.config.resync_interval == 60.0


def test_v1_json_with_ipv6_and_resync() -> None:
    text = (
        '\t\t{\n\t\t  "nonMasqueradeCIDRs": ["172.16.0.0/12", "10.0.0.0/8", "fc00::/7"],\n'
        '\t\t  "masqLinkLocal": true,\n\t\t  "resyncInterval": "5s"\n\t\t}\n\t\t'
    )
    m = load(("config", text))
    assert cidrs(m) == ["10.0.0.0/8", "172.16.0.0/12", "fc00::/7"]
    assert m.config.resync_interval == 5.0
    # Without --enable-ipv6 the same file is refused, naming it.
    result = merge([parse_fragment(text, "config").unwrap()])
    assert isinstance(result, Failure)
    assert str(result.failure()) == (
        "config: nonMasqueradeCIDRs: 'fc00::/7': IPv6 CIDR given but IPv6 is not enabled"
        " (--enable-ipv6=false)"
    )


def test_default_ranges_are_upstreams_lists() -> None:
    """The library's default nonMasqueradeCIDRs are upstream's (v1/v2
    ``NewMasqConfigWithReservedRanges``), in upstream's order: RFC 1918, and with
    ``--nomasq-all-reserved-ranges`` RFC 1918 plus eight more reserved IPv4 ranges.  The
    merged config lists them in canonical order."""
    assert [str(n) for n in config.RFC1918] == list(RFC1918)
    assert [str(n) for n in config.RESERVED_RANGES] == list(RESERVED)
    assert cidrs(load(("x", "masqLinkLocal: false"))) == canonical(RFC1918)
    reserved = merge([], reserved_ranges=True).unwrap()
    assert cidrs(reserved) == canonical(RESERVED)
