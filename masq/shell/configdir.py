"""Reading the config directory (kubelet ConfigMap layout) and turning it into one config."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pyrsistent import pvector
from pyrsistent.typing import PVector
from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError, collect
from masq.core.fragment import MAX_FRAGMENT_BYTES, Fragment, parse_fragment
from masq.core.merge import Merged, merge
from masq.shell.options import Options

ConfigFiles = tuple[tuple[str, bytes], ...]
"""(file name, contents) of every config file, by name."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """The files that made up a config (name and bytes), each parsed, and their merge."""

    sources: ConfigFiles
    fragments: PVector[Fragment]
    merged: Merged

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.sources)


def read_files(config_dir: str, prefix: str) -> Result[ConfigFiles, ConfigError]:
    """Every regular file (or symlink to one) named ``prefix*``, by name; missing dir -> ().

    Dot-names are skipped so the kubelet's ``..data``/``..2024_...`` entries never
    count twice.  Each read stops one byte past the core's size limit, so an
    oversized file is rejected by the core with its real name instead of being
    read whole.  A file that vanishes between listing and reading (a ConfigMap
    swap in progress) is skipped: the swap itself triggers the next sync.  An
    unreadable file is a ConfigError naming it.
    """
    try:
        entries = list(os.scandir(config_dir))
    except FileNotFoundError:
        return Success(())
    except OSError as e:
        return Failure(ConfigError(config_dir, f"cannot read: {e.strerror or e}"))
    names = sorted(
        e.name
        for e in entries
        if not e.name.startswith(".") and e.name.startswith(prefix) and _is_file(e)
    )
    out: list[tuple[str, bytes]] = []
    for name in names:
        path = os.path.join(config_dir, name)
        try:
            with open(path, "rb") as f:
                out.append((name, f.read(MAX_FRAGMENT_BYTES + 1)))
        except FileNotFoundError:
            continue
        except OSError as e:
            return Failure(ConfigError(path, f"cannot read: {e.strerror or e}"))
    return Success(tuple(out))


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file(follow_symlinks=True)
    except OSError:
        return False


def _parse(
    name: str, data: bytes, known: dict[tuple[str, bytes], Fragment]
) -> Result[Fragment, ConfigError]:
    fragment = known.get((name, data))
    return Success(fragment) if fragment is not None else parse_fragment(data, name)


def config_dir_exists(config_dir: str) -> bool:
    return os.path.isdir(config_dir)


def load(
    files: ConfigFiles, opts: Options, before: LoadedConfig | None = None
) -> Result[LoadedConfig, tuple[ConfigError, ...]]:
    """Parse every file, then merge with the flag-level defaults.

    Every file is parsed once; a failure carries every file's own error (by name),
    or the merge's one error, so ``--validate`` can show them all while the agent
    reports the first.  A file whose name and bytes are those of one in ``before``
    keeps its fragment: a one-line edit of one file of a 50,000-CIDR config parses
    that file only, and the merge starts from ``before``'s, so its cost follows the
    CIDRs that changed.
    """
    known = dict(zip(before.sources, before.fragments, strict=True)) if before else {}
    parsed = [_parse(name, data, known) for name, data in files]
    return (
        collect(parsed)
        .alt(lambda _: tuple(p.failure() for p in parsed if isinstance(p, Failure)))
        .bind(lambda fragments: _merged(files, pvector(fragments), opts, before))
    )


def _merged(
    files: ConfigFiles,
    fragments: PVector[Fragment],
    opts: Options,
    before: LoadedConfig | None,
) -> Result[LoadedConfig, tuple[ConfigError, ...]]:
    return (
        merge(
            fragments,
            reserved_ranges=opts.nomasq_all_reserved_ranges,
            enable_ipv6=opts.enable_ipv6,
            default_resync_interval=opts.resync_interval,
            previous=before.merged if before is not None else None,
        )
        .map(lambda merged: LoadedConfig(sources=files, fragments=fragments, merged=merged))
        .alt(lambda error: (error,))
    )
