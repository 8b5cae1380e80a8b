"""Reading the config directory (kubelet ConfigMap layout) and turning it into one config."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError
from masq.core.fragment import MAX_FRAGMENT_BYTES, Fragment, parse_fragment
from masq.core.merge import Merged, merge
from masq.shell.options import Options

ConfigFiles = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The files that made up a config, each parsed, and their merge."""

    files: tuple[str, ...]
    fragments: PVector[Fragment]
    merged: Merged


def read_config_files(config_dir: str, prefix: str) -> ConfigFiles:
    """Every regular file (or symlink to one) named ``prefix*``, by name; missing dir -> ().

    Dot-names are skipped so the kubelet's ``..data``/``..2024_...`` entries never
    count twice.  Each read stops one byte past the core's size limit, so an
    oversized file is rejected by the core with its real name instead of being
    read whole.  A file that vanishes between listing and reading (a ConfigMap
    swap in progress) is skipped: the swap itself triggers the next sync.
    Unreadable files raise OSError for the caller to report.
    """
    try:
        entries = list(os.scandir(config_dir))
    except FileNotFoundError:
        return ()
    names = sorted(
        e.name
        for e in entries
        if not e.name.startswith(".") and e.name.startswith(prefix) and _is_file(e)
    )
    out: list[tuple[str, bytes]] = []
    for name in names:
        try:
            with open(os.path.join(config_dir, name), "rb") as f:
                out.append((name, f.read(MAX_FRAGMENT_BYTES + 1)))
        except FileNotFoundError:
            continue
    return tuple(out)


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


def config_dir_exists(config_dir: str) -> bool:
    return os.path.isdir(config_dir)


def parse_files(files: ConfigFiles, opts: Options) -> Result[LoadedConfig, ConfigError]:
    """Parse each file, then merge with the flag-level defaults (first error wins, by name)."""
    fragments: list[Fragment] = []
    for name, data in files:
        parsed = parse_fragment(data, name)
        if isinstance(parsed, Failure):
            return Failure(parsed.failure())
        fragments.append(parsed.unwrap())
    merged = merge(
        fragments,
        reserved_ranges=opts.nomasq_all_reserved_ranges,
        enable_ipv6=opts.enable_ipv6,
        default_resync_interval=opts.resync_interval,
    )
    return merged.map(
        lambda m: LoadedConfig(
            files=tuple(name for name, _ in files), fragments=pvector(fragments), merged=m
        )
    )


def read_files(opts: Options) -> Result[ConfigFiles, ConfigError]:
    """``read_config_files`` for ``opts``; an unreadable file is a ConfigError naming it."""
    try:
        return Success(read_config_files(opts.config_dir, opts.config_prefix))
    except OSError as e:
        source = e.filename if isinstance(e.filename, str) else opts.config_dir
        return Failure(ConfigError(source, f"cannot read: {e.strerror or e}"))


def load_config(opts: Options) -> Result[LoadedConfig, ConfigError]:
    """Read and parse ``opts.config_dir``."""
    return read_files(opts).bind(lambda files: parse_files(files, opts))
