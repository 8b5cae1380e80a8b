"""Set elements and notifications over netlink, against the kernel, with ``nft`` as the oracle.

Each test owns a network namespace holding a table shaped like the agent's (interval sets
with ``counter``, both families in an ``inet`` table); the netlink code runs in this
process, its sockets opened inside that namespace (``netns_thread.inside``), and ``nft``
runs there through ``ip netns exec``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from netlink_strategies import counters, disjoint_cidrs

from integration.netns_thread import inside
from integration.topology import namespace, run
from masq.core.addresses import Family, IPNetwork, family_of
from masq.core.nftables.netlink import (
    Committed,
    Lost,
    ObjectChanged,
    SetContents,
    SetEdit,
    Watch,
)
from masq.core.traffic import Counters
from masq.shell import netlink
from masq.shell.errors import TransientError
from masq.shell.nft_elements import (
    Listener,
    NetlinkBusy,
    NetlinkError,
    Written,
    read_counters,
    read_set,
    write_elements,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TABLE = "ip-masq-agent"
SETS: dict[Family, tuple[str, str]] = {
    "ipv4": ("masquerade-v4", "non-masquerade-v4"),
    "ipv6": ("masquerade-v6", "non-masquerade-v6"),
}
TABLE_TEXT = f"""
table inet {TABLE} {{
  set masquerade-v4 {{ type ipv4_addr; flags interval; counter; }}
  set non-masquerade-v4 {{ type ipv4_addr; flags interval; counter; }}
  set masquerade-v6 {{ type ipv6_addr; flags interval; counter; }}
  set non-masquerade-v6 {{ type ipv6_addr; flags interval; counter; }}
}}
"""
EXAMPLES = max(10, min(40, (settings.default or settings()).max_examples // 10))
KERNEL = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
NFT_JSON_MAX = 2**63 - 1
"""``nft -j`` prints counters as signed 64-bit numbers: larger ones would list negative."""


def nft(ns: str, *args: str, stdin: str | None = None) -> str:
    return run(["ip", "netns", "exec", ns, "nft", *args], stdin=stdin).stdout


@pytest.fixture(scope="module")
def module_ns() -> Iterator[str]:
    with namespace("netlink") as name:
        yield name


@pytest.fixture
def ns(module_ns: str) -> str:
    """The module's namespace with a fresh, empty table."""
    fresh(module_ns)
    return module_ns


def fresh(ns: str) -> None:
    nft(ns, "-f", "-", stdin=f"table inet {TABLE}\ndelete table inet {TABLE}\n{TABLE_TEXT}")


def _network(value: Any) -> IPNetwork | str:
    if isinstance(value, str):
        return ipaddress.ip_network(value)
    if "prefix" in value:
        return ipaddress.ip_network(f"{value['prefix']['addr']}/{value['prefix']['len']}")
    return f"{value['range'][0]}-{value['range'][1]}"  # no CIDR: can never equal one


def listed(ns: str, set_name: str) -> dict[IPNetwork | str, Counters]:
    """What ``nft -j list set`` shows: each element with its counter."""
    out = json.loads(nft(ns, "-j", "list", "set", "inet", TABLE, set_name))
    found: dict[IPNetwork | str, Counters] = {}
    for item in out["nftables"]:
        for elem in item.get("set", {}).get("elem", []):
            value, counter = (
                (elem["elem"]["val"], elem["elem"].get("counter"))
                if isinstance(elem, dict) and "elem" in elem
                else (elem, None)
            )
            counter = counter or {"packets": 0, "bytes": 0}
            found[_network(value)] = Counters(counter["packets"], counter["bytes"])
    return found


def read(ns: str, set_name: str, family: Family) -> SetContents:
    with inside(ns):
        return read_set("inet", TABLE, set_name, family)


def write(ns: str, edits: list[SetEdit]) -> Written | None:
    with inside(ns):
        return write_elements(edits)


def nft_elements(nets: dict[IPNetwork, Counters]) -> str:
    return ", ".join(f"{n} counter packets {c.packets} bytes {c.bytes}" for n, c in nets.items())


