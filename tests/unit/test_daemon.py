"""The daemon's wake-ups: config changes (inotify), the resync timer, and signals."""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from masq.shell import daemon
from masq.shell.daemon import ConfigWatcher, Stopper, wait_for_change
from masq.shell.errors import AgentError
from masq.shell.options import Options


@pytest.fixture
def stopper() -> Iterator[Stopper]:
    s = Stopper()
    yield s
    s.close()


def later(seconds: float, action: object) -> threading.Timer:
    t = threading.Timer(seconds, action)  # type: ignore[arg-type]
    t.start()
    return t


def test_timeout_without_events(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        assert wait_for_change(watcher, stopper, 0.05) == "timeout"
    finally:
        watcher.close()


def test_new_file_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        later(0.05, lambda: (tmp_path / "ip-masq-x").write_text("a"))
        assert wait_for_change(watcher, stopper, 5) == "config"
    finally:
        watcher.close()


def test_kubelet_data_symlink_swap_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    (tmp_path / "..v1").mkdir()
    (tmp_path / "..v2").mkdir()
    (tmp_path / "..data").symlink_to("..v1")
    watcher = ConfigWatcher(str(tmp_path))

    def swap() -> None:
        (tmp_path / "..data_tmp").symlink_to("..v2")
        os.rename(tmp_path / "..data_tmp", tmp_path / "..data")

    try:
        later(0.05, swap)
        assert wait_for_change(watcher, stopper, 5) == "config"
    finally:
        watcher.close()


def test_missing_dir_is_watched_through_its_parent(tmp_path: Path, stopper: Stopper) -> None:
    cfg = tmp_path / "cfg"
    watcher = ConfigWatcher(str(cfg))
    try:
        assert not watcher.polling
        later(0.05, cfg.mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        # now the dir itself is watched: a file in it wakes us
        later(0.05, lambda: (cfg / "ip-masq-a").write_text("x"))
        assert wait_for_change(watcher, stopper, 5) == "config"
        # and then quiet: the replaced parent watch's late IN_IGNORED is not a change
        # (fails if stale events trigger a rewatch, which loops forever)
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_deleted_and_recreated_dir_is_followed(tmp_path: Path, stopper: Stopper) -> None:
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    watcher = ConfigWatcher(str(cfg))
    try:
        later(0.05, cfg.rmdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        later(0.05, cfg.mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        later(0.05, lambda: (cfg / "ip-masq-a").write_text("x"))
        assert wait_for_change(watcher, stopper, 5) == "config"
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_no_dir_and_no_parent_polls(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path / "a" / "b"))
    try:
        assert watcher.polling
        later(0.05, (tmp_path / "a").mkdir)
        assert wait_for_change(watcher, stopper, 5) == "config"
        assert not watcher.polling
        assert wait_for_change(watcher, stopper, 0.3) == "timeout"
    finally:
        watcher.close()


def test_sigterm_wakes_up(tmp_path: Path, stopper: Stopper) -> None:
    watcher = ConfigWatcher(str(tmp_path))
    try:
        later(0.05, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert wait_for_change(watcher, stopper, 5) == "signal"
        assert stopper.signum == signal.SIGTERM
    finally:
        watcher.close()


def test_no_inotify_instance_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fails if inotify_init's EMFILE escapes daemon.run as a traceback, or if the
    # signal handlers it installed stay behind.
    def exhausted() -> None:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(daemon, "INotify", exhausted)
    before = signal.getsignal(signal.SIGTERM)
    opts = Options(config_dir=str(tmp_path), metrics_bind_address=None)
    with pytest.raises(AgentError, match=r"cannot watch .*Too many open files"):
        daemon.run(opts)
    assert signal.getsignal(signal.SIGTERM) is before
