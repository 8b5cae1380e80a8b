"""Knowing without listing, against fakes: the watch's dirty/clean logic, the repair back-off,
the nftables dataplane on the element channel, and an nft listing that spins.

``fake_elements.FakeElements`` plays netlink over ``FakeNft``'s state and notifies each
commit as the kernel does, so these tests check what the dataplane lists and writes, and
through which way, when others commit to its table, to their own tables, or notifications
are lost.  The namespace tests (tests/integration/test_heal.py) do the same with the kernel.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from collections.abc import Container

import pytest
from fake_elements import FakeElements, FakeSource
from fake_nft import FakeNft
from pyrsistent import pvector

from masq.core.config import MasqConfig
from masq.core.nftables.netlink import (
    Committed,
    Event,
    Lost,
    ObjectChanged,
    SetEdit,
    edit_batch,
    notification,
    replies,
)
from masq.core.nftables.table import desired_table
from masq.core.options import DataplaneOptions
from masq.shell import agent
from masq.shell.errors import AgentError, TransientError
from masq.shell.nft_watch import Burst, RepairBackoff, TableWatch
from masq.shell.nftables_runner import LIST_TIMEOUT_SECONDS, Nft, NftablesDataplane
from masq.shell.process import TIMEOUT_EXIT, Completed, Stdin

TABLE = "ip-masq-agent"
OURS = ("ip", TABLE)


def ip(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


CONFIG = MasqConfig(non_masquerade_cidrs=pvector([ip("10.0.0.0/8"), ip("192.168.0.0/16")]))


def change(kind: str = "element", name: str | None = "non-masquerade-v4") -> ObjectChanged:
    return ObjectChanged(kind, False, "ip", TABLE, name, 0)  # type: ignore[arg-type]


# --- the watch -----------------------------------------------------------------------


def test_only_a_foreign_commit_to_the_watched_table_makes_the_watch_dirty() -> None:
    source = FakeSource()
    watch = TableWatch(source, {OURS})
    watch.settle()
    source.queued = [change()]  # a commit still in progress
    assert not watch.poll() and not watch.dirty
    source.queued = [Committed(2, 99, "nft", 0)]  # ... ends: it was a foreign one
    burst = watch.poll()
    assert watch.dirty and burst.who() == "pid 99 (nft)"
    assert burst.changes() == "element non-masquerade-v4 deleted"
    watch.settle()
    other = ObjectChanged("rule", True, "ip", "kube-proxy", "services", 0)
    source.queued = [other, Committed(3, 99, "kube-proxy", 0)]
    assert not watch.poll() and not watch.dirty  # another table: not news


def test_the_agents_own_commits_and_its_nfts_are_not_news() -> None:
    source = FakeSource()
    watch = TableWatch(source, {OURS})
    watch.settle()
    source.queued = [change(), Committed(2, __import__("os").getpid(), "python3", 0)]
    assert not watch.poll() and not watch.dirty
    watch.own(pid=31337, portid=31337)  # an nft the agent started
    source.queued = [change("chain", "postrouting"), Committed(3, 31337, "nft", 0)]
    assert not watch.poll() and not watch.dirty
    source.queued = [change("chain", "postrouting"), Committed(4, 31338, "nft", 0)]
    assert watch.poll() and watch.dirty


def test_the_source_is_told_the_agents_ports_so_their_changes_need_no_parsing() -> None:
    """Each poll hands the source the ports the agent wrote from (and its nfts' ports):
    what the source leaves out of those commits is never news; a commit from any other
    port still is."""
    asked: list[Container[int]] = []

    class Recording(FakeSource):
        def read(self, *, skip: Container[int] = frozenset()) -> list[Event]:
            asked.append(skip)
            return super().read(skip=skip)

    source = Recording()
    watch = TableWatch(source, {OURS})
    watch.settle()
    watch.own(portid=777)
    watch.own(pid=31337, portid=31337)
    ours = ObjectChanged("element", True, "ip", TABLE, "non-masquerade-v4", 777)
    source.queued = [ours, Committed(5, None, None, 777)]
    assert not watch.poll() and not watch.dirty
    assert asked == [frozenset({777, 31337})]
    theirs = ObjectChanged("element", True, "ip", TABLE, "non-masquerade-v4", 778)
    source.queued = [theirs, Committed(6, None, None, 778)]
    assert watch.poll() and watch.dirty


def test_lost_notifications_make_the_watch_dirty() -> None:
    source = FakeSource()
    watch = TableWatch(source, {OURS})
    watch.settle()
    source.queued = [Lost()]
    burst = watch.poll()
    assert burst.lost and watch.dirty and burst.objects() == {"notifications lost"}


def test_after_a_loss_the_tail_of_a_commit_is_not_laid_at_the_next_committers_door() -> None:
    """An overflow drops the end of the agent's own big commit, its NEWGEN included; what
    was queued before it is read after the loss.  The next NEWGEN is someone else's (a
    writer on its own table): it must not be blamed for the agent's changes."""
    source = FakeSource()
    watch = TableWatch(source, {OURS})
    watch.settle()
    source.queued = [Lost(), change("table", None), change("chain", "postrouting")]
    assert watch.poll().objects() == {"notifications lost"}
    other = ObjectChanged("rule", True, "ip", "kube-proxy", "services", 0)
    source.queued = [other, Committed(9, 4242, "nft", 0)]
    assert not watch.poll()
    watch.settle()  # also forgets a commit's start read before a listing
    source.queued = [change()]
    watch.poll()
    watch.settle()
    source.queued = [Committed(10, 4242, "nft", 0)]
    assert not watch.poll() and not watch.dirty


