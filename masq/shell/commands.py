"""``--explain=IP`` and ``--validate``: answer an operator's question, then exit.

Both are read-only: they read the config dir and (explain) list the agent's chain
the way a sync does, and never write a rule.  Output goes to stdout (text, or one
JSON object with ``--log-format=json``); errors are one line each on stderr.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TextIO

import yaml
from returns.result import Failure

from masq.core.duration import format_duration
from masq.core.errors import ConfigError
from masq.core.evaluate import agent_chain
from masq.core.explain import explain as explain_ip
from masq.core.explain import explanation_dict, parse_ip, render_explanation
from masq.core.fragment import Fragment, parse_fragment
from masq.core.merge import Merged
from masq.core.model import IPAddress, MasqConfig, Ruleset, family_of
from masq.core.ruleset import desired_ruleset
from masq.shell.configdir import (
    ConfigFiles,
    config_dir_exists,
    load_config,
    parse_files,
    read_files,
)
from masq.shell.errors import EXIT_INVALID, EXIT_OK, EXIT_USAGE, PROG
from masq.shell.options import Options


def _err(line: str, stream: TextIO | None = None) -> None:
    print(f"{PROG}: {line}", file=stream if stream is not None else sys.stderr)


# --- --explain ------------------------------------------------------------------


def is_local_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is an address of this host (the kernel's LOCAL type), by binding to it.

    Binding succeeds only for local addresses (including all of 127.0.0.0/8), unless
    ``ip_nonlocal_bind`` is set, in which case we cannot tell and say "not local".
    """
    if ip.is_unspecified or ip.is_multicast:
        return False
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    sysctl = f"/proc/sys/net/ipv{ip.version}/ip_nonlocal_bind"
    try:
        with open(sysctl, encoding="ascii") as f:
            if f.read().strip() not in ("", "0"):
                return False
    except OSError:
        pass
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((str(ip), 0))
    except OSError:
        return False
    return True