def nets(*texts: str) -> list[IPNetwork]:
    return [ipaddress.ip_network(t) for t in texts]


EDGES = (
    (nets("0.0.0.0/0"), nets("::/0")),
    (nets("255.255.255.255/32"), nets("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128")),
    (
        nets(
            *("0.0.0.0/32", "10.0.0.0/25", "10.0.0.128/25", "10.0.1.0/24", "192.168.1.1/32"),
            *("255.255.255.0/25", "255.255.255.128/26", "255.255.255.254/31"),
        ),
        nets(
            *("::/128", "fd00::/64", "fd00:0:0:1::/64", "2001:db8::1/128"),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120",
        ),
    ),
)
"""The shapes the encoding treats specially, tried on every run whatever hypothesis draws:
``/0``; a host route at the top of the range; host routes at the bottom, adjacent ranges, a
range ending at the top (whose interval end would lie past the last address)."""


@KERNEL
@example(v4=EDGES[0][0], v6=EDGES[0][1])
@example(v4=EDGES[1][0], v6=EDGES[1][1])
@example(v4=EDGES[2][0], v6=EDGES[2][1])
@given(v4=disjoint_cidrs("ipv4"), v6=disjoint_cidrs("ipv6"))
def test_netlink_writes_list_through_nft_as_exactly_those_elements(
    module_ns: str, v4: list[IPNetwork], v6: list[IPNetwork]
) -> None:
    """Disjoint CIDRs of both families (adjacent, /0, host routes, the top of the range)
    written over netlink in one batch into an inet table: nft lists exactly those elements,
    each with a zero counter, and reading them back over netlink gives what nft lists."""
    fresh(module_ns)
    edits = [
        SetEdit("inet", TABLE, SETS["ipv4"][0], add=tuple(v4)),
        SetEdit("inet", TABLE, SETS["ipv6"][1], add=tuple(v6)),
    ]
    write(module_ns, edits)
    written: tuple[tuple[Family, str, list[IPNetwork]], ...] = (
        ("ipv4", SETS["ipv4"][0], v4),
        ("ipv6", SETS["ipv6"][1], v6),
    )
    for family, name, nets in written:
        shown = listed(module_ns, name)
        assert shown == dict.fromkeys(nets, Counters(0, 0))
        back = read(module_ns, name, family)
        assert back.opaque == ()
        assert dict(back.counters) == shown


@KERNEL
@given(data=st.data(), family=st.sampled_from(["ipv4", "ipv6"]))
def test_a_delta_over_netlink_keeps_every_other_counter(
    module_ns: str, data: st.DataObject, family: Family
) -> None:
    """Elements seeded by nft with counters read back over netlink exactly as nft lists
    them; a delta over netlink (deletions and additions in one batch) then leaves nft
    listing the expected elements, every untouched element with its counter unchanged and
    every added one at zero."""
    fresh(module_ns)
    name = SETS[family][1]
    before: list[IPNetwork] = data.draw(disjoint_cidrs(family))
    seeded = {n: data.draw(counters(NFT_JSON_MAX)) for n in before}
    if seeded:
        nft(module_ns, "add", "element", "inet", TABLE, name, f"{{ {nft_elements(seeded)} }}")
    assert dict(read(module_ns, name, family).counters) == listed(module_ns, name) == seeded

    deleted = data.draw(st.lists(st.sampled_from(before), unique=True) if before else st.just([]))
    kept = [n for n in before if n not in deleted]
    candidates: list[IPNetwork] = data.draw(disjoint_cidrs(family))
    added = [n for n in candidates if not any(n.overlaps(k) for k in kept)]
    write(module_ns, [SetEdit("inet", TABLE, name, delete=tuple(deleted), add=tuple(added))])
    expected = {n: seeded[n] for n in kept} | dict.fromkeys(added, Counters(0, 0))
    assert listed(module_ns, name) == expected
    assert dict(read(module_ns, name, family).counters) == expected