def test_relevant_narrows_a_table_to_the_objects_the_agent_owns() -> None:
    source = FakeSource()
    nat = ("ip", "nat")
    watch = TableWatch(source, {nat}, relevant=lambda c: c.name in {"POSTROUTING", "MASQ"})
    watch.settle()
    source.queued = [
        ObjectChanged("rule", True, "ip", "nat", "KUBE-SVC-X", 0),
        Committed(2, 7, "", 0),
    ]
    assert not watch.poll() and not watch.dirty
    source.queued = [ObjectChanged("rule", False, "ip", "nat", "MASQ", 0), Committed(3, 7, "", 0)]
    assert watch.poll().objects() == {"rule MASQ"} and watch.dirty


# --- back-off of repeated repairs ----------------------------------------------------------


def test_repairs_of_the_same_objects_back_off_doubling_up_to_the_cap() -> None:
    backoff = RepairBackoff(first=0.5, cap=4.0, window=30.0)
    fight = frozenset({"element non-masquerade-v4"})
    delays = []
    now = 0.0
    for _ in range(7):
        delays.append(backoff.delay(fight, now))
        now += delays[-1] + 0.2  # the other agent answers 0.2 s after each repair
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(frozenset({"table"}), now) == 0.0  # other objects: at once
    assert backoff.delay(fight, now + 60) == 0.0  # quiet for longer than the window


def test_a_sync_that_wrote_nothing_ends_the_back_off() -> None:
    """Nobody undid the agent's writes, so the next repair of the same objects is not a
    repeat; without ``calm`` it would wait, as the fight above does."""
    backoff = RepairBackoff(first=0.5, cap=4.0, window=30.0)
    lost = frozenset({"notifications lost"})
    assert [backoff.delay(lost, t) for t in (0.0, 1.0, 2.5)] == [0.0, 0.5, 1.0]
    backoff.calm()
    assert backoff.delay(lost, 4.0) == 0.0 and backoff.repeats == 0
    assert backoff.delay(lost, 4.5) == 0.5  # a repeat again until the next calm


def test_a_burst_says_who_from_proc_when_the_kernel_does_not_name_the_process() -> None:
    from masq.core.nftables.netlink import ForeignCommit

    me = __import__("os").getpid()
    burst = Burst((ForeignCommit(5, me, None, (change(),)),))
    with open(f"/proc/{me}/comm") as f:
        assert burst.who() == f"pid {me} ({f.read().strip()})"
    assert Burst((ForeignCommit(5, None, None, (change(),)),)).who() == "pid ?"


# --- the dataplane on the element channel ---------------------------------------------------


def watched(fake: FakeNft) -> tuple[NftablesDataplane, FakeElements]:
    channel = FakeElements(fake)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel(), channel)
    assert plane.watch() is not None
    return plane, channel


def synced(plane: NftablesDataplane, config: MasqConfig) -> None:
    plane.apply(plane.plan(config))


def test_a_clean_resync_lists_nothing_and_writes_nothing_whatever_other_tables_do() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    config = CONFIG
    synced(plane, config)
    calls, reads = len(fake.calls), len(channel.reads)
    for _ in range(5):
        channel.elsewhere()  # kube-proxy commits: the generation moves every time
        p = plane.plan(config)
        assert p.ops == () and p.listed is False
    assert len(fake.calls) == calls and len(channel.reads) == reads


