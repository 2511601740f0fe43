"""Every command's ``--help`` renders (argparse formats help strings with %, so a stray
percent sign breaks ``--help`` for a whole command)."""

from __future__ import annotations

import argparse

import pytest

from edge.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


@pytest.mark.parametrize("path", _commands(build_parser()), ids=" ".join)
def test_help_renders(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*path, "--help"])
    assert exited.value.code == 0
    assert "usage: mailslot" in capsys.readouterr().out
