"""``mailslot mcp``'s options, refused before anything starts: ``--session`` needs
``--channel``, ``--include-unsessioned`` needs ``--session``, a session must be one. In
process, through the real parser and ``edge.cli.main``'s error output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli.main import main


@pytest.mark.parametrize(("args", "words"), [
    (["--session", "a"], "--session needs --channel"),
    (["--channel", "--include-unsessioned"], "--include-unsessioned needs --session"),
    (["--channel", "--session", "a b"], "session"),
])
def test_session_options_are_checked(args: list[str], words: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAILSLOT_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(["mcp", *args, "--json"])
    assert exited.value.code == 2
    error = json.loads(capsys.readouterr().out)
    assert error["error"] == "usage" and words in error["message"]