def test_a_failing_batch_changes_nothing(ns: str) -> None:
    """Additions to both families in the same batch as the deletion of a missing element:
    the kernel refuses the whole batch, the error is one line naming errno and the
    message's job, and neither the elements nor the generation moved."""
    nft(
        ns,
        "add",
        "element",
        "inet",
        TABLE,
        "masquerade-v4",
        "{ 10.0.0.0/8 counter packets 3 bytes 4 }",
    )
    before = nft(ns, "-a", "list", "ruleset")
    with inside(ns):
        generation = netlink.generation()
    edits = [
        SetEdit("inet", TABLE, "masquerade-v4", add=(ipaddress.ip_network("11.0.0.0/8"),)),
        SetEdit(
            "inet",
            TABLE,
            "masquerade-v6",
            delete=(ipaddress.ip_network("fd00::/8"),),
            add=(ipaddress.ip_network("::/0"),),
        ),
    ]
    with pytest.raises(NetlinkError) as caught:
        write(ns, edits)
    assert caught.value.errno == errno.ENOENT
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("netlink: delete elements of inet ip-masq-agent masquerade-v6")
    assert "errno 2" in message
    assert nft(ns, "-a", "list", "ruleset") == before
    with inside(ns):
        assert netlink.generation() == generation


def _events_until(listener: Listener, pid: int) -> list[ObjectChanged | Committed | Lost]:
    """Events up to and including the commit by ``pid`` (the whole commit is queued when
    the committing call returned)."""
    events = listener.read()
    ends = [i for i, e in enumerate(events) if isinstance(e, Committed) and e.pid == pid]
    assert ends, events
    return events[: ends[0] + 1]


def test_the_listener_names_a_foreign_commit_and_our_own(ns: str) -> None:
    """A foreign ``nft add element`` shows as an element change of our table and set
    followed by a NEWGEN carrying nft's pid and port (nft's port is its pid as we see it);
    our own batch shows with our pid and the port it was sent from.  Folded by a Watch,
    each is foreign until its port (or pid) is declared ours."""
    with inside(ns):
        listener = Listener()
    with listener:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "nft",
                "add",
                "element",
                "inet",
                TABLE,
                "masquerade-v4",
                "{ 10.0.0.0/8 }",
            ]
        )
        assert proc.wait(timeout=30) == 0
        foreign = _events_until(listener, proc.pid)
        commit = foreign[-1]
        assert isinstance(commit, Committed)
        assert (commit.pid, commit.process) == (proc.pid, "nft")
        changes = [e for e in foreign if isinstance(e, ObjectChanged)]
        # one notification per element the kernel adds (start, end, nft's root at 0)
        assert {(e.kind, e.added, e.family, e.table, e.name) for e in changes} == {
            ("element", True, "inet", TABLE, "masquerade-v4")
        }
        assert all(e.portid == commit.portid for e in changes)
        assert commit.portid == proc.pid  # nft's socket port is its pid as we see it
        watch = Watch(frozenset({("inet", TABLE)}))
        _, seen = watch.feed(foreign)
        assert [f.pid for f in seen.foreign] == [proc.pid]
        assert not watch.owning(portid=proc.pid).feed(foreign)[1].dirty

        written = write(
            ns, [SetEdit("inet", TABLE, "masquerade-v6", add=(ipaddress.ip_network("fd00::/8"),))]
        )
        assert written is not None
        ours = _events_until(listener, os.getpid())
        assert ours[-1] == Committed(
            written.generation or -1, os.getpid(), "python", written.portid
        )
        changes = [e for e in ours if isinstance(e, ObjectChanged)]
        assert {(e.kind, e.table, e.name) for e in changes} == {("element", TABLE, "masquerade-v6")}
        assert watch.feed(ours)[1].dirty
        assert not watch.owning(portid=written.portid).feed(ours)[1].dirty
        assert not watch.owning(pid=os.getpid()).feed(ours)[1].dirty
        assert listener.read() == []


