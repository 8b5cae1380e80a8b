"""The iptables runner: which commands each backend runs, and how failures are classified."""

from __future__ import annotations

import pytest
from fake_iptables import FakeIptables

from masq.core.addresses import Family
from masq.core.config import MasqConfig
from masq.core.iptables.rules import desired_ruleset
from masq.core.options import DataplaneOptions
from masq.shell import iptables_runner as iptables
from masq.shell.errors import AgentError, TransientError
from masq.shell.iptables_runner import Iptables, is_transient, parse_version
from masq.shell.process import Completed

CHAIN = "IP-MASQ-AGENT"


@pytest.mark.parametrize(
    ("backend", "family", "binary"),
    [
        ("nft", "ipv4", "iptables-nft"),
        ("nft", "ipv6", "ip6tables-nft"),
        ("legacy", "ipv4", "iptables-legacy"),
        ("legacy", "ipv6", "ip6tables-legacy"),
    ],
)
def test_observe_runs_two_chain_listings(
    backend: iptables.ResolvedBackend, family: Family, binary: str
) -> None:
    fake = FakeIptables()
    Iptables(backend, family, fake).observe(CHAIN)
    assert fake.calls == [
        [binary, "--wait=5", "-t", "nat", "-S", "POSTROUTING"],
        [binary, "--wait=5", "-t", "nat", "-S", CHAIN, "-v"],
    ]


def test_absent_chain_is_not_an_error() -> None:
    observed = Iptables("nft", "ipv4", FakeIptables()).observe(CHAIN)
    assert observed.chain(CHAIN) is None


def test_nft_1_8_9_incompatible_message_for_missing_chain_means_absent() -> None:
    def runner(
        argv: list[str], stdin: str | int | None = None, timeout: float | None = None
    ) -> Completed:
        if argv[-1] == "-v":
            err = "iptables v1.8.9 (nf_tables): chain `X' in table `nat' is incompatible"
            return Completed(tuple(argv), 1, "", err)
        return Completed(tuple(argv), 0, "-P POSTROUTING ACCEPT\n", "")

    assert Iptables("nft", "ipv4", runner).observe(CHAIN).chain(CHAIN) is None


def test_observe_round_trips_the_desired_rules() -> None:
    desired = desired_ruleset(MasqConfig(), "ipv4", DataplaneOptions())
    observed = Iptables("nft", "ipv4", FakeIptables.holding(desired)).observe(CHAIN)
    assert observed == desired


def test_listing_failure_raises_with_stderr_reason() -> None:
    def runner(
        argv: list[str], stdin: str | int | None = None, timeout: float | None = None
    ) -> Completed:
        return Completed(tuple(argv), 3, "", "iptables: Permission denied (you must be root)\n")

    with pytest.raises(AgentError, match="Permission denied") as info:
        Iptables("nft", "ipv4", runner).observe(CHAIN)
    assert not isinstance(info.value, TransientError)


@pytest.mark.parametrize(
    ("code", "stderr", "transient"),
    [
        (4, "", True),
        (1, "Another app is currently holding the xtables lock. Stopped waiting after 5s.", True),
        (1, "iptables-restore: Resource temporarily unavailable", True),
        (1, "iptables-restore: line 3 failed", False),
        (2, "Bad argument", False),
        # measured: iptables-nft without CAP_NET_ADMIN exits 4, legacy exits 3
        (4, "Could not fetch rule set generation id: Permission denied (you must be root)", False),
        (3, "can't initialize iptables table `nat': Permission denied (you must be root)", False),
    ],
)
def test_transient_classification(code: int, stderr: str, transient: bool) -> None:
    assert is_transient(Completed(("x",), code, "", stderr)) is transient