def test_a_foreign_change_to_the_table_makes_the_next_sync_list_and_repair() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    config = CONFIG
    synced(plane, config)
    channel.foreign(f"delete element ip {TABLE} non-masquerade-v4 {{ 10.0.0.0/8 }}\n", [change()])
    p = plane.plan(config)
    assert p.listed is True and channel.reads  # the elements came over the channel
    assert fake.nft_calls()[-1] == "-t -j"  # the structure from the terse ruleset listing
    batches = len(fake.batches)
    plane.apply(p)
    assert len(fake.batches) == batches  # element-only: one netlink batch, no nft
    assert channel.writes[-1][0].add == (ip("10.0.0.0/8"),)
    assert fake.state.tables["ip"] == desired_table(config, DataplaneOptions())
    assert plane.plan(config).listed is False  # its own write was not news


def element_changes(delete: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> list[ObjectChanged]:
    """What the kernel notifies for such an element commit (the batch's own messages)."""
    edit = SetEdit("ip", TABLE, "non-masquerade-v4", tuple(map(ip, delete)), tuple(map(ip, add)))
    found = [notification(r) for r in replies(edit_batch([edit], 1).data)]
    return [c for c in found if isinstance(c, ObjectChanged)]


def test_a_foreign_element_change_is_followed_from_its_notifications_without_listing() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    synced(plane, CONFIG)
    calls, reads = len(fake.calls), len(channel.reads)
    gone = f"delete element ip {TABLE} non-masquerade-v4 {{ 10.0.0.0/8 }}\n"
    channel.foreign(gone, element_changes(delete=("10.0.0.0/8",)))
    extra = f"add element ip {TABLE} non-masquerade-v4 {{ 203.0.113.0/24 }}\n"
    channel.foreign(extra, element_changes(add=("203.0.113.0/24",)))
    p = plane.plan(CONFIG)
    assert p.listed is False and len(fake.calls) == calls and len(channel.reads) == reads
    assert {type(op).__name__: op.elements for op in p.ops} == {  # type: ignore[union-attr]
        "DeleteElements": (ip("203.0.113.0/24"),),
        "AddElements": (ip("10.0.0.0/8"),),
    }
    plane.apply(p)
    assert fake.state.tables["ip"] == desired_table(CONFIG, DataplaneOptions())
    assert plane.plan(CONFIG).ops == ()


def test_an_element_change_that_does_not_fit_the_known_table_makes_it_list() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    synced(plane, CONFIG)
    reads = len(channel.reads)
    # told of a deletion of an element the agent does not know of: its model is off
    channel.foreign("", element_changes(delete=("172.16.0.0/12",)))
    assert plane.plan(CONFIG).listed is True and len(channel.reads) > reads


def test_lost_notifications_make_the_next_sync_list() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    synced(plane, CONFIG)
    channel.lose()
    assert plane.plan(CONFIG).listed is True


def test_a_config_change_is_planned_from_the_known_table_and_written_over_netlink() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    synced(plane, CONFIG)
    calls, reads = len(fake.calls), len(channel.reads)
    cidrs = [ip(f"100.64.{i}.0/24") for i in range(20)]  # past nft's set reload threshold
    bigger = MasqConfig(non_masquerade_cidrs=pvector([*CONFIG.non_masquerade_cidrs, *cidrs]))
    p = plane.plan(bigger)
    assert p.listed is False and {type(op).__name__ for op in p.ops} == {"AddElements"}
    plane.apply(p)
    assert len(fake.calls) == calls  # neither listed nor written by nft
    assert len(channel.reads) == reads and len(channel.writes[-1][0].add) == 20
    assert fake.state.tables["ip"] == desired_table(bigger, DataplaneOptions())


def test_a_structural_repair_goes_to_nft_and_its_pid_is_the_agents() -> None:
    fake = FakeNft()
    plane, channel = watched(fake)
    config = CONFIG
    synced(plane, config)
    channel.foreign(f"flush chain ip {TABLE} postrouting\n", [change("rule", "postrouting")])
    p = plane.plan(config)
    plane.apply(p)
    assert fake.batches[-1].startswith("flush chain") or "postrouting" in fake.batches[-1]
    assert fake.state.tables["ip"] == desired_table(config, DataplaneOptions())


def test_without_netlink_access_the_nft_cli_path_is_kept_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeNft()
    channel = FakeElements(fake, refuse_listen=errno.EPERM)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel(), channel)
    with caplog.at_level(logging.INFO, logger="masq"):
        assert plane.watch() is None
        synced(plane, CONFIG)
        plane.plan(CONFIG)
    said = [r for r in caplog.records if r.getMessage().startswith("nftables: elements")]
    assert [r.getMessage() for r in said] == ["nftables: elements through the nft CLI"]
    assert channel.reads == [] and channel.writes == []
    assert fake.nft_calls()[-1] == "-f -"  # the write went to nft