def test_the_listener_passes_over_our_own_changes_but_not_their_commit(ns: str) -> None:
    """Told which ports are ours, the listener leaves out the object notifications of our
    own commits (a first load of 100,000 CIDRs notifies 200,000 elements) and keeps their
    NEWGEN; a foreign commit in between is reported whole."""
    with inside(ns):
        listener = Listener(rcvbuf=8 << 20)  # room for every notification: none lost
    with listener:
        nets = tuple(ipaddress.ip_network(f"10.{i // 250}.{i % 250}.0/24") for i in range(500))
        first = write(ns, [SetEdit("inet", TABLE, "masquerade-v4", add=nets)])
        nft(ns, "add", "element", "inet", TABLE, "masquerade-v6", "{ fd00::/8 }")
        second = write(
            ns,
            [
                SetEdit(
                    "inet", TABLE, "non-masquerade-v4", add=(ipaddress.ip_network("11.0.0.0/8"),)
                )
            ],
        )
        assert first is not None and second is not None
        events = listener.read(skip={first.portid, second.portid})
        commits = [e for e in events if isinstance(e, Committed)]
        assert [c.portid for c in commits][::2] == [first.portid, second.portid]
        assert len(commits) == 3
        changes = [e for e in events if isinstance(e, ObjectChanged)]
        assert changes and {(e.table, e.name, e.portid) for e in changes} == {
            (TABLE, "masquerade-v6", commits[1].portid)
        }
        assert commits[1].process == "nft"
        assert listener.read() == []


def test_a_listener_whose_buffer_overflows_reports_lost(ns: str) -> None:
    """A tiny receive buffer and one commit of many elements: the listener reports Lost."""
    with inside(ns):
        listener = Listener(rcvbuf=4096)
    with listener:
        many = ", ".join(f"10.{i}.0.0/16" for i in range(200))
        nft(ns, "add", "element", "inet", TABLE, "masquerade-v4", f"{{ {many} }}")
        assert Lost() in listener.read()


def test_reading_a_missing_set_is_a_one_line_error(ns: str) -> None:
    with pytest.raises(NetlinkError) as caught:
        read(ns, "no-such-set", "ipv4")
    assert caught.value.errno == errno.ENOENT
    assert str(caught.value) == (
        "netlink: list set inet ip-masq-agent no-such-set: No such file or directory (errno 2)"
    )


def test_a_call_with_no_answer_in_time_fails_in_one_line_worth_retrying(ns: str) -> None:
    """Every wait is bounded: past its timeout a read gives up with one line, as a
    NetlinkBusy (a TransientError the agent retries with backoff)."""
    with inside(ns), pytest.raises(NetlinkBusy) as caught:
        read_set("inet", TABLE, "masquerade-v4", "ipv4", timeout=0)
    assert isinstance(caught.value, TransientError)
    assert caught.value.errno == errno.ETIMEDOUT
    assert str(caught.value) == (
        "netlink: list set inet ip-masq-agent masquerade-v4: no answer in time:"
        " Connection timed out (errno 110)"
    )


def test_every_family_of_the_table_is_read_by_its_key_size(ns: str) -> None:
    """An ip table's set and an inet table's both read back (table family ip and inet)."""
    nft(ns, "add", "table", "ip", "t4")
    nft(ns, "add", "set", "ip", "t4", "s", "{ type ipv4_addr; flags interval; counter; }")
    write(ns, [SetEdit("ip", "t4", "s", add=(ipaddress.ip_network("0.0.0.0/0"),))])
    with inside(ns):
        got = read_set("ip", "t4", "s", "ipv4")
    assert dict(got.counters) == {ipaddress.ip_network("0.0.0.0/0"): Counters(0, 0)}
    assert family_of(next(iter(got.counters))) == "ipv4"


@KERNEL
@given(data=st.data(), family=st.sampled_from(["ipv4", "ipv6"]))
def test_per_element_reads_give_the_counters_nft_lists(
    module_ns: str, data: st.DataObject, family: Family
) -> None:
    """Reading chosen elements one request each gives each present element's counter as
    nft lists it, and None for a CIDR no element starts at."""
    fresh(module_ns)
    name = SETS[family][0]
    present: list[IPNetwork] = data.draw(disjoint_cidrs(family))
    seeded = {n: data.draw(counters(NFT_JSON_MAX)) for n in present}
    if seeded:
        nft(module_ns, "add", "element", "inet", TABLE, name, f"{{ {nft_elements(seeded)} }}")
    others: list[IPNetwork] = data.draw(disjoint_cidrs(family, max_size=4))
    starts = {int(n.network_address) for n in present}
    absent = [n for n in others if int(n.network_address) not in starts]
    asked = data.draw(st.permutations(present + absent))
    with inside(module_ns):
        got = read_counters("inet", TABLE, name, asked)
    shown = listed(module_ns, name)
    assert got == {n: shown.get(n) for n in asked}


