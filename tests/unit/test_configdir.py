"""The config directory as the kubelet lays out a ConfigMap volume, and as people hand-write it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from integration.expected import RESERVED, canonical
from returns.result import Failure, Result, Success

from masq.core.errors import ConfigError
from masq.core.fragment import MAX_FRAGMENT_BYTES
from masq.shell.configdir import RACY_NS, FileCache, LoadedConfig, load, read_files
from masq.shell.options import Options


def load_config(opts: Options) -> Result[LoadedConfig, tuple[ConfigError, ...]]:
    """Read then load, as the agent does."""

    def first(error: ConfigError) -> tuple[ConfigError, ...]:
        return (error,)

    files = read_files(opts.config_dir, opts.config_prefix)
    return files.alt(first).bind(lambda f: load(f, opts))


def kubelet_layout(root: Path, files: dict[str, str]) -> None:
    """What the kubelet's atomic writer makes: ..<ts>/ data dir, ..data symlink, key symlinks."""
    ts = root / "..2026_11_26_13_00_00.000000001"
    ts.mkdir()
    for name, text in files.items():
        (ts / name).write_text(text)
    (root / "..data").symlink_to(ts.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")


def test_regular_files_sorted_by_name(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-b").write_text("b")
    (tmp_path / "ip-masq-a").write_text("a")
    (tmp_path / "ip-masq").write_text("plain")
    assert read_files(str(tmp_path), "ip-masq").unwrap() == (
        ("ip-masq", b"plain"),
        ("ip-masq-a", b"a"),
        ("ip-masq-b", b"b"),
    )


def test_wrong_prefix_ignored(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-agent").write_text("x")
    (tmp_path / "config").write_text("y")
    (tmp_path / "my-ip-masq").write_text("z")
    assert read_files(str(tmp_path), "ip-masq").unwrap() == (("ip-masq-agent", b"x"),)


def test_kubelet_configmap_layout_counts_each_key_once(tmp_path: Path) -> None:
    kubelet_layout(tmp_path, {"ip-masq-agent": "a: 1", "ip-masq-extra": "b: 2"})
    assert read_files(str(tmp_path), "ip-masq").unwrap() == (
        ("ip-masq-agent", b"a: 1"),
        ("ip-masq-extra", b"b: 2"),
    )


def test_dot_names_ignored_even_with_matching_prefix(tmp_path: Path) -> None:
    (tmp_path / ".ip-masq-hidden").write_text("h")
    (tmp_path / "ip-masq-x").write_text("x")
    assert read_files(str(tmp_path), ".ip-masq").unwrap() == ()
    assert read_files(str(tmp_path), "").unwrap() == (("ip-masq-x", b"x"),)


def test_directories_dangling_symlinks_and_fifos_ignored(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-dir").mkdir()
    (tmp_path / "ip-masq-dangling").symlink_to("nowhere")
    (tmp_path / "ip-masq-dirlink").symlink_to("ip-masq-dir")
    os.mkfifo(tmp_path / "ip-masq-fifo")
    (tmp_path / "ip-masq-ok").write_text("ok")
    assert read_files(str(tmp_path), "ip-masq").unwrap() == (("ip-masq-ok", b"ok"),)


def test_symlink_to_file_outside_dir_is_read(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.yaml"
    target.write_text("t")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "ip-masq-agent").symlink_to(target)
    assert read_files(str(cfg), "ip-masq").unwrap() == (("ip-masq-agent", b"t"),)


def test_missing_dir_is_empty(tmp_path: Path) -> None:
    assert read_files(str(tmp_path / "absent"), "ip-masq").unwrap() == ()


def test_read_is_capped_just_above_the_limit(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-big").write_bytes(b"#" * (3 * MAX_FRAGMENT_BYTES))
    ((_, data),) = read_files(str(tmp_path), "ip-masq").unwrap()
    assert len(data) == MAX_FRAGMENT_BYTES + 1


def test_load_config_merges_files(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    (tmp_path / "ip-masq-b").write_text('{"nonMasqueradeCIDRs": ["192.168.0.0/16"]}')
    loaded = load_config(Options(config_dir=str(tmp_path)))
    assert isinstance(loaded, Success)
    value = loaded.unwrap()
    assert value.files == ("ip-masq-a", "ip-masq-b")
    assert len(value.fragments) == 2
    assert [str(n) for n in value.merged.config.non_masquerade_cidrs] == [
        "10.0.0.0/8",
        "192.168.0.0/16",
    ]


def test_load_config_defaults_when_dir_missing(tmp_path: Path) -> None:
    loaded = load_config(
        Options(config_dir=str(tmp_path / "x"), nomasq_all_reserved_ranges=True)
    ).unwrap()
    assert loaded.files == ()
    assert [str(n) for n in loaded.merged.config.non_masquerade_cidrs] == canonical(RESERVED)


def test_load_config_passes_flag_resync_interval_as_default(tmp_path: Path) -> None:
    loaded = load_config(Options(config_dir=str(tmp_path), resync_interval=7.0)).unwrap()
    assert loaded.merged.config.resync_interval == 7.0


def test_load_config_error_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("nonMasqueradeCIDRs: [10.0.0.0/8]\n")
    (tmp_path / "ip-masq-bad").write_text("nonMasqueradeCIDR: [10.0.0.0/8]\n")
    loaded = load_config(Options(config_dir=str(tmp_path)))
    assert isinstance(loaded, Failure)
    assert [e.source for e in loaded.failure()] == ["ip-masq-bad"]


def test_load_reports_every_bad_file_and_the_first_bad_entry_of_each() -> None:
    """Every file's own error, in file order (what --validate lists); inside one file the
    first bad entry, as the core collects a list (fails if either is dropped or reordered)."""
    files = (
        ("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8, 10.0.0.1/8, null]\n"),
        ("ip-masq-b", b"{}"),
        ("ip-masq-c", b"masqueradeCIDRs: [bad, '']\n"),
    )
    loaded = load(files, Options())
    assert isinstance(loaded, Failure)
    assert [(e.source, e.key, e.index) for e in loaded.failure()] == [
        ("ip-masq-a", "nonMasqueradeCIDRs", 1),
        ("ip-masq-c", "masqueradeCIDRs", 0),
    ]


def test_load_config_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A config file whose read fails (for root too: /proc/self/mem reads with EIO at offset
    0, where a mode-000 file would not stop root) ends the load with one ConfigError that
    names the file and the reason; the readable files beside it do not hide it."""
    (tmp_path / "ip-masq-a").write_text("{}")
    (tmp_path / "ip-masq-b").symlink_to("/proc/self/mem")
    loaded = load_config(Options(config_dir=str(tmp_path)))
    assert isinstance(loaded, Failure)
    assert [str(e) for e in loaded.failure()] == [
        f"{tmp_path / 'ip-masq-b'}: cannot read: Input/output error"
    ]


def test_a_reload_parses_only_the_files_that_changed() -> None:
    """Same name and bytes: the fragment from before, the very object; anything else is
    parsed anew (a rename too: the source is part of the fragment)."""
    opts = Options()
    first = (
        ("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8]"),
        ("ip-masq-b", b"masqLinkLocal: true"),
    )
    before = load(first, opts).unwrap()
    edited = (("ip-masq-a", b"nonMasqueradeCIDRs: [10.0.0.0/8, 11.0.0.0/8]"), first[1])
    after = load(edited, opts, before).unwrap()
    assert after.fragments[1] is before.fragments[1]
    assert after.fragments[0] is not before.fragments[0]
    assert len(after.merged.config.non_masquerade_cidrs) == 2
    renamed = (("ip-masq-c", first[1][1]),)
    again = load(renamed, opts, before).unwrap()
    assert again.fragments[0].source == "ip-masq-c"
    # and a reload gives what a fresh load gives
    assert load(edited, opts).unwrap().merged == after.merged


# --- a resync reads only the files that changed (FileCache) --------------------------

SECOND = 1_000_000_000


class Counting:
    """An opener that counts the reads of each file name."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}

    def __call__(self, path: str) -> BinaryIO:
        name = os.path.basename(path)
        self.reads[name] = self.reads.get(name, 0) + 1
        return open(path, "rb")


def later(seconds: float) -> Callable[[], int]:
    """A wall clock ``seconds`` ahead of the real one (files look that much older)."""
    return lambda: time.time_ns() + int(seconds * SECOND)


class FrozenStat:
    """``os.stat`` whose answer for a path never changes after the first: timestamps that
    did not move (a rewrite within one tick of the kernel's coarse clock)."""

    def __init__(self) -> None:
        self.seen: dict[str, os.stat_result] = {}

    def __call__(self, path: str) -> os.stat_result:
        return self.seen.setdefault(path, os.stat(path))


def same_times(ns: int) -> Callable[[str], os.stat_result]:
    """``os.stat`` with every mtime and ctime ``ns``: only device, inode and size tell."""

    def stat(path: str) -> os.stat_result:
        st = os.stat(path)
        seconds = ns / SECOND
        return os.stat_result((*st[:10], st.st_atime, seconds, seconds, st.st_atime_ns, ns, ns))

    return stat


def test_a_file_unchanged_since_it_was_read_is_not_read_again(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("a: 1")
    (tmp_path / "ip-masq-b").write_text("b: 1")
    opener = Counting()
    cache = FileCache(opener=opener, clock=later(10))
    first = read_files(str(tmp_path), "ip-masq", cache).unwrap()
    second = read_files(str(tmp_path), "ip-masq", cache).unwrap()
    assert second == first == (("ip-masq-a", b"a: 1"), ("ip-masq-b", b"b: 1"))
    assert opener.reads == {"ip-masq-a": 1, "ip-masq-b": 1}


def test_only_the_changed_file_is_read_again(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("a: 1")
    (tmp_path / "ip-masq-b").write_text("b: 1")
    opener = Counting()
    cache = FileCache(opener=opener, clock=later(10))
    read_files(str(tmp_path), "ip-masq", cache)
    (tmp_path / "ip-masq-b").write_text("b: 2")  # same size: the timestamps tell
    os.utime(tmp_path / "ip-masq-b", ns=(0, time.time_ns() + SECOND))
    assert read_files(str(tmp_path), "ip-masq", cache).unwrap() == (
        ("ip-masq-a", b"a: 1"),
        ("ip-masq-b", b"b: 2"),
    )
    assert opener.reads == {"ip-masq-a": 1, "ip-masq-b": 2}


def test_a_same_size_rewrite_in_the_racy_window_is_seen(tmp_path: Path) -> None:
    """A file read within RACY_NS of its last change is read again next time, even when
    its stat has not moved at all (a rewrite in the same tick of the coarse clock)."""
    (tmp_path / "ip-masq-a").write_text("a: 1")
    opener = Counting()
    cache = FileCache(opener=opener, stat=FrozenStat())
    assert read_files(str(tmp_path), "ip-masq", cache).unwrap() == (("ip-masq-a", b"a: 1"),)
    (tmp_path / "ip-masq-a").write_text("a: 2")
    assert read_files(str(tmp_path), "ip-masq", cache).unwrap() == (("ip-masq-a", b"a: 2"),)
    assert opener.reads == {"ip-masq-a": 2}


def test_a_racy_file_is_trusted_once_its_change_is_old(tmp_path: Path) -> None:
    (tmp_path / "ip-masq-a").write_text("a: 1")
    opener = Counting()
    ahead = [0.0]

    def clock() -> int:
        return time.time_ns() + int(ahead[0] * SECOND)

    cache = FileCache(opener=opener, clock=clock)
    for _ in range(2):  # within the window: read each time
        read_files(str(tmp_path), "ip-masq", cache)
    assert opener.reads == {"ip-masq-a": 2}
    ahead[0] = RACY_NS / SECOND + 1
    for _ in range(3):  # read once more, well after the change: trusted from then on
        read_files(str(tmp_path), "ip-masq", cache)
    assert opener.reads == {"ip-masq-a": 3}


def test_a_kubelet_swap_with_the_same_size_and_times_is_seen(tmp_path: Path) -> None:
    """A ConfigMap update points the names at a new directory's files: a new inode tells,
    even when size and timestamps are the old file's."""
    kubelet_layout(tmp_path, {"ip-masq-agent": "a: 1"})
    opener = Counting()
    cache = FileCache(opener=opener, clock=later(10), stat=same_times(time.time_ns()))
    read_files(str(tmp_path), "ip-masq", cache)
    new = tmp_path / "..2026_11_26_14_00_00.000000002"
    new.mkdir()
    (new / "ip-masq-agent").write_text("a: 2")
    (tmp_path / "..data_tmp").symlink_to(new.name)
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    assert read_files(str(tmp_path), "ip-masq", cache).unwrap() == (("ip-masq-agent", b"a: 2"),)
    assert opener.reads == {"ip-masq-agent": 2}


def test_a_config_dir_removed_and_made_again_is_read_again(tmp_path: Path) -> None:
    """What was read from a directory that went away is forgotten with it, even if the
    new directory's file has the old one's signature."""
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "ip-masq-a").write_text("a: 1")
    opener = Counting()
    cache = FileCache(opener=opener, clock=later(10), stat=same_times(time.time_ns()))
    read_files(str(cfg), "ip-masq", cache)
    cfg.rename(tmp_path / "away")
    assert read_files(str(cfg), "ip-masq", cache).unwrap() == ()
    (tmp_path / "away").rename(cfg)  # the same inode, size and (here) times
    assert read_files(str(cfg), "ip-masq", cache).unwrap() == (("ip-masq-a", b"a: 1"),)
    assert opener.reads == {"ip-masq-a": 2}