def test_another_refusal_of_the_subscription_is_not_hidden() -> None:
    fake = FakeNft()
    channel = FakeElements(fake, refuse_listen=errno.EMFILE)
    plane = NftablesDataplane(DataplaneOptions(), fake, fake.kernel(), channel)
    with pytest.raises(OSError, match="Too many open files"):
        plane.watch()


# --- an nft that spins ---------------------------------------------------------------------


def test_a_listing_that_spins_is_bounded_reported_in_one_line_and_retried_with_backoff() -> None:
    """nft restarts a listing whenever the generation moves under it: beside a busy writer
    it may never finish.  It is killed at the timeout, told in one line, and retried."""
    timeouts: list[float | None] = []

    def spinning(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
        timeouts.append(timeout)
        return Completed(tuple(argv), TIMEOUT_EXIT, "", f"timed out after {timeout:g}s")

    nft = Nft(TABLE, spinning)
    with pytest.raises(TransientError) as raised:
        nft.structure("ip")
    assert "\n" not in str(raised.value) and "timed out after 30s" in str(raised.value)
    with pytest.raises(TransientError):
        nft.list("ip")
    assert timeouts == [LIST_TIMEOUT_SECONDS, LIST_TIMEOUT_SECONDS]
    slept: list[float] = []
    with pytest.raises(AgentError, match=r"timed out after 30s \(10 attempts\)"):
        agent.with_retries(lambda: nft.structure("ip"), cap=8.0, sleep=slept.append)
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0]


# --- item 6: iptables on the nft backend ---------------------------------------------------


def test_iptables_nft_lists_only_when_our_chain_or_the_jump_was_touched() -> None:
    """kube-proxy in iptables mode rewrites its own nat chains all the time: those commits
    move the generation but name other chains, so a resync lists nothing; a commit that
    names our chain or POSTROUTING (or the table) makes it list."""
    from fake_iptables import FakeIptables, FakeKernel

    from masq.shell.iptables_runner import IptablesDataplane

    fake, kernel, source = FakeIptables(), FakeKernel(gen=1), FakeSource()
    plane = IptablesDataplane(
        DataplaneOptions(), backend=lambda: "nft", runner=fake, kernel=kernel, listen=lambda: source
    )
    assert plane.watch() is not None
    plane.apply(plane.plan(CONFIG))
    plane.plan(CONFIG)  # lists once after the write, then knows
    listings = len(fake.calls)
    for gen in range(2, 6):
        kernel.gen = gen
        other = ObjectChanged("rule", True, "ip", "nat", "KUBE-SERVICES", 0)
        source.queued = [other, Committed(gen, 4242, "iptables-nft-re", 0)]
        p = plane.plan(CONFIG)
        assert all(not f.ops for f in p.families)
    assert len(fake.calls) == listings  # nothing listed beside kube-proxy
    kernel.gen = 7
    ours = ObjectChanged("rule", False, "ip", "nat", "IP-MASQ-AGENT", 0)
    source.queued = [ours, Committed(7, 4242, "iptables", 0)]
    plane.plan(CONFIG)
    assert len(fake.calls) > listings


def test_iptables_legacy_watches_nothing() -> None:
    from fake_iptables import FakeIptables, FakeKernel

    from masq.shell.iptables_runner import IptablesDataplane

    plane = IptablesDataplane(
        DataplaneOptions(),
        backend=lambda: "legacy",
        runner=FakeIptables(version="iptables v1.8.9 (legacy)"),
        kernel=FakeKernel(gen=1),
        listen=FakeSource,
    )
    assert plane.watch() is None


def test_a_command_run_tells_its_pid_so_its_commits_are_known_as_the_agents() -> None:
    from masq.shell.process import run_command

    done = run_command(["sh", "-c", "echo $$"])
    assert done.exit_code == 0 and done.pid == int(done.stdout) != __import__("os").getpid()
