"""Reading the config directory (kubelet ConfigMap layout) and turning it into one config."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Final

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


RACY_NS: Final = 2_000_000_000
"""A file changed less than this long before it was read may change again without its
timestamps moving (they tick with the kernel's coarse clock): it is read again next time,
as git treats a "racily clean" index entry."""

Signature = tuple[int, int, int, int, int]
"""(device, inode, size, mtime_ns, ctime_ns) of a file, its symlinks followed."""
Opener = Callable[[str], BinaryIO]
Stat = Callable[[str], os.stat_result]


def _open_binary(path: str) -> BinaryIO:
    return open(path, "rb")


@dataclass(frozen=True, slots=True)
class _Read:
    signature: Signature
    data: bytes
    trusted: bool  # read well after its last change: unchanged while its signature is


class FileCache:
    """What ``read_files`` read last, per path, so a resync reads only the files that
    changed: at 100,000 CIDRs the config is 1.2 MB in ten files, and reading it whole
    was most of an idle resync.

    A file whose signature (device, inode, size, mtime, ctime) is the one it had when it
    was last read, and which was read at least ``RACY_NS`` after its last change, is not
    read again.  Any write moves mtime and ctime, a kubelet ConfigMap swap points the
    name at a new inode, and a rewrite within the same clock tick as the last read is
    caught by the racy rule (the file is read again until its change is old enough), so
    a sync sees every change a read would.  ``opener``, ``stat`` and ``clock`` (wall ns,
    the clock file timestamps come from) are injectable for tests.
    """

    def __init__(
        self,
        opener: Opener = _open_binary,
        clock: Callable[[], int] = time.time_ns,
        stat: Stat = os.stat,
    ) -> None:
        self._opener = opener
        self._clock = clock
        self.stat = stat
        self._reads: dict[str, _Read] = {}

    def read(self, path: str, st: os.stat_result, now: int) -> bytes:
        """The file's bytes up to one past the size limit; ``st`` is its stat taken at or
        after ``now``.  OSError as ``open`` raises it."""
        signature = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = self._reads.get(path)
        if known is not None and known.trusted and known.signature == signature:
            return known.data
        with self._opener(path) as f:
            data = f.read(MAX_FRAGMENT_BYTES + 1)
        trusted = now - max(st.st_mtime_ns, st.st_ctime_ns) >= RACY_NS
        self._reads[path] = _Read(signature, data, trusted)
        return data

    def keep(self, paths: Iterable[str]) -> None:
        """Forget every path but ``paths`` (files gone from the directory)."""
        kept = set(paths)
        self._reads = {p: r for p, r in self._reads.items() if p in kept}

    def now(self) -> int:
        return self._clock()


def read_files(
    config_dir: str, prefix: str, cache: FileCache | None = None
) -> Result[ConfigFiles, ConfigError]:
    """Every regular file (or symlink to one) named ``prefix*``, by name; missing dir -> ().

    Dot-names are skipped so the kubelet's ``..data``/``..2024_...`` entries never
    count twice.  Each read stops one byte past the core's size limit, so an
    oversized file is rejected by the core with its real name instead of being
    read whole.  A file that vanishes between listing and reading (a ConfigMap
    swap in progress) is skipped: the swap itself triggers the next sync.  An
    unreadable file is a ConfigError naming it.  With ``cache`` (the daemon's), a file
    unchanged since the cache last read it is not read again (``FileCache``).
    """
    cache = cache if cache is not None else FileCache()
    now = cache.now()  # before any stat: what a stat shows is no newer than this read
    try:
        entries = list(os.scandir(config_dir))
    except FileNotFoundError:
        cache.keep(())
        return Success(())
    except OSError as e:
        return Failure(ConfigError(config_dir, f"cannot read: {e.strerror or e}"))
    names = sorted(
        e.name for e in entries if not e.name.startswith(".") and e.name.startswith(prefix)
    )
    out: list[tuple[str, bytes]] = []
    for name in names:
        path = os.path.join(config_dir, name)
        try:
            st = cache.stat(path)
        except OSError:
            continue  # vanished, a dangling symlink, or not ours to read: as not a file
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            out.append((name, cache.read(path, st, now)))
        except FileNotFoundError:
            continue
        except OSError as e:
            return Failure(ConfigError(path, f"cannot read: {e.strerror or e}"))
    cache.keep(os.path.join(config_dir, name) for name, _ in out)
    return Success(tuple(out))


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
