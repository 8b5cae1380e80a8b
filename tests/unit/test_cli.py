"""Go ``flag``-style parsing: every spelling upstream DaemonSets use, and every rejection."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from masq.core.nat import PortRange, format_to_ports
from masq.shell import cli
from masq.shell.cli import parse_args, parse_bool
from masq.shell.errors import UsageError
from masq.shell.options import BindAddress, Options


@pytest.mark.parametrize(
    "argv",
    [
        ["--masq-chain=FOO"],
        ["--masq-chain", "FOO"],
        ["-masq-chain=FOO"],
        ["-masq-chain", "FOO"],
    ],
)
def test_value_flag_spellings(argv: list[str]) -> None:
    assert parse_args(argv).options.masq_chain == "FOO"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enable-ipv6"], True),
        (["-enable-ipv6"], True),
        (["--enable-ipv6=true"], True),
        (["--enable-ipv6=1"], True),
        (["--enable-ipv6=t"], True),
        (["--enable-ipv6=TRUE"], True),
        (["--enable-ipv6=false"], False),
        (["-enable-ipv6=0"], False),
        (["--enable-ipv6=F"], False),
        ([], False),
    ],
)
def test_bool_flag_spellings(argv: list[str], expected: bool) -> None:
    assert parse_args(argv).options.enable_ipv6 is expected


def test_random_fully_defaults_true_and_can_be_turned_off() -> None:
    assert parse_args([]).options.random_fully is True
    assert parse_args(["--random-fully=false"]).options.random_fully is False


def test_bool_does_not_swallow_the_next_argument() -> None:
    # "--once false" is Go's classic trap: "false" is a stray positional, not the value.
    with pytest.raises(UsageError, match="unexpected argument 'false'"):
        parse_args(["--once", "false"])
    parsed = parse_args(["--once", "--masq-chain", "X"]).options
    assert parsed.once is True
    assert parsed.masq_chain == "X"


def test_all_defaults() -> None:
    assert parse_args([]).options == Options()


def test_typical_upstream_daemonset_args() -> None:
    opts = parse_args(
        [
            "--masq-chain=IP-MASQ",
            "--nomasq-all-reserved-ranges",
            "--resync-interval=30",
            "--enable-ipv6=true",
            "--v=2",
            "--logtostderr",
            "--alsologtostderr=false",
            "--stderrthreshold=INFO",
            "--log_dir",
            "/var/log",
            "--vmodule=foo=2",
            "--to-ports=1024-29999,32768-65535",
        ]
    ).options
    assert opts.masq_chain == "IP-MASQ"
    assert opts.nomasq_all_reserved_ranges is True
    assert opts.resync_interval == 30.0
    assert opts.enable_ipv6 is True
    assert opts.verbosity == 2
    assert opts.to_ports == (PortRange(1024, 29999), PortRange(32768, 65535))


def test_ours() -> None:
    opts = parse_args(
        [
            "--config-dir=/cfg",
            "--config-prefix",
            "x",
            "--once",
            "--dry-run",
            "--cleanup",
            "--fail-on-conflict",
            "--iptables-backend=legacy",
            "--metrics-bind-address=127.0.0.1:9000",
            "--log-format=json",
            "--explain=10.1.2.3",
            "--validate",
        ]
    ).options
    assert (opts.config_dir, opts.config_prefix) == ("/cfg", "x")
    assert opts.once and opts.dry_run and opts.cleanup and opts.fail_on_conflict and opts.validate
    assert opts.iptables_backend == "legacy"
    assert opts.metrics_bind_address == BindAddress("127.0.0.1", 9000)
    assert opts.log_format == "json"
    assert opts.explain == "10.1.2.3"


def test_last_occurrence_wins_like_go() -> None:
    assert parse_args(["--v=1", "--v=3"]).options.verbosity == 3


@pytest.mark.parametrize("value", ["1.5", "0.25", "60"])
def test_resync_interval_accepts_positive_numbers(value: str) -> None:
    assert parse_args([f"--resync-interval={value}"]).options.resync_interval == float(value)


BIND_FORMS = "want host:port (port 0-65535; 0 picks a free one), :port, or 0 to disable"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "flag provided but not defined: -bogus"),
        (["--masq-chain"], "flag needs an argument: -masq-chain"),
        (
            ["--resync-interval=0"],
            "invalid value '0' for flag -resync-interval: invalid seconds '0': must be greater"
            " than 0",
        ),
        (
            ["--resync-interval=-1"],
            "invalid value '-1' for flag -resync-interval: invalid seconds '-1': must be greater"
            " than 0",
        ),
        (
            ["--resync-interval=nan"],
            "invalid value 'nan' for flag -resync-interval: invalid seconds 'nan': must be"
            " greater than 0",
        ),
        (
            ["--resync-interval=inf"],
            "invalid value 'inf' for flag -resync-interval: invalid seconds 'inf': must be"
            " greater than 0",
        ),
        (
            ["--resync-interval=1m"],
            "invalid value '1m' for flag -resync-interval: invalid seconds '1m': want a number"
            " such as 60 or 0.5",
        ),
        (["--v=x"], "invalid value 'x' for flag -v: invalid integer 'x'"),
        (["--once=maybe"], "invalid value 'maybe' for flag -once: invalid boolean value 'maybe'"),
        (["--once=yes"], "invalid value 'yes' for flag -once: invalid boolean value 'yes'"),
        (
            ["--iptables-backend=iptables"],
            "invalid value 'iptables' for flag -iptables-backend: want one of auto, nft, legacy",
        ),
        (["--log-format=xml"], "invalid value 'xml' for flag -log-format: want one of text, json"),
        (
            ["--metrics-bind-address=9000"],
            f"invalid value '9000' for flag -metrics-bind-address: {BIND_FORMS}",
        ),
        (
            ["--metrics-bind-address=:99999"],
            f"invalid value ':99999' for flag -metrics-bind-address: {BIND_FORMS}",
        ),
        (["--config-dir="], "invalid value '' for flag -config-dir: must not be empty"),
        (["---once"], "bad flag syntax: ---once"),
        (["--=x"], "bad flag syntax: --=x"),
        (["positional"], "unexpected argument 'positional'"),
        (["--", "positional"], "unexpected argument 'positional'"),
    ],
)
def test_rejections(argv: list[str], message: str) -> None:
    """Each refusal is one line naming the flag (as Go's flag package spells it), the value
    and why it is wrong."""
    with pytest.raises(UsageError) as raised:
        parse_args(argv)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A" * 29,
        "-CHAIN",
        "!CHAIN",
        "MY CHAIN",
        "TAB\tCHAIN",
        "POSTROUTING",
        "RETURN",
        "MASQUERADE",
        "ACCEPT",
        "DROP",
        'QUO"TE',
    ],
)
def test_chain_name_rejected(name: str) -> None:
    with pytest.raises(UsageError, match="chain name"):
        parse_args([f"--masq-chain={name}"])


@pytest.mark.parametrize("name", ["IP-MASQ-AGENT", "A" * 28, "x", "MY_CHAIN.1"])
def test_chain_name_accepted(name: str) -> None:
    assert parse_args(["--masq-chain", name]).options.masq_chain == name


@pytest.mark.parametrize("value", ["iptables", "nftables"])
def test_dataplane_accepted(value: str) -> None:
    assert parse_args([f"--dataplane={value}"]).options.dataplane == value
    assert parse_args(["-dataplane", value]).options.dataplane == value


def test_dataplane_defaults_to_iptables() -> None:
    assert parse_args([]).options.dataplane == "iptables"


@pytest.mark.parametrize("value", ["", "nft", "NFTABLES", "iptables-nft", "nftables "])
def test_dataplane_rejected_in_one_line(value: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_args([f"--dataplane={value}"])
    assert str(raised.value) == (
        f"invalid value {value!r} for flag -dataplane: want one of iptables, nftables"
    )


def test_main_bad_dataplane_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--dataplane=bpf", "--once"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ip-masq-agent: invalid value 'bpf' for flag -dataplane: want one of iptables,"
        " nftables (see --help)\n"
    )


@pytest.mark.parametrize("name", ["ip-masq-agent", "x", "A" * 64, "masq_2-b", "T9"])
def test_nft_table_accepted(name: str) -> None:
    assert parse_args([f"--nft-table={name}"]).options.nft_table == name
    assert parse_args(["-nft-table", name]).options.nft_table == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A" * 65,  # a letter and at most 63 more
        "9lives",  # must start with a letter
        "_x",
        "-x",
        "my table",
        "a.b",
        "a/b",
        'a"b',
        "tab\tle",
        "nl\n",
        "caf\u00e9",  # ASCII letters only
    ],
)
def test_nft_table_rejected_in_one_line(name: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_args([f"--nft-table={name}"])
    assert str(raised.value) == (
        f"invalid value {name!r} for flag -nft-table: invalid table name {name!r}: a letter,"
        " then up to 63 letters, digits, '_' or '-'"
    )
    assert "\n" not in str(raised.value)  # one line, even for a name holding a newline


@pytest.mark.parametrize("value", ["1024-29999,32768-65535", "80", "1-65535", "10-10,20-30"])
def test_to_ports_accepted(value: str) -> None:
    ranges = parse_args([f"--to-ports={value}"]).options.to_ports
    assert format_to_ports(ranges) == ",".join(
        str(PortRange(int(p.split("-")[0]), int(p.split("-")[-1]))) for p in value.split(",")
    )


def test_empty_to_ports_means_none_like_v1() -> None:
    assert parse_args(["--to-ports="]).options.to_ports == ()


@pytest.mark.parametrize(
    "value", ["0", "65536", "2-1", "1-2-3", "a", "1,", ",1", "1-", "-1", " 1", "1024-29999;1"]
)
def test_to_ports_rejected(value: str) -> None:
    with pytest.raises(UsageError, match="to-ports"):
        parse_args([f"--to-ports={value}"])


@given(st.text())
def test_parse_bool_accepts_exactly_go_spellings(text: str) -> None:
    """Exactly Go's strconv.ParseBool spellings are booleans (1 t T TRUE true True, 0 f F FALSE
    false False); any other text is refused, quoting it."""
    # Fails if parse_bool grows a spelling Go rejects (e.g. "yes") or drops one.
    go = {"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False"}
    if text in go:
        assert parse_bool(text) is (text in {"1", "t", "T", "TRUE", "true", "True"})
    else:
        with pytest.raises(UsageError) as raised:
            parse_bool(text)
        assert str(raised.value) == f"invalid boolean value {text!r}"


@given(st.sampled_from([f for f in cli.FLAGS if f.kind == "bool"]), st.booleans())
def test_every_bool_flag_takes_every_spelling(flag: cli.Flag, value: bool) -> None:
    # Fails if a bool flag is wired as a value flag (then "--flag" alone would need an argument).
    for spelling in (f"--{flag.name}={str(value).lower()}", f"-{flag.name}={int(value)}"):
        parsed = parse_args([spelling])
        if flag.field is not None:
            assert getattr(parsed.options, flag.field) is value


def test_main_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ip-masq-agent: flag provided but not defined: -nope")


def test_main_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ip-masq-agent 0.")


def test_main_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-h"]) == 0
    out = capsys.readouterr().out
    for f in cli.FLAGS:
        assert f"-{f.name}" in out


def test_help_says_cleanup_also_removes_the_nft_table(capsys: pytest.CaptureFixture[str]) -> None:
    """--cleanup removes what the agent owns in both dataplanes; its help says so."""
    assert cli.main(["-h"]) == 0
    out = capsys.readouterr().out
    assert (
        "  -cleanup\n    \tremove our chain, its POSTROUTING jumps and our nft table, then exit\n"
        in out
    )


def test_main_bad_config_is_one_line_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "ip-masq-agent").write_text("nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    # --dry-run would reach iptables only after the config is valid; it is not.
    assert cli.main(["--dry-run", f"--config-dir={cfg}", "--iptables-backend=nft"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ip-masq-agent: ip-masq-agent: nonMasqueradeCIDRs[0]")
    assert "Traceback" not in "".join(err)


@pytest.mark.parametrize(
    ("argv", "called"),
    [
        (["--once"], "run_once"),
        (["--dry-run"], "run_once"),
        (["--cleanup"], "cleanup"),
        (["--cleanup", "--once"], "cleanup"),
        ([], "daemon"),
    ],
)
def test_dispatch(monkeypatch: pytest.MonkeyPatch, argv: list[str], called: str) -> None:
    from masq.shell import agent, daemon

    seen: list[str] = []

    def record(name: str) -> Callable[[Options], int]:
        def fake(opts: Options) -> int:
            seen.append(name)
            return 0

        return fake

    monkeypatch.setattr(agent, "run_once", record("run_once"))
    monkeypatch.setattr(agent, "cleanup", record("cleanup"))
    monkeypatch.setattr(daemon, "run", record("daemon"))
    assert cli.run(parse_args(argv).options) == 0
    assert seen == [called]


def test_agent_error_becomes_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from masq.shell import agent
    from masq.shell.errors import AgentError

    def fail(opts: Options) -> int:
        raise AgentError("ipv4 iptables-restore failed (iptables-nft-restore): line 2 failed")

    monkeypatch.setattr(agent, "run_once", fail)
    assert cli.run(parse_args(["--once"]).options) == 1
    assert capsys.readouterr().err == (
        "ip-masq-agent: ipv4 iptables-restore failed (iptables-nft-restore): line 2 failed\n"
    )


def test_output_write_failure_is_one_line_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Fails if an OSError from writing the report (here: a full disk) escapes run()
    # as a traceback instead of one line and exit 1.
    from masq.shell import commands

    def full(opts: Options) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(commands, "validate", full)
    assert cli.run(Options(validate=True)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ip-masq-agent: [Errno 28] No space left on device")


def test_sigterm_at_any_instant_of_start_up_exits_0_without_traceback(tmp_path: Path) -> None:
    """A pod deleted while the agent starts: SIGTERM at random instants from the moment
    the agent's code runs (its handler is installed before its imports) ends
    ``python -m masq`` with 0 (or the run's own result), never -15.  The interpreter's own
    start-up before that cannot catch signals in any Python program."""
    import random
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "ip-masq-agent").write_text("nonMasqueradeCIDRs: [10.0.0.1/8]\n")  # invalid
    rng = random.Random(15)
    repo = Path(__file__).resolve().parents[2]
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-m", "masq", "--validate", f"--config-dir={tmp_path}"],
            cwd=repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        caught = wait_for_handler(proc.pid, signal.SIGTERM)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode in (0, 1), (proc.returncode, caught, err)
        assert "Traceback" not in err, err


def wait_for_handler(pid: int, signum: int) -> bool:
    """Until the process catches ``signum`` (SigCgt in /proc), or it has gone."""
    import time

    bit = 1 << (signum - 1)
    for _ in range(2000):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False
        line = next(ln for ln in status.splitlines() if ln.startswith("SigCgt:"))
        if int(line.split()[1], 16) & bit:
            return True
        time.sleep(0.001)
    return False


def test_start_up_line_spells_flags_as_written() -> None:
    """The start-up line shows what one would type, not Python values (False, None, 60.0)."""
    line = cli.flags_line(
        parse_args(["--enable-ipv6=false", "--to-ports=1024-29999,32768-65535"]).options
    )
    words = line.split()
    assert "--enable-ipv6=false" in words
    assert "--resync-interval=60" in words
    assert "--to-ports=1024-29999,32768-65535" in words
    assert "False" not in line and "None" not in line and "60.0" not in line
    # feeding the line back gives the same options (unset text flags print as "--explain=")
    assert (
        parse_args([w for w in words if not w.endswith("=")]).options
        == parse_args(["--enable-ipv6=false", "--to-ports=1024-29999,32768-65535"]).options
    )


def test_quickstart_takes_a_dataplane_and_refuses_anything_else() -> None:
    """scripts/quickstart.sh reads --dataplane=iptables|nftables before it needs root or
    touches anything; any other argument is exit 2 with one line."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "scripts" / "quickstart.sh"
    text = script.read_text()
    assert "--dataplane=iptables|--dataplane=nftables)" in text
    assert "nft list table $TABLE" in text
    done = subprocess.run(
        ["bash", str(script), "--dataplane=bogus"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "quickstart.sh: unknown argument: --dataplane=bogus (see the header)\n"


def test_both_entry_points_install_the_one_start_up_sigterm_handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m masq`` installs masq.shell.sigterm's handler before the agent's imports and
    the console script's ``cli.main`` installs the same one; when the run is over SIGTERM is
    ignored, so the interpreter's exit keeps the run's code."""
    import signal
    import sys

    from masq.shell import sigterm

    main_source = (Path(cli.__file__).parents[1] / "__main__.py").read_text()
    assert main_source.index("exit_on_sigterm()") < main_source.index("from masq.shell.cli")
    assert "signal.signal" not in main_source
    installed: list[str] = []
    monkeypatch.setattr(sigterm, "exit_on_sigterm", lambda: installed.append("cli.main"))
    monkeypatch.setattr(sys, "argv", ["ip-masq-agent", "--version"])
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main() == 0
        assert installed == ["cli.main"]
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().out.startswith("ip-masq-agent ")
