"""The ``ip-masq-agent`` command line: Go ``flag``-style parsing, then dispatch.

Go's ``flag`` package (which v1 and v2 use) accepts ``-flag`` and ``--flag``,
``=value`` or a separate value, and booleans only as bare ``-flag`` or
``-flag=value``.  argparse cannot express "a bool never takes the next
argument" together with single-dash long names, so this is a small table-driven
parser that behaves like Go's, which lets existing DaemonSet args work unchanged.
Each flag's value is parsed once, here, into the type ``Options`` holds.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from masq import __version__
from masq.core.config import MIN_RESYNC_SECONDS
from masq.core.names import valid_chain_name, valid_table_name
from masq.core.nat import format_to_ports, parse_to_ports
from masq.shell import sigterm
from masq.shell.errors import EXIT_OK, PROG, ShellError, UsageError, value_or_raise
from masq.shell.options import DISABLED_BIND, BindAddress, Options, parse_bind

Kind = Literal["bool", "str"]


def _show_value(value: object) -> str:
    """A flag value as it is written on a command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return ""
    return str(value)


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: Kind
    help: str
    field: str | None = None  # Options field; None: accepted and ignored (klog)
    convert: Callable[[str], Any] | None = None  # str flags only; raises UsageError
    show: Callable[[Any], str] = _show_value  # the parsed value, spelled as the flag takes it


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``: exactly these spellings, nothing else."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise UsageError(f"invalid boolean value {text!r}")


def _chain(text: str) -> str:
    if not valid_chain_name(text):
        raise UsageError(
            f"invalid chain name {text!r}: 1..28 printable characters, no quotes, not starting"
            " with '-' or '!', not a built-in chain or target"
        )
    return text


def _table(text: str) -> str:
    if not valid_table_name(text):
        raise UsageError(
            f"invalid table name {text!r}: a letter, then up to 63 letters, digits, '_' or '-'"
        )
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"invalid seconds {text!r}: want a number such as 60 or 0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"invalid seconds {text!r}: must be greater than 0")
    return value


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise UsageError(f"invalid integer {text!r}") from None


def _to_ports(text: str) -> object:
    if text == "":
        return ()  # v1: empty means "no --to-ports"
    # The flag and value are named by the caller.
    return value_or_raise(parse_to_ports(text), lambda error: UsageError(error.message))


