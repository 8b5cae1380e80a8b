"""The fake iptables and nft refuse what the kernel refuses, and a refusal changes nothing.

A unit test of the agent can only catch a wrong write if the fake it writes to would
refuse it, or would then list something other than what the agent wanted: these tests
mutate scripts the agent's codecs write and check that each fake says no, keeps its
state, and otherwise lists exactly what was written.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from fake_iptables import FakeIptables, Refused, empty_nat, restore
from fake_nft import FakeNft, listing_json, run_batch
from pyrsistent import pvector

from masq.core.config import MasqConfig
from masq.core.iptables.codec import parse_save, render_restore
from masq.core.iptables.plan import plan
from masq.core.iptables.rules import RulesetOptions, desired_ruleset
from masq.core.nftables.codec import parse_listing, render_batch, state_of
from masq.core.nftables.model import NftState, ReplaceTable
from masq.core.nftables.table import TableOptions, desired_table
from masq.shell.dataplane import dataplane_options
from masq.shell.process import Completed, Runner, Stdin

CHAIN = "IP-MASQ-AGENT"
TABLE = "ip-masq-agent"
CONFIG = MasqConfig(
    non_masquerade_cidrs=pvector(
        ipaddress.ip_network(c) for c in ("10.0.0.0/8", "172.16.0.0/12", "fd00::/8")
    ),
    masquerade_cidrs=pvector([ipaddress.ip_network("10.240.0.0/16")]),
)

# --- iptables ----------------------------------------------------------------------


def first_script() -> str:
    """What the agent writes into an empty nat table."""
    desired = desired_ruleset(CONFIG, "ipv4", RulesetOptions())
    return render_restore(plan(desired, empty_nat("ipv4")))


def restore_into(fake: FakeIptables, script: str) -> Completed:
    return fake(["iptables-nft-restore", "--noflush", "--wait=5"], script)


def test_fake_iptables_holds_what_the_script_wrote_and_lists_it() -> None:
    fake = FakeIptables()
    assert restore_into(fake, first_script()).exit_code == 0
    desired = desired_ruleset(CONFIG, "ipv4", RulesetOptions())
    assert fake.ruleset() == desired
    listed = "".join(
        fake(["iptables-nft", "--wait=5", "-t", "nat", "-S", chain, "-v"], None).stdout
        for chain in ("POSTROUTING", CHAIN)
    )
    assert parse_save(listed, CHAIN, "ipv4").unwrap() == desired
    saved = fake(["iptables-nft-save", "-t", "nat"], None).stdout
    assert parse_save(saved, CHAIN, "ipv4").unwrap() == desired


def mutations(script: str) -> dict[str, str]:
    lines = script.splitlines(keepends=True)
    declare = next(i for i, ln in enumerate(lines) if ln.startswith(f":{CHAIN}"))
    return {
        "chain never declared": "".join(lines[:declare] + lines[declare + 1 :]),
        "no COMMIT": "".join(lines[:-1]),
        "filter, not nat": script.replace("*nat", "*filter", 1),
        "a word iptables does not know": script.replace("-j RETURN", "-j RETURN --bogus", 1),
        "a typo in a target": script.replace("-j RETURN", "-j RETRUN", 1),
        "an address of the other family": script.replace("10.0.0.0/8", "fd00::/8", 1),
        "an address that is none": script.replace("10.0.0.0/8", "10.0.0.0/33", 1),
        "a jump to a missing chain": script.replace(f"-j {CHAIN}", "-j KUBE-NOPE", 1),
        "an unknown command": script.replace("-A ", "-Z ", 1),
    }


@pytest.mark.parametrize("mutation", list(mutations(first_script())))
def test_fake_iptables_refuses_a_mutated_script_and_keeps_its_table(mutation: str) -> None:
    fake = FakeIptables()
    before = fake.ruleset()
    script = mutations(first_script())[mutation]
    assert script != first_script()
    done = restore_into(fake, script)
    assert done.exit_code == 1
    assert "failed" in done.stderr or "COMMIT expected" in done.stderr
    assert fake.ruleset() is before


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"-D {CHAIN} -d 192.168.0.0/16 -j RETURN", "no such rule"),
        (f"-D {CHAIN} 99", "position out of range"),
        (f"-I {CHAIN} 99 -j RETURN", "position out of range"),
        (f"-X {CHAIN}", "not empty"),
        ("-X POSTROUTING", "built-in"),
        ("-A KUBE-NOPE -j RETURN", "no chain"),
        ("-I KUBE-NOPE 1 -j RETURN", "no chain"),
        ("-D KUBE-NOPE 1", "no chain"),
        ("-D KUBE-NOPE -j RETURN", "no chain"),
        ("-F KUBE-NOPE", "no chain"),
        (f"-N {CHAIN}", "already exists"),
    ],
)
def test_fake_iptables_refuses_what_the_kernel_refuses(line: str, why: str) -> None:
    """Against a table holding the agent's chain: the whole script, its good first line
    included, changes nothing."""
    with pytest.raises(Refused, match=why):
        restore(
            restore(empty_nat("ipv4"), first_script()),
            f"*nat\n-A {CHAIN} -d 1.2.3.0/24 -j RETURN\n{line}\nCOMMIT\n",
        )


def test_fake_iptables_refuses_deleting_a_referenced_chain() -> None:
    """POSTROUTING still jumps to the chain: ``-X`` is refused even once it is empty."""
    table = restore(empty_nat("ipv4"), first_script())
    with pytest.raises(Refused, match="still referenced"):
        restore(table, f"*nat\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n")


# --- nft ---------------------------------------------------------------------------


def desired() -> ReplaceTable:
    return ReplaceTable(desired_table(CONFIG, TableOptions(enable_ipv6=True)))


def run_nft(fake: FakeNft, batch: str, *flags: str) -> Completed:
    fd = os.memfd_create("batch")
    try:
        os.write(fd, batch.encode())
        return fake(["nft", *flags, "-f", "-"], fd)
    finally:
        os.close(fd)


def test_fake_nft_holds_what_the_batch_wrote_and_lists_it() -> None:
    op = desired()
    fake = FakeNft()
    assert run_nft(fake, render_batch([op])).exit_code == 0
    assert fake.state == state_of([op.table])
    listed = fake(["nft", "-j", "list", "table", "inet", TABLE], None)
    assert parse_listing(listed.stdout, "inet", TABLE).unwrap() == op.table
    assert fake(["nft", "list", "tables"], None).stdout == f"table inet {TABLE}\n"
    assert fake(["nft", "-j", "list", "table", "ip", TABLE], None).exit_code == 1


def test_fake_nft_check_commits_nothing() -> None:
    fake = FakeNft()
    assert run_nft(fake, render_batch([desired()]), "-c").exit_code == 0
    assert fake.state == NftState() and fake.generation == 1


def nft_mutations(batch: str) -> dict[str, str]:
    return {
        "overlapping elements": batch.replace("10.0.0.0/8", "10.0.0.0/8, 10.1.0.0/16", 1),
        "a set never declared": batch.replace("@masquerade-v4", "@masquerade-v5", 1),
        "a jump to a missing chain": batch.replace("jump snat-to-node", "jump snat-to-nod", 1),
        "a word nft does not know": batch.replace("masquerade fully-random", "masq", 1),
        "an element of the other family": batch.replace("10.0.0.0/8", "fd01::/16", 1),
        "a set of the other type": batch.replace("ipv4_addr", "ipv6_addr", 1),
        "the table deleted twice": batch.replace(
            f"add table inet {TABLE}\n", f"delete table inet {TABLE}\n", 1
        ),
    }


@pytest.mark.parametrize("mutation", list(nft_mutations(render_batch([desired()]))))
def test_fake_nft_refuses_a_mutated_batch_and_keeps_its_table(mutation: str) -> None:
    fake = FakeNft()
    batch = nft_mutations(render_batch([desired()]))[mutation]
    assert batch != render_batch([desired()])
    done = run_nft(fake, batch)
    assert done.exit_code == 1 and "Error:" in done.stderr
    assert fake.state == NftState() and fake.generation == 1


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        (f"delete element inet {TABLE} non-masquerade-v4 {{ 192.168.0.0/16 }}", "not exist"),
        (f"add element inet {TABLE} non-masquerade-v4 {{ 10.0.0.255/32 }}", "overlaps"),
        (f"add element inet {TABLE} non-masquerade-v4 {{ 0.0.0.0/0 }}", "overlaps"),
        (f"add element inet {TABLE} non-masquerade-v9 {{ 1.0.0.0/8 }}", "no set"),
        (f"flush set inet {TABLE} nope", "no set"),
        (f"delete set inet {TABLE} non-masquerade-v4", "no set non-masquerade-v4"),
        (f"delete chain inet {TABLE} snat-to-node", "busy"),
        (f"add rule inet {TABLE} postrouting jump nowhere", "missing chain"),
        (f"flush chain inet {TABLE} nope", "no chain"),
        ("delete table ip other", "no table"),
        ("delete table inet other", "no table"),
        (f"add rule inet {TABLE} postrouting ip daddr 1.2.3.4 dnat to 5.6.7.8", "syntax"),
        (f"add element inet {TABLE} non-masquerade-v6 {{ 10.0.0.0/8 }}", "mismatch"),
    ],
)
def test_fake_nft_refuses_what_nft_refuses(statement: str, why: str) -> None:
    """Against the agent's table: the whole batch, its good first line included, changes
    nothing."""
    state = run_batch(NftState(), render_batch([desired()]))
    good = f"add element inet {TABLE} masquerade-v4 {{ 1.2.3.0/24 }}\n"
    with pytest.raises(Exception, match=why):
        run_batch(state, good + statement + "\n")
    fake = FakeNft(state=state)
    assert run_nft(fake, good + statement + "\n").exit_code == 1
    assert fake.state is state


def test_fake_nft_lists_element_counters_and_elements_written_one_by_one() -> None:
    state = run_batch(NftState(), render_batch([desired()]))
    extra = f"add element inet {TABLE} non-masquerade-v4 {{ 100.64.0.0/10, 1.2.3.4/32 }}\n"
    after = run_batch(state, extra)
    table = parse_listing(listing_json(after.tables["inet"]), "inet", TABLE).unwrap()
    elements = table.sets["non-masquerade-v4"].elements
    assert {str(e) for e in elements} == {
        "10.0.0.0/8",
        "172.16.0.0/12",
        "100.64.0.0/10",
        "1.2.3.4/32",
    }
    assert set(table.sets["non-masquerade-v4"].counters) == set(elements)


# --- what this buys the agent's tests --------------------------------------------------


def test_a_wrong_write_by_the_agent_is_seen_in_either_fakes_table(tmp_path: Path) -> None:
    """Had the agent written other rules than it meant (here its writes are changed on the
    way: a /16 becomes a /17), the table either fake holds after the sync is not the
    desired one, which the agent's tests compare; with the old accept-anything fakes the
    listing showed the desired table whatever was written."""
    from fake_iptables import FakeKernel

    from masq.shell.agent import Agent
    from masq.shell.metrics import Metrics
    from masq.shell.options import Options

    def corrupting(fake: Runner) -> Runner:
        def run(argv: list[str], stdin: Stdin = None, timeout: float | None = None) -> Completed:
            if isinstance(stdin, str):
                stdin = stdin.replace("169.254.0.0/16", "169.254.0.0/17")
            elif isinstance(stdin, int):
                text = os.pread(stdin, 1 << 20, 0).decode()
                os.ftruncate(stdin, 0)
                os.pwrite(stdin, text.replace("169.254.0.0/16", "169.254.0.0/17").encode(), 0)
            return fake(argv, stdin, timeout)

        return run

    for dataplane in ("iptables", "nftables"):
        opts = Options(
            config_dir=str(tmp_path),
            dataplane=dataplane,
            iptables_backend="nft",
            metrics_bind_address=None,
        )
        config = Agent(opts, Metrics()).load().merged.config
        iptables, nft = FakeIptables(), FakeNft()
        fake = nft if dataplane == "nftables" else iptables
        kernel = nft.kernel() if dataplane == "nftables" else FakeKernel()
        Agent(opts, Metrics(), corrupting(fake), kernel=kernel).sync()
        if dataplane == "iptables":
            assert iptables.ruleset() != desired_ruleset(config, "ipv4", dataplane_options(opts))
            assert "169.254.0.0/17" in iptables(["iptables-nft-save"], None).stdout
        else:
            assert nft.state != state_of([desired_table(config, dataplane_options(opts))])
        Agent(opts, Metrics(), fake, kernel=kernel).sync()  # written right, it is right
        if dataplane == "iptables":
            assert iptables.ruleset() == desired_ruleset(config, "ipv4", dataplane_options(opts))
        else:
            assert nft.state == state_of([desired_table(config, dataplane_options(opts))])