KILL_WRITER = r"""
import ipaddress, json, sys
from masq.core.nftables.netlink import SetEdit
from masq.shell import nft_elements
old, new = json.load(sys.stdin)
net = ipaddress.ip_network
edit = SetEdit("inet", sys.argv[1], sys.argv[2], tuple(map(net, old)), tuple(map(net, new)))
send = nft_elements._Exchange.send

def announced(exchange, data):
    if len(data) > 65536:  # the batch (the generation request after it is small)
        sys.stdout.write("sending\n")
        sys.stdout.flush()
    send(exchange, data)

nft_elements._Exchange.send = announced
sys.stdout.write("ready\n")
sys.stdout.flush()
nft_elements.write_elements([edit], timeout=60)
sys.stdout.write("sent\n")
sys.stdout.flush()
"""
"""Replaces the set's elements in one batch, saying when it starts (``ready``: encoding
next), when the batch goes to the kernel (``sending``) and when the kernel acknowledged it
(``sent``)."""


@dataclass
class Killed:
    """One writer killed ``after`` seconds past its line ``mark``: what it said by then and
    whether the set then held the new elements."""

    mark: str
    after: float
    said: list[str]
    new: bool
    returncode: int | None


def test_a_sigkill_during_a_batch_leaves_the_old_elements_or_the_new(ns: str) -> None:
    """A writer replacing 20,000 elements by 20,000 others in one batch is killed at instants
    spread over its whole run, then over the span between handing the batch to the kernel
    and the kernel's answer: the set always holds exactly the old elements or exactly the
    new ones, never a mix; some kill landed before the batch was sent (the old stay), and
    some after it was handed over but before the writer heard back (the new are whole)."""
    name = SETS["ipv4"][1]
    old = [f"10.{i // 256}.{i % 256}.0/24" for i in range(0, 40_000, 2)]
    new = [f"10.{i // 256}.{i % 256}.0/24" for i in range(1, 40_000, 2)]
    olds, news = (
        frozenset(map(ipaddress.ip_network, old)),
        frozenset(map(ipaddress.ip_network, new)),
    )
    stdin = json.dumps([old, new])

    def start() -> subprocess.Popen[str]:
        fresh(ns)
        write(ns, [SetEdit("inet", TABLE, name, add=tuple(olds))])
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", KILL_WRITER, TABLE, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        assert proc.stdout.readline() == "ready\n"
        return proc

    def kill(mark: str, after: float) -> Killed:
        proc = start()
        assert proc.stdout is not None
        said = ["ready"]
        if mark == "sending":
            said.append(proc.stdout.readline().strip())
            assert said[-1] == "sending"
        time.sleep(after)
        proc.kill()
        proc.wait(timeout=60)
        said += proc.stdout.read().split()
        got = read(ns, name, "ipv4").elements
        assert got in (olds, news), f"a mix after a kill {after:.3f} s after {mark}"
        return Killed(mark, after, said, got == news, proc.returncode)

    whole = start()
    assert whole.stdout is not None
    began = time.monotonic()
    assert whole.stdout.readline() == "sending\n"
    sending = time.monotonic()
    assert whole.stdout.readline() == "sent\n"
    sent = time.monotonic()
    assert whole.wait(timeout=120) == 0
    assert read(ns, name, "ipv4").elements == news
    kills = [kill("ready", (sent - began) * i / 8) for i in range(8)]
    kills += [kill("sending", (sent - sending) * i / 8) for i in range(8)]
    during = [k for k in kills if k.returncode == -signal.SIGKILL and "sent" not in k.said]
    assert any(not k.new for k in during), kills  # killed before the kernel had the batch
    assert any(k.new for k in during), kills  # killed after: the batch was whole


