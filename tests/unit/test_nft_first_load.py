"""The nftables dataplane's first load on a node without a table of ours (``_load``).

With the netlink element channel open, the table comes in three commits (``load_stages``):
the structure from ``nft -f`` with empty sets and a base chain without rules, the elements
in one netlink batch, the base chain's rules from ``nft -f``.  A table of ours already
present is replaced in one ``nft -f`` batch as before.  ``FakeNft`` models the kernel,
``FakeElements`` the channel over the same model.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Sequence

import pytest
from fake_elements import FakeElements
from fake_nft import FakeNft
from pyrsistent import pvector

from masq.core.config import MasqConfig
from masq.core.nftables.codec import state_of
from masq.core.nftables.model import NftState, NftTable
from masq.core.nftables.netlink import SetEdit
from masq.core.nftables.table import desired_table
from masq.core.options import DataplaneOptions
from masq.shell.errors import TransientError
from masq.shell.nft_elements import NetlinkError, Written
from masq.shell.nftables_runner import NftablesDataplane

CONFIG = MasqConfig(
    non_masquerade_cidrs=pvector(
        [ipaddress.ip_network(c) for c in ("10.0.0.0/8", "192.168.0.0/16", "fd00::/8")]
    ),
    masquerade_cidrs=pvector([ipaddress.ip_network("10.9.0.0/16")]),
)


class Channel(FakeElements):
    """The fake channel, recording the kernel's table at each element write; ``refuse``
    makes the next write fail with that errno, ``then_fail`` the nft batch after it
    with that message."""

    seen: list[NftTable | None]
    refuse: int | None
    then_fail: str | None

    def write(self, edits: Sequence[SetEdit]) -> Written:
        self.seen.append(self.nft.state.tables.get(edits[0].family))  # type: ignore[arg-type]
        if self.then_fail is not None:
            self.nft.fail_next = [(1, self.then_fail)]
        if self.refuse is not None:
            code, self.refuse = self.refuse, None
            raise NetlinkError("element batch", code)
        return super().write(edits)


def dataplane(options: DataplaneOptions) -> tuple[NftablesDataplane, FakeNft, Channel]:
    fake = FakeNft()
    channel = Channel(fake)
    channel.seen, channel.refuse, channel.then_fail = [], None, None
    return NftablesDataplane(options, fake, fake.kernel(), channel), fake, channel


@pytest.mark.parametrize("ipv6", [False, True])
def test_a_first_load_comes_in_three_commits_and_decides_nothing_before_its_rules(
    ipv6: bool,
) -> None:
    """On an empty node: the probe, the structure batch (no element, no base chain rule), one
    element batch over the channel while the base chain still has no rule, then the rules
    batch; the kernel then holds exactly the desired table, and the agent knows it."""
    options = DataplaneOptions(enable_ipv6=ipv6)
    plane, fake, channel = dataplane(options)
    plane.apply(plane.plan(CONFIG))
    desired = desired_table(CONFIG, options)
    assert fake.state == state_of([desired])
    assert [c[1] for c in fake.calls if c[-2:] == ["-f", "-"]] == ["-c", "-f", "-f"]
    structure, rules = fake.batches[1:]
    assert "elements" not in structure and " @" not in structure  # no element, no lookup rule
    assert rules.startswith(f"flush chain {desired.family} ip-masq-agent postrouting\n")
    assert len(channel.writes) == 1
    written = {e.set: e.add for e in channel.writes[0]}
    assert written == {name: tuple(s.ordered()) for name, s in desired.sets.items() if s.elements}
    during = channel.seen[0]
    assert during is not None and not during.chains["postrouting"].rules
    assert plane.plan(CONFIG).ops == ()  # remembered: three commits, the generation followed


def test_a_table_of_ours_present_is_replaced_in_one_nft_batch() -> None:
    """Only an empty node takes the stages: a table of ours in the other family (IPv6 just
    enabled) makes one batch that makes the new table and deletes the old, as before."""
    plane, fake, channel = dataplane(DataplaneOptions(enable_ipv6=True))
    fake.state = state_of([desired_table(CONFIG, DataplaneOptions())])
    plane.apply(plane.plan(CONFIG))
    assert fake.state == state_of([desired_table(CONFIG, DataplaneOptions(enable_ipv6=True))])
    assert len(fake.batches) == 2 and channel.writes == []  # the probe, then one batch


def test_a_refused_element_batch_removes_the_unfinished_table_and_replaces_it_whole() -> None:
    """The kernel refuses the element batch: the table made for it is deleted again (nothing
    half made stays), and the sync falls back to the whole table in one nft batch."""
    plane, fake, channel = dataplane(DataplaneOptions())
    channel.refuse = errno.EINVAL
    plane.apply(plane.plan(CONFIG))
    assert fake.state == state_of([desired_table(CONFIG, DataplaneOptions())])
    assert fake.batches[2] == "delete table ip ip-masq-agent\n"
    assert "elements = {" in fake.batches[3]  # the whole table, elements included


def test_a_transient_failure_of_the_rules_batch_leaves_no_table() -> None:
    """nft fails the last stage for want of resources: the unfinished table is deleted and
    the failure is transient (the sync is retried on an empty node again)."""
    plane, fake, channel = dataplane(DataplaneOptions())
    channel.then_fail = "Error: Could not process rule: Cannot allocate memory\n"
    with pytest.raises(TransientError):
        plane.apply(plane.plan(CONFIG))
    assert fake.state == NftState() and fake.batches[-1] == "delete table ip ip-masq-agent\n"


def test_netlink_unusable_at_the_first_load_writes_the_table_in_one_nft_batch() -> None:
    """A kernel that refuses netlink access to nf_tables (EPERM): the unfinished table goes,
    the whole table comes in one nft batch, and the channel stays closed from then on."""
    plane, fake, channel = dataplane(DataplaneOptions())
    channel.refuse = errno.EPERM
    plane.apply(plane.plan(CONFIG))
    assert fake.state == state_of([desired_table(CONFIG, DataplaneOptions())])
    assert "elements = {" in fake.batches[-1]
    assert plane._elements is None
