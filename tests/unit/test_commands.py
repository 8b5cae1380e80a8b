"""The one-shot commands: ``--explain IP`` and ``--validate``, their output and exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from integration.expected import RFC1918, canonical

from masq.core.fragment import parse_fragment
from masq.core.merge import merge
from masq.shell import commands
from masq.shell.options import Options


def write(directory: Path, name: str, text: str) -> None:
    (directory / name).write_text(text)


def opts_for(directory: Path, **kw: object) -> Options:
    return Options(config_dir=str(directory), **kw)  # type: ignore[arg-type]


def test_explain_command_output_and_exit_codes(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "masqueradeCIDRs: [10.240.0.0/16]\n")
    out, err = io.StringIO(), io.StringIO()
    assert (
        commands.explain(opts_for(tmp_path), "10.240.1.1", out=out, err=err, read_live=False) == 0
    )
    text = out.getvalue()
    assert "masqueraded: yes" in text
    assert "-d 10.240.0.0/16" in text
    assert "ip-masq-a" in text
    assert "rules: desired" in text
    assert commands.explain(opts_for(tmp_path), "10.240.1.1/16", out=out, err=err) == 2
    assert "is a CIDR" in err.getvalue()


def test_explain_command_json(tmp_path: Path) -> None:
    out = io.StringIO()
    opts = opts_for(tmp_path, log_format="json")
    assert commands.explain(opts, "192.168.3.4", out=out, read_live=False) == 0
    doc = json.loads(out.getvalue())
    assert doc["masqueraded"] is False
    assert doc["origins"][0]["kind"] == "default"
    assert doc["origins"][0]["cidr"] == "192.168.0.0/16"


@pytest.mark.parametrize("dataplane", ["iptables", "nftables"])
def test_explain_with_invalid_config_and_no_live_rules_fails(
    tmp_path: Path, dataplane: str
) -> None:
    """Either dataplane, one path: neither rules nor config to read is exit 1, said once."""
    write(tmp_path, "ip-masq-bad", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    err = io.StringIO()
    code = commands.explain(
        opts_for(tmp_path, dataplane=dataplane),
        "10.0.0.1",
        out=io.StringIO(),
        err=err,
        read_live=False,
    )
    assert code == 1
    lines = err.getvalue().splitlines()
    assert "ip-masq-bad" in lines[0]
    assert lines[1:] == [
        "ip-masq-agent: cannot explain 10.0.0.1: live rules not read, and the config is invalid"
    ]


EGRESS = "outputInterfaces: [eth1, wl*]\nsourceCIDRs: [10.8.0.0/16]\noutputAddress: 192.0.2.10\n"


@pytest.mark.parametrize("dataplane", ["iptables", "nftables"])
@pytest.mark.parametrize(
    "case",
    [
        ("10.8.1.1", "eth1", "yes", "final catch-all"),
        ("10.8.1.1", "wlan0", "yes", "final catch-all"),
        ("10.8.1.1", "eth0", "no", "because: outputInterfaces: its output interface is none"),
        ("10.9.1.1", "eth1", "no", "because: sourceCIDRs: its source is in none"),
    ],
)
def test_explain_takes_a_source_and_an_interface(
    tmp_path: Path, dataplane: str, case: tuple[str, str, str, str]
) -> None:
    """--explain-source and --explain-interface (Go-style flags) put a flow through egress
    selection in either dataplane: a flow outside outputInterfaces or sourceCIDRs is left
    alone and the explanation names the key and the file; a selected one is decided as before
    and the config agrees with the rules."""
    source, interface, masqueraded, because = case
    write(tmp_path, "ip-masq-egress", EGRESS)
    out, err = io.StringIO(), io.StringIO()
    opts = opts_for(
        tmp_path, dataplane=dataplane, explain_source=source, explain_interface=interface
    )
    assert commands.explain(opts, "8.8.8.8", out=out, err=err, read_live=False) == 0, err
    text = out.getvalue()
    assert f"source: {source}\noutput interface: {interface}\n" in text
    assert f"masqueraded: {masqueraded}" in text
    assert because in text
    assert "the rules disagree" not in text
    if masqueraded == "no":
        assert "ip-masq-egress" in text


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"explain_source": "fd00::1"}, "--explain-source: 'fd00::1': not of the destination's"),
        ({"explain_source": "10.0.0.0/8"}, "--explain-source: '10.0.0.0/8': is a CIDR"),
        ({"explain_interface": "eth*"}, "--explain-interface: 'eth*': a pattern, not one"),
        ({"explain_interface": "a/b"}, "--explain-interface: 'a/b': interface name has '/'"),
    ],
)
def test_explain_refuses_a_bad_source_or_interface(
    tmp_path: Path, flags: dict[str, str], message: str
) -> None:
    """A source of the other family, a CIDR, a wildcard or an impossible interface name is a
    usage error (exit 2) in one line naming the flag."""
    err = io.StringIO()
    code = commands.explain(opts_for(tmp_path, **flags), "8.8.8.8", out=io.StringIO(), err=err)
    assert code == 2
    assert err.getvalue().count("\n") == 1
    assert message in err.getvalue()


def test_explain_without_the_new_flags_prints_as_before(tmp_path: Path) -> None:
    """Without --explain-source/--explain-interface no source or interface line is printed,
    and JSON output has no such keys."""
    write(tmp_path, "ip-masq-egress", EGRESS)
    out = io.StringIO()
    assert commands.explain(opts_for(tmp_path), "8.8.8.8", out=out, read_live=False) == 0
    assert "source:" not in out.getvalue() and "interface:" not in out.getvalue()
    out = io.StringIO()
    opts = opts_for(tmp_path, log_format="json")
    assert commands.explain(opts, "8.8.8.8", out=out, read_live=False) == 0
    doc = json.loads(out.getvalue())
    assert "source" not in doc and "interface" not in doc


def test_validate_prints_the_egress_keys_so_they_parse_back(tmp_path: Path) -> None:
    """--validate's printout of a config with egress selection is itself a config that
    merges to the same effective config; without those keys none of them is printed."""
    write(tmp_path, "ip-masq-a", EGRESS + "outputAddressIPv6: '2001:db8::1'\n")
    out = io.StringIO()
    assert commands.validate(opts_for(tmp_path, enable_ipv6=True), out=out) == 0
    reparsed = parse_fragment(out.getvalue(), "printed").unwrap()
    original = parse_fragment((tmp_path / "ip-masq-a").read_text(), "ip-masq-a").unwrap()
    assert merge([reparsed], enable_ipv6=True) == merge([original], enable_ipv6=True)
    write(tmp_path, "ip-masq-a", "masqLinkLocal: true\n")
    out = io.StringIO()
    assert commands.validate(opts_for(tmp_path), out=out) == 0
    assert "output" not in out.getvalue() and "sourceCIDRs" not in out.getvalue()


def test_validate_valid_prints_a_config_that_parses_back(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: true\n")
    write(tmp_path, "ip-masq-b", "masqLinkLocal: false\nresyncInterval: 30s\n")
    write(tmp_path, "other", "not: considered\n")
    out, err = io.StringIO(), io.StringIO()
    assert commands.validate(opts_for(tmp_path), out=out, err=err) == 0
    text = out.getvalue()
    assert "files ip-masq-a, ip-masq-b" in text
    assert "# conflicts: 1" in text
    assert "masqLinkLocal" in text and "# valid" in text
    assert err.getvalue() == ""
    reparsed = parse_fragment(text, "printed").unwrap()  # the printout is itself a config
    again = merge([reparsed]).unwrap().config
    assert (
        again
        == merge(
            [
                parse_fragment((tmp_path / n).read_text(), n).unwrap()
                for n in ("ip-masq-a", "ip-masq-b")
            ]
        )
        .unwrap()
        .config
    )


def test_validate_reports_every_bad_file_one_line_each(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")
    write(tmp_path, "ip-masq-b", "masqLinkLocl: true\n")
    write(tmp_path, "ip-masq-c", "masqLinkLocal: true\n")
    out, err = io.StringIO(), io.StringIO()
    assert commands.validate(opts_for(tmp_path), out=out, err=err) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ip-masq-agent: ip-masq-a: nonMasqueradeCIDRs[0]")
    assert lines[1].startswith("ip-masq-agent: ip-masq-b")
    assert "masqLinkLocal" in lines[1]  # the suggestion
    assert "# invalid" in out.getvalue()


def test_validate_conflicts_fatal_only_with_fail_on_conflict(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "masqLinkLocal: true\n")
    write(tmp_path, "ip-masq-b", "masqLinkLocal: false\n")
    assert commands.validate(opts_for(tmp_path), out=io.StringIO(), err=io.StringIO()) == 0
    err = io.StringIO()
    opts = opts_for(tmp_path, fail_on_conflict=True)
    assert commands.validate(opts, out=io.StringIO(), err=err) == 1
    assert "masqLinkLocal" in err.getvalue()


def test_validate_merge_failure_and_missing_dir(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "nonMasqueradeCIDRs: [fd00::/8]\n")
    err = io.StringIO()
    assert commands.validate(opts_for(tmp_path), out=io.StringIO(), err=err) == 1
    assert "IPv6" in err.getvalue()
    out = io.StringIO()
    assert commands.validate(opts_for(tmp_path / "missing"), out=out, err=io.StringIO()) == 0
    assert "does not exist: defaults apply" in out.getvalue()
    doc = yaml.safe_load(out.getvalue())
    assert doc["nonMasqueradeCIDRs"] == canonical(RFC1918)


def test_validate_json(tmp_path: Path) -> None:
    write(tmp_path, "ip-masq-a", "cidrLimit: nope\n")
    out = io.StringIO()
    opts = opts_for(tmp_path, log_format="json")
    assert commands.validate(opts, out=out, err=io.StringIO()) == 1
    doc = json.loads(out.getvalue())
    assert doc["valid"] is False and doc["config"] is None
    assert len(doc["errors"]) == 1 and "cidrLimit" in doc["errors"][0]
