"""Fixtures of the activity-log tests: the log's two files in a temporary home, and the
log opened on them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.store.activity import ActivityLog


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "data" / "activity.log", tmp_path / "config" / "keys" / "activity.key"


@pytest.fixture
def log(paths: tuple[Path, Path]) -> Iterator[ActivityLog]:
    with ActivityLog.open(*paths) as opened:
        yield opened