def _live_ruleset(opts: Options, ip: IPAddress) -> tuple[Ruleset | None, str]:
    """The chain as the kernel holds it, or None with the reason we fall back."""
    from masq.shell.backend import resolve_backend
    from masq.shell.iptables import Iptables

    family = family_of(ip)
    try:
        backend = resolve_backend(opts.iptables_backend)
        tables = Iptables(backend, family)
        observed = tables.observe(opts.masq_chain)
    except Exception as e:  # any failure to read is reported, never fatal here
        return None, f"live rules unreadable ({e})"
    if observed.chain(opts.masq_chain) is None:
        return None, f"chain {opts.masq_chain} is absent from {tables.binary} (not synced here)"
    label = f"live, read from {tables.binary}"
    if agent_chain(observed) != opts.masq_chain:
        label += f" (warning: POSTROUTING does not jump to {opts.masq_chain})"
    return observed, label


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
    nor the live rules can be read.  ``read_live`` False skips iptables (tests).
    """
    stdout = out if out is not None else sys.stdout
    parsed = parse_ip(ip)
    if isinstance(parsed, Failure):
        _err(f"--explain: {parsed.failure()}", err)
        return EXIT_USAGE
    address = parsed.unwrap()
    family = family_of(address)
    enabled = family == "ipv4" or opts.enable_ipv6

    loaded = load_config(opts)
    fragments: Sequence[Fragment] = ()
    merged: Merged | None = None
    config_note = ""
    if isinstance(loaded, Failure):
        config_note = f"config invalid ({loaded.failure()}): no provenance"
        _err(f"invalid config: {loaded.failure()}", err)
    else:
        fragments = tuple(loaded.unwrap().fragments)
        merged = loaded.unwrap().merged

    ruleset: Ruleset | None = None
    if not enabled:
        label = "none (IPv6 is not enabled: --enable-ipv6=false)"
    else:
        live, why = _live_ruleset(opts, address) if read_live else (None, "live rules not read")
        if live is not None:
            ruleset, label = live, why
        elif merged is not None:
            ruleset = desired_ruleset(
                merged.config, family, opts.ruleset_options(opts.random_fully)
            )
            label = f"desired, from the config ({why})"
        else:
            _err(f"cannot explain {address}: {why}, and the config is invalid", err)
            return EXIT_INVALID
    if config_note:
        label += f"; {config_note}"

    result = explain_ip(
        address,
        ruleset=ruleset,
        fragments=fragments,
        merged=merged,
        chain=opts.masq_chain,
        local=is_local_address(address),
    )
    if opts.log_format == "json":
        print(json.dumps(explanation_dict(result, label), sort_keys=True), file=stdout)
    else:
        stdout.write(render_explanation(result, label))
    return EXIT_OK


# --- --validate -----------------------------------------------------------------


def config_document(config: MasqConfig) -> dict[str, object]:
    """The effective config as a config file would spell it (keys in the files' order)."""
    return {
        "nonMasqueradeCIDRs": [str(n) for n in config.non_masquerade_cidrs],
        "masqueradeCIDRs": [str(n) for n in config.masquerade_cidrs],
        "masqLinkLocal": config.masq_link_local,
        "masqLinkLocalIPv6": config.masq_link_local_ipv6,
        "resyncInterval": format_duration(config.resync_interval),
        "cidrLimit": config.cidr_limit,
    }


def _file_errors(files: ConfigFiles) -> list[ConfigError]:
    """Every file's own error (not only the first), so one run shows all there is to fix."""
    return [
        r.failure() for name, data in files if isinstance(r := parse_fragment(data, name), Failure)
    ]


def validate(opts: Options, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Check the config dir; print the merged config and its conflicts.

    Exit 0 when valid, 1 with one line per error otherwise (conflicts are errors
    only with ``--fail-on-conflict``, as for the agent).  Touches no rule.
    """
    stdout = out if out is not None else sys.stdout
    read = read_files(opts)
    files: ConfigFiles = ()
    if isinstance(read, Failure):
        unreadable = read.failure()
        errors = [replace(unreadable, source=os.path.basename(unreadable.source))]
    else:
        files = read.unwrap()
        errors = _file_errors(files)
    names = tuple(name for name, _ in files)
    merged: Merged | None = None
    if not errors:
        loaded = parse_files(files, opts)
        if isinstance(loaded, Failure):
            errors.append(loaded.failure())
        else:
            merged = loaded.unwrap().merged
    conflicts = [str(c) for c in merged.conflicts] if merged is not None else []
    fatal_conflicts = opts.fail_on_conflict and bool(conflicts)
    valid = not errors and not fatal_conflicts
    missing = not config_dir_exists(opts.config_dir)

    if opts.log_format == "json":
        doc: dict[str, object] = {
            "valid": valid,
            "config_dir": opts.config_dir,
            "config_dir_exists": not missing,
            "files": list(names),
            "config": config_document(merged.config) if merged is not None else None,
            "conflicts": conflicts,
            "errors": [str(e) for e in errors],
        }
        print(json.dumps(doc, sort_keys=True), file=stdout)
    else:
        where = f"{opts.config_dir} (prefix {opts.config_prefix!r})"
        if missing:
            stdout.write(f"# config dir {where} does not exist: defaults apply\n")
        else:
            listed = ", ".join(names) if names else "none (defaults apply)"
            stdout.write(f"# config dir {where}: files {listed}\n")
        if merged is not None:
            stdout.write("# merged config:\n")
            stdout.write(yaml.safe_dump(config_document(merged.config), sort_keys=False, indent=2))
            stdout.write(f"# conflicts: {len(conflicts)}\n")
            for line in conflicts:
                stdout.write(f"# {line}\n")
        stdout.write("# valid\n" if valid else "# invalid\n")
    for e in errors:
        _err(str(e), err)
    if fatal_conflicts:
        for line in conflicts:
            _err(f"{line} (fatal with --fail-on-conflict)", err)
    return EXIT_OK if valid else EXIT_INVALID
