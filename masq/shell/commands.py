"""``--explain=IP`` and ``--validate``: answer an operator's question, then exit.

Both are read-only: they read the config dir and (explain) list the agent's chain
the way a sync does, and never write a rule.  Each is two steps: gather the facts
(a value), then print them (text, or one JSON object with ``--log-format=json``);
errors are one line each on stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TextIO

import yaml
from returns.result import Failure, Result, Success

from masq.core.addresses import IPAddress, parse_ip
from masq.core.config import MasqConfig
from masq.core.duration import format_duration
from masq.core.egress import Packet, is_pattern, parse_interface
from masq.core.errors import ConfigError, invalid
from masq.core.explain import Explanation, explanation_dict, render_explanation
from masq.core.fragment import (
    CIDR_LIMIT,
    MASQ_LINK_LOCAL,
    MASQ_LINK_LOCAL_IPV6,
    MASQUERADE_CIDRS,
    NON_MASQUERADE_CIDRS,
    OUTPUT_ADDRESS,
    OUTPUT_ADDRESS_IPV6,
    OUTPUT_INTERFACES,
    RESYNC_INTERVAL,
    SOURCE_CIDRS,
    Fragment,
)
from masq.core.merge import Merged
from masq.shell.configdir import ConfigFiles, LoadedConfig, config_dir_exists, load, read_files
from masq.shell.dataplane import build
from masq.shell.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PROG
from masq.shell.local import is_local_address
from masq.shell.options import Options


def _err(line: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: {line}", file=stream if stream is not None else sys.stderr)


# --- --explain ------------------------------------------------------------------


def _read_config(opts: Options) -> Result[LoadedConfig, tuple[ConfigError, ...]]:
    def first(error: ConfigError) -> tuple[ConfigError, ...]:
        return (error,)

    return read_files(opts.config_dir, opts.config_prefix).alt(first).bind(lambda f: load(f, opts))


def explain(
    opts: Options,
    ip: str,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    read_live: bool = True,
) -> int:
    """Print whether a packet to ``ip`` is masqueraded, the deciding rule and its origin.

    Exit 0 when explained, 2 for an unparsable address, 1 when neither the config
    nor the live rules can be read.  ``read_live`` False reads no kernel state (tests).
    """
    parsed = parse_ip(ip)
    if isinstance(parsed, Failure):
        _err(str(parsed.failure().at("--explain")), err)
        return EXIT_USAGE
    address = parsed.unwrap()
    packet = _packet(opts, address)
    if isinstance(packet, Failure):
        _err(str(packet.failure()), err)
        return EXIT_USAGE
    loaded = _read_config(opts)
    fragments: Sequence[Fragment] = ()
    merged: Merged | None = None
    config_note = ""
    if isinstance(loaded, Failure):
        config_note = f"config invalid ({loaded.failure()[0]}): no provenance"
        _err(f"invalid config: {loaded.failure()[0]}", err)
    else:
        fragments, merged = loaded.unwrap().fragments, loaded.unwrap().merged
    note = f"; {config_note}" if config_note else ""
    plane = build(opts.dataplane, opts)
    explained = plane.explain(
        address,
        fragments,
        merged,
        read_live=read_live,
        local=is_local_address(address),
        packet=packet.unwrap(),
    )
    if isinstance(explained, Failure):
        _err(f"cannot explain {address}: {explained.failure()}, and the config is invalid", err)
        return EXIT_FAILURE
    result = explained.unwrap()
    _print_explanation(result.explanation, result.label + note, opts, out)
    return EXIT_OK


def _packet(opts: Options, destination: IPAddress) -> Result[Packet, ConfigError]:
    """``--explain-source`` and ``--explain-interface``: a source of the destination's family
    and a real interface name (a pattern names no one interface)."""
    source: IPAddress | None = None
    if opts.explain_source is not None:
        parsed = parse_ip(opts.explain_source).alt(lambda e: e.at("--explain-source"))
        if isinstance(parsed, Failure):
            return parsed
        source = parsed.unwrap()
        if source.version != destination.version:
            return Failure(
                ConfigError(
                    "--explain-source",
                    f"not of the destination's family (IPv{destination.version})",
                    value=opts.explain_source,
                )
            )
    interface = opts.explain_interface
    if interface is not None:
        checked = parse_interface(interface)
        if isinstance(checked, Failure) or is_pattern(interface):
            why = "a pattern, not one interface" if is_pattern(interface) else None
            error = checked.failure() if isinstance(checked, Failure) else invalid(str(why))
            return Failure(replace(error, source="--explain-interface", value=interface))
    return Success(Packet(source, interface))


def _print_explanation(result: Explanation, label: str, opts: Options, out: TextIO | None) -> None:
    stdout = out if out is not None else sys.stdout
    if opts.log_format == "json":
        print(json.dumps(explanation_dict(result, label), sort_keys=True), file=stdout)
    else:
        stdout.write(render_explanation(result, label))


# --- --validate -----------------------------------------------------------------


def config_document(config: MasqConfig) -> dict[str, object]:
    """The effective config as a config file would spell it (keys in the files' order;
    egress selection's keys only when set, so a config without them prints as before)."""
    egress: dict[str, object] = {
        OUTPUT_INTERFACES: list(config.output_interfaces),
        SOURCE_CIDRS: [str(n) for n in config.source_cidrs],
        OUTPUT_ADDRESS: str(config.output_address) if config.output_address else None,
        OUTPUT_ADDRESS_IPV6: (
            str(config.output_address_ipv6) if config.output_address_ipv6 else None
        ),
    }
    return {
        NON_MASQUERADE_CIDRS: [str(n) for n in config.non_masquerade_cidrs],
        MASQUERADE_CIDRS: [str(n) for n in config.masquerade_cidrs],
        MASQ_LINK_LOCAL: config.masq_link_local,
        MASQ_LINK_LOCAL_IPV6: config.masq_link_local_ipv6,
        RESYNC_INTERVAL: format_duration(config.resync_interval),
        CIDR_LIMIT: config.cidr_limit,
    } | {key: value for key, value in egress.items() if value}


@dataclass(frozen=True, slots=True)
class Validation:
    """What ``--validate`` found: the files, the merge (if valid) and every error."""

    config_dir: str
    prefix: str
    dir_exists: bool
    files: tuple[str, ...]
    merged: Merged | None
    errors: tuple[ConfigError, ...]
    fail_on_conflict: bool

    @property
    def conflicts(self) -> list[str]:
        return [str(c) for c in self.merged.conflicts] if self.merged is not None else []

    @property
    def fatal_conflicts(self) -> bool:
        return self.fail_on_conflict and bool(self.conflicts)

    @property
    def valid(self) -> bool:
        return not self.errors and not self.fatal_conflicts


def gather_validation(opts: Options) -> Validation:
    """Read and parse the config dir once; every file's own error, not only the first."""
    read = read_files(opts.config_dir, opts.config_prefix)
    files: ConfigFiles = read.value_or(())
    errors: tuple[ConfigError, ...] = ()
    merged: Merged | None = None
    if isinstance(read, Failure):
        unreadable = read.failure()
        errors = (replace(unreadable, source=os.path.basename(unreadable.source)),)
    else:
        loaded = load(files, opts)
        errors = loaded.failure() if isinstance(loaded, Failure) else ()
        merged = loaded.unwrap().merged if isinstance(loaded, Success) else None
    return Validation(
        config_dir=opts.config_dir,
        prefix=opts.config_prefix,
        dir_exists=config_dir_exists(opts.config_dir),
        files=tuple(name for name, _ in files),
        merged=merged,
        errors=errors,
        fail_on_conflict=opts.fail_on_conflict,
    )


def _validation_text(v: Validation) -> str:
    where = f"{v.config_dir} (prefix {v.prefix!r})"
    if not v.dir_exists:
        lines = [f"# config dir {where} does not exist: defaults apply\n"]
    else:
        listed = ", ".join(v.files) if v.files else "none (defaults apply)"
        lines = [f"# config dir {where}: files {listed}\n"]
    if v.merged is not None:
        lines.append("# merged config:\n")
        lines.append(yaml.safe_dump(config_document(v.merged.config), sort_keys=False, indent=2))
        lines.append(f"# conflicts: {len(v.conflicts)}\n")
        lines += [f"# {line}\n" for line in v.conflicts]
    lines.append("# valid\n" if v.valid else "# invalid\n")
    return "".join(lines)


def _validation_json(v: Validation) -> str:
    doc: dict[str, object] = {
        "valid": v.valid,
        "config_dir": v.config_dir,
        "config_dir_exists": v.dir_exists,
        "files": list(v.files),
        "config": config_document(v.merged.config) if v.merged is not None else None,
        "conflicts": v.conflicts,
        "errors": [str(e) for e in v.errors],
    }
    return json.dumps(doc, sort_keys=True) + "\n"


def validate(opts: Options, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check the config dir; print the merged config and its conflicts.

    Exit 0 when valid, 1 with one line per error otherwise (conflicts are errors
    only with ``--fail-on-conflict``, as for the agent).  Touches no rule.
    """
    v = gather_validation(opts)
    stdout = out if out is not None else sys.stdout
    stdout.write(_validation_json(v) if opts.log_format == "json" else _validation_text(v))
    for e in v.errors:
        _err(str(e), err)
    if v.fatal_conflicts:
        for line in v.conflicts:
            _err(f"{line} (fatal with --fail-on-conflict)", err)
    return EXIT_OK if v.valid else EXIT_FAILURE