NO_PERMISSION = """
import ipaddress
from masq.core.nftables.netlink import SetEdit
from masq.shell.nft_elements import Listener, NetlinkError, read_set, write_elements
edit = SetEdit("inet", "ip-masq-agent", "masquerade-v4", add=(ipaddress.ip_network("10.0.0.0/8"),))
calls = [
    lambda: read_set("inet", "ip-masq-agent", "masquerade-v4", "ipv4"),
    lambda: write_elements([edit]),
    Listener,
]
for call in calls:
    try:
        call()
        print("allowed")
    except NetlinkError as exc:
        print(exc.errno, exc)
"""


def test_without_cap_net_admin_every_call_fails_in_one_line(ns: str) -> None:
    """A process without CAP_NET_ADMIN (the agent unprivileged, a test) gets one line
    naming EPERM from each entry point, which the agent can take as "use nft"."""
    done = run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            sys.executable,
            "-c",
            NO_PERMISSION,
        ]
    )
    lines = done.stdout.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["1", "1", "1"], lines
    assert lines[1] == (
        "1 netlink: element batch (inet ip-masq-agent masquerade-v4): batch not applied:"
        " Operation not permitted (errno 1)"
    )
    assert nft(ns, "list", "set", "inet", TABLE, "masquerade-v4").count("10.0.0.0") == 0


def test_a_flush_and_refill_is_one_transaction(ns: str) -> None:
    """A set flushed and refilled in one batch holds exactly the new elements, each
    counter restarted; the same batch refused (an overlapping add) leaves the old set and
    its counters."""
    name = SETS["ipv4"][1]
    nft(ns, "add", "element", "inet", TABLE, name, "{ 10.0.0.0/8 counter packets 5 bytes 6 }")
    new = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("11.0.0.0/8"))
    bad = (*new, ipaddress.ip_network("11.1.0.0/16"))
    with pytest.raises(NetlinkError):
        write(ns, [SetEdit("inet", TABLE, name, add=bad, flush=True)])
    assert listed(ns, name) == {new[0]: Counters(5, 6)}
    write(ns, [SetEdit("inet", TABLE, name, add=new, flush=True)])
    assert listed(ns, name) == dict.fromkeys(new, Counters(0, 0))


def test_a_dump_racing_changes_is_consistent_or_refused(ns: str) -> None:
    """While another program deletes and adds elements of the set one commit at a time
    (and commits to its own table in between), every listing read_set returns is a state
    the set really had; a dump it cannot prove consistent is refused as NetlinkBusy, never
    returned torn (a dump racing a deletion skips an element, one racing an addition
    repeats one)."""
    name = SETS["ipv4"][1]
    before = [ipaddress.ip_network(f"10.{i // 256}.{i % 256}.0/24") for i in range(0, 20_000, 2)]
    write(ns, [SetEdit("inet", TABLE, name, add=tuple(before))])
    nft(ns, "add", "table", "ip", "w")
    nft(ns, "add", "set", "ip", "w", "s", "{ type ipv4_addr; }")
    steps = 12
    deleted = before[:: len(before) // steps][:steps]
    added = [ipaddress.ip_network(f"11.0.{i}.0/24") for i in range(steps)]

    def writer() -> None:
        for i in range(steps):
            nft(ns, "add", "element", "ip", "w", "s", f"{{ 10.9.0.{i} }}")
            nft(ns, "delete", "element", "inet", TABLE, name, f"{{ {deleted[i]} }}")
            nft(ns, "add", "element", "inet", TABLE, name, f"{{ {added[i]} }}")

    def state(gone: int, came: int) -> frozenset[IPNetwork]:
        return (frozenset(before) - frozenset(deleted[:gone])) | frozenset(added[:came])

    states = {state(k, k) for k in range(steps + 1)} | {state(k + 1, k) for k in range(steps)}
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    reads = 0
    while thread.is_alive():
        try:
            got = read(ns, name, "ipv4").elements
        except NetlinkBusy:
            continue
        finally:
            reads += 1
        assert got in states, (sorted(frozenset(before) - got)[:5], sorted(got - frozenset(before)))
    thread.join()
    assert reads > 0
    assert read(ns, name, "ipv4").elements == state(steps, steps)