def test_restore_sends_script_on_stdin_with_bounded_lock_wait() -> None:
    fake = FakeIptables()
    Iptables("nft", "ipv6", fake).restore(f"*nat\n:{CHAIN} - [0:0]\nCOMMIT\n")
    assert fake.calls == [["ip6tables-nft-restore", "--noflush", "--wait=5"]]
    assert fake.stdin == [f"*nat\n:{CHAIN} - [0:0]\nCOMMIT\n"]
    assert fake.ruleset("ipv6").chain(CHAIN) is not None
    assert fake.ruleset("ipv4").chain(CHAIN) is None  # the family's own table only


def test_a_refused_restore_is_an_error_naming_the_line() -> None:
    fake = FakeIptables()
    with pytest.raises(AgentError, match="line 2 failed") as raised:
        Iptables("nft", "ipv4", fake).restore(f"*nat\n-A {CHAIN} -j RETURN\nCOMMIT\n")
    assert not isinstance(raised.value, TransientError)


def test_restore_lock_contention_is_transient() -> None:
    fake = FakeIptables(restore_results=[(4, "Another app is currently holding the xtables lock")])
    with pytest.raises(TransientError) as raised:
        Iptables("legacy", "ipv4", fake).restore("*nat\nCOMMIT\n")
    assert str(raised.value) == (
        "ipv4 iptables-restore failed (iptables-legacy-restore):"
        " Another app is currently holding the xtables lock"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iptables v1.8.9 (nf_tables)", (1, 8, 9)),
        ("iptables v1.6.1", (1, 6, 1)),
        ("ip6tables-legacy v1.4", (1, 4, 0)),
        ("garbage", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


def test_random_fully_trusts_the_kernel_without_a_process() -> None:
    fake = FakeIptables()
    assert Iptables("nft", "ipv4", fake).supports_random_fully(True) is True
    assert fake.calls == []


@pytest.mark.parametrize(("version", "supported"), [("v1.6.2", True), ("v1.6.1", False)])
def test_random_fully_asks_version_once_per_binary(version: str, supported: bool) -> None:
    fake = FakeIptables(version=f"iptables {version} (legacy)")
    table = Iptables("legacy", "ipv4", fake)
    assert table.supports_random_fully(False) is supported
    assert table.supports_random_fully(False) is supported
    assert fake.calls == [["iptables-legacy", "--version"]]


def test_leftovers_ask_the_kernel_before_looking_for_binaries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle nftables-mode resync looks for no iptables binary when netlink and /proc
    say no chain of ours is left; a chain the kernel reports is found and listed."""
    from fake_iptables import FakeKernel

    looked: list[str] = []

    def which(name: str) -> str:
        looked.append(name)
        return f"/usr/sbin/{name}"

    monkeypatch.setattr(iptables, "_which", which)
    fake = FakeIptables()
    kernel = FakeKernel(chains=set(), legacy=frozenset({"filter"}))
    assert iptables.leftover_tables(CHAIN, fake, kernel) == ()
    assert looked == []
    assert fake.calls == []
    kernel.chains = {("ip6", "nat", CHAIN)}
    found = iptables.leftover_tables(CHAIN, fake, kernel)
    assert [(t.backend, t.family) for t in found] == [("nft", "ipv6")]
    assert looked == ["ip6tables-nft", "ip6tables-nft-restore"]


def test_what_version_said_is_the_dataplanes_own_state() -> None:
    """A dataplane asks each binary's ``--version`` once, however often it makes its tables;
    another dataplane (another process, or a test) asks again: no module-level cache."""
    from fake_iptables import FakeKernel

    from masq.core.options import DataplaneOptions

    fake = FakeIptables(version="iptables v1.8.9 (legacy)")

    def plane() -> iptables.IptablesDataplane:
        return iptables.IptablesDataplane(
            DataplaneOptions(), backend=lambda: "legacy", runner=fake, kernel=FakeKernel()
        )

    first = plane()
    for _ in range(3):
        assert all(t.supports_random_fully(False) for t in first.tables())
    assert fake.calls == [["iptables-legacy", "--version"]]
    assert all(t.supports_random_fully(False) for t in plane().tables())
    assert fake.calls == [["iptables-legacy", "--version"]] * 2
