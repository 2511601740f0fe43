"""``edge.watches.folders``: a new watch's folders must exist (real folders on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.errors import InvalidWatch
from edge.intents.declarations import Declarations
from edge.watches.folders import check_folders


def _watch(doc: dict[str, Any]) -> Any:
    return Declarations.model_validate({"watches": [{"id": "w", **doc}]}).watches[0]


def test_a_file_watch_on_an_existing_folder_or_glob_passes(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    check_folders(_watch({"kind": "file", "paths": [str(tmp_path / "a.txt"),
                                                     str(tmp_path / "src" / "**" / "*.py")]}))


@pytest.mark.parametrize(("path", "words"), [
    ("relative/a.txt", "must be absolute"),
    ("{tmp}/missing/a.txt", "does not exist"),
    ("{tmp}/missing/*/a.txt", "does not exist"),
])
def test_a_file_watch_on_a_missing_or_relative_folder_is_refused(
    tmp_path: Path, path: str, words: str
) -> None:
    with pytest.raises(InvalidWatch, match=words):
        check_folders(_watch({"kind": "file", "paths": [path.format(tmp=tmp_path)]}))


def test_a_command_watch_needs_an_existing_absolute_cwd(tmp_path: Path) -> None:
    doc = {"kind": "command", "argv": ["true"], "schedule": {"every": "1m"}}
    check_folders(_watch({**doc, "cwd": str(tmp_path)}))
    with pytest.raises(InvalidWatch, match="--cwd"):
        check_folders(_watch({**doc, "cwd": str(tmp_path / "missing")}))
