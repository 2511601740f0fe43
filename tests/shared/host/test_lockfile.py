"""``shared.host.lockfile`` on real files: one owner per folder, the holder named, a private
lock file, and a lock that is free again once its holder lets go."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shared.errors import AlreadyRunning, ExitCode
from shared.host.lockfile import edge_lock, relay_lock


def test_a_second_owner_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    folder = tmp_path / "relay"
    first = relay_lock(folder).acquire()
    try:
        with pytest.raises(AlreadyRunning) as refused:
            relay_lock(folder).acquire()  # another open file description: refused
        assert refused.value.pid == os.getpid()
        assert refused.value.code == "already_running"
        assert refused.value.exit_code == ExitCode.ALREADY_RUNNING
        assert f"(pid {os.getpid()})" in refused.value.message
        assert (folder / "relay.lock").read_text().strip() == str(os.getpid())
    finally:
        first.release()
    assert (folder / "relay.lock").read_text() == ""  # the file stays, the pid goes
    with relay_lock(folder) as again:
        assert again.held


def test_the_lock_file_and_folder_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "home" / "data"
    with edge_lock(folder):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE((folder / "edge.lock").stat().st_mode) == 0o600


def test_relay_and_edge_locks_are_independent(tmp_path: Path) -> None:
    """``mailslot up`` holds both in one folder tree: taking one never blocks the other."""
    with relay_lock(tmp_path) as relay, edge_lock(tmp_path) as edge:
        assert relay.held and edge.held