def _count(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise UsageError(f"invalid count {text!r}: must not be negative")
    return value


def _one_of(*allowed: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise UsageError(f"want one of {', '.join(allowed)}")
        return text

    return check


def _bind(text: str) -> BindAddress | None:
    try:
        return parse_bind(text)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _nonempty(text: str) -> str:
    if text == "":
        raise UsageError("must not be empty")
    return text


def _show_bind(value: BindAddress | None) -> str:
    return DISABLED_BIND if value is None else str(value)


FLAGS: tuple[Flag, ...] = (
    # upstream v1/v2
    Flag("masq-chain", "str", "nat chain for the masquerade rules", "masq_chain", _chain),
    Flag(
        "nomasq-all-reserved-ranges",
        "bool",
        "default nonMasqueradeCIDRs: every reserved IPv4 range, not only RFC 1918",
        "nomasq_all_reserved_ranges",
    ),
    Flag("enable-ipv6", "bool", "also manage ip6tables", "enable_ipv6"),
    Flag("resync-interval", "str", "seconds between resyncs", "resync_interval", _seconds),
    Flag("random-fully", "bool", "add --random-fully where supported", "random_fully"),
    Flag(
        "to-ports",
        "str",
        'MASQUERADE to these ports, e.g. "1024-29999,32768-65535"',
        "to_ports",
        _to_ports,
        format_to_ports,
    ),
    Flag("v", "str", "log verbosity (klog style)", "verbosity", _int),
    # ours
    Flag("config-dir", "str", "directory holding the config files", "config_dir", _nonempty),
    Flag("config-prefix", "str", "config file name prefix", "config_prefix"),
    Flag("once", "bool", "sync once and exit", "once"),
    Flag("dry-run", "bool", "print the plan, change nothing", "dry_run"),
    Flag(
        "cleanup",
        "bool",
        "remove our chain, its POSTROUTING jumps and our nft table, then exit",
        "cleanup",
    ),
    Flag("fail-on-conflict", "bool", "treat config conflicts as fatal", "fail_on_conflict"),
    Flag(
        "iptables-backend",
        "str",
        "auto, nft or legacy",
        "iptables_backend",
        _one_of("auto", "nft", "legacy"),
    ),
    Flag(
        "dataplane",
        "str",
        "iptables (a nat chain, v1/v2 compatible) or nftables (a table with interval sets)",
        "dataplane",
        _one_of("iptables", "nftables"),
    ),
    Flag("nft-table", "str", "the nftables table the agent owns", "nft_table", _table),
    Flag(
        "metrics-bind-address",
        "str",
        "HTTP host:port for /healthz, /readyz, /metrics; 0 disables",
        "metrics_bind_address",
        _bind,
        _show_bind,
    ),
    Flag(
        "metrics-max-cidr-series",
        "str",
        "per-CIDR traffic series per family in /metrics; the rest are summed as cidr=other",
        "metrics_max_cidr_series",
        _count,
    ),
    Flag("log-format", "str", "text or json", "log_format", _one_of("text", "json")),
    Flag(
        "explain",
        "str",
        "explain the decision for one destination IP, then exit",
        "explain",
        _nonempty,
    ),
    Flag(
        "explain-source",
        "str",
        "with --explain: the packet's source IP (egress selection's sourceCIDRs)",
        "explain_source",
        _nonempty,
    ),
    Flag(
        "explain-interface",
        "str",
        "with --explain: the packet's output interface (egress selection's outputInterfaces)",
        "explain_interface",
        _nonempty,
    ),
    Flag("validate", "bool", "validate the config dir, then exit", "validate"),
    Flag("version", "bool", "print the version and exit"),
    Flag("help", "bool", "print this help"),
    Flag("h", "bool", "print this help"),
    # klog's common flags: accepted and ignored so existing DaemonSet args keep working
    Flag("logtostderr", "bool", "(klog, ignored)"),
    Flag("alsologtostderr", "bool", "(klog, ignored)"),
    Flag("stderrthreshold", "str", "(klog, ignored)"),
    Flag("log_dir", "str", "(klog, ignored)"),
    Flag("log_file", "str", "(klog, ignored)"),
    Flag("log_file_max_size", "str", "(klog, ignored)"),
    Flag("log_backtrace_at", "str", "(klog, ignored)"),
    Flag("one_output", "bool", "(klog, ignored)"),
    Flag("skip_headers", "bool", "(klog, ignored)"),
    Flag("skip_log_headers", "bool", "(klog, ignored)"),
    Flag("add_dir_header", "bool", "(klog, ignored)"),
    Flag("vmodule", "str", "(klog, ignored)"),
)
_BY_NAME = {f.name: f for f in FLAGS}


@dataclass(frozen=True, slots=True)
class Parsed:
    options: Options
    version: bool = False
    help: bool = False


def _flag_of(arg: str) -> tuple[Flag, str | None]:
    """The flag an argument names, and its ``=value`` if given inline."""
    if not arg.startswith("-") or arg == "-":
        raise UsageError(f"unexpected argument {arg!r}")
    body = arg[2:] if arg.startswith("--") else arg[1:]
    if not body or body.startswith(("-", "=")):
        raise UsageError(f"bad flag syntax: {arg}")
    name, eq, value = body.partition("=")
    flag = _BY_NAME.get(name)
    if flag is None:
        raise UsageError(f"flag provided but not defined: -{name}")
    return flag, value if eq else None


def _value(flag: Flag, inline: str | None, rest: Iterator[str]) -> object:
    """The flag's parsed value: a bool never takes the next argument, a str flag must."""
    if flag.kind == "bool" and inline is None:
        return True
    text = inline if inline is not None else next(rest, None)
    if text is None:
        raise UsageError(f"flag needs an argument: -{flag.name}")
    convert = parse_bool if flag.kind == "bool" else flag.convert
    try:
        return convert(text) if convert is not None else text
    except UsageError as e:
        raise UsageError(f"invalid value {text!r} for flag -{flag.name}: {e}") from None


def parse_args(argv: Sequence[str]) -> Parsed:
    """Go ``flag`` semantics; raises UsageError with a one-line message."""
    values: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            leftover = next(rest, None)
            if leftover is not None:
                raise UsageError(f"unexpected argument {leftover!r}")
            break
        flag, inline = _flag_of(arg)
        value = _value(flag, inline, rest)
        if flag.field is not None:
            values[flag.field] = value
        else:
            ignored[flag.name] = value
    return Parsed(
        options=Options(**values),
        version=ignored.get("version") is True,
        help=ignored.get("help") is True or ignored.get("h") is True,
    )


def usage() -> str:
    lines = [f"Usage of {PROG}:"]
    defaults = Options()
    for f in FLAGS:
        default = ""
        if f.field is not None:
            shown = f.show(getattr(defaults, f.field))
            if shown not in ("", "false"):
                default = f" (default {shown})"
        arg = "" if f.kind == "bool" else " value"
        lines.append(f"  -{f.name}{arg}\n    \t{f.help}{default}")
    return "\n".join(lines)


def flags_line(opts: Options) -> str:
    """Every effective flag as it would be written on the command line (logged at start)."""
    return " ".join(
        f"--{f.name}={f.show(getattr(opts, f.field))}" for f in FLAGS if f.field is not None
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and ``python -m masq``; returns the exit code.

    SIGTERM and SIGINT end the agent with exit 0 at any instant, also while it starts
    (a pod deleted during start-up): no write is ever half done (each is one transaction).
    """
    if argv is None:
        sigterm.exit_on_sigterm()
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        if argv is None:
            sigterm.ignore_sigterm()


def _main(args: list[str]) -> int:
    try:
        parsed = parse_args(args)
    except UsageError as e:
        print(f"{PROG}: {e} (see --help)", file=sys.stderr)
        return e.exit_code
    if parsed.help:
        print(usage())
        return EXIT_OK
    if parsed.version:
        print(f"{PROG} {__version__}")
        return EXIT_OK
    opts = parsed.options

    from masq.shell import logs

    logs.setup(opts.verbosity, opts.log_format)
    logs.LOG.info("starting", extra={"kv": {"version": __version__, "flags": flags_line(opts)}})
    if opts.resync_interval < MIN_RESYNC_SECONDS:
        logs.LOG.warning(
            "--resync-interval is below the floor, using the floor",
            extra={"kv": {"flag": opts.resync_interval, "floor": MIN_RESYNC_SECONDS}},
        )
    return run(opts)


def run(opts: Options) -> int:
    """Dispatch on the mode flags; every failure becomes one line and its exit code."""
    try:
        if opts.explain is not None or opts.validate:
            from masq.shell import commands

            if opts.explain is not None:
                return commands.explain(opts, opts.explain)
            return commands.validate(opts)
        from masq.shell import agent

        if opts.cleanup:
            return agent.cleanup(opts)
        if opts.once or opts.dry_run:
            return agent.run_once(opts)
        from masq.shell import daemon

        return daemon.run(opts)
    except ShellError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # Our reader went away (``--dry-run | head``): keep the exit flush from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # writing our output failed (e.g. a full disk): shell I/O, one line
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
