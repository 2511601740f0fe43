"""What every ``mailslot`` command prints, and how: data (``emit``) and errors (``fail``),
the shape of a command handler, and the argument types commands share (``arg_type``,
``duration_arg``).

Every command that prints data takes ``--json``: ``emit`` prints the JSON document then,
else the text. Errors print one line ``mailslot: <code>: <message>`` on stderr (or the
JSON object ``{"error": code, "message": text}`` on stdout with ``--json``); the caller
exits with the code returned.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from edge.config import EdgePaths
from edge.intents.model import parse_duration
from shared.errors import ExitCode

T = TypeVar("T")

#: A command: its parsed arguments and this edge's paths (resolved once per command by
#: ``edge.cli.main``) in, the exit code out.
Handler = Callable[[argparse.Namespace, EdgePaths], int]
#: The hook each command module registers its commands with:
#: ``command(name, handler, help, parent=<the top level>)`` → the sub-command's parser
#: (with ``--json``), built by ``edge.cli.main.build_parser``.
Command = Callable[..., argparse.ArgumentParser]


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """Print ``data`` as one line of JSON with ``--json``, else ``text``."""
    print(json.dumps(data, indent=None, default=str) if args.json else text)


def fail(
    args: argparse.Namespace, code: str, message: str, exit_code: int = ExitCode.ERROR
) -> int:
    """Report an error the documented way; return the exit code to use."""
    if getattr(args, "json", False):
        print(json.dumps({"error": code, "message": message}))
    else:
        print(f"mailslot: {code}: {message}", file=sys.stderr)
    return int(exit_code)


def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from ``parse``: its ``ValueError`` becomes the usage error,
    in its own words (``argument --for: 'soon' is not a duration …``)."""

    def parsed(value: str) -> T:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


#: ``type=`` of a duration option: ``90``, ``90s``, ``15m``, ``2h``, ``1d`` → seconds.
duration_arg = arg_type(parse_duration)
