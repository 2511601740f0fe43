"""The README's command-watch example does what it says: its ``disk`` watch, exactly as
documented (in the ``[[watch]]`` block and as a ``mailslot watch add`` line), runs its real
command, parses the JSON it prints and fires only when the condition holds. A ``df``
example once shipped there could never fire: ``df`` does not print JSON."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from tests_support import mailslot

from edge.intents.declarations import CommandWatch
from edge.intents.file import load_intents, parse_intents
from edge.watches.commands import run_command
from shared.match import Predicate

README = Path(__file__).resolve().parents[3] / "README.md"


def _readme_watches() -> str:
    """The ```toml block of the watches section (the one declaring ``id = "disk"``)."""
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)
    (block,) = [b for b in blocks if 'id = "disk"' in b]
    return block


def _disk(text: str) -> CommandWatch:
    watch = parse_intents(text, Path("README.md")).watch("disk")
    assert isinstance(watch, CommandWatch)
    return watch


async def test_the_readme_disk_watch_fires_on_its_condition() -> None:
    watch = _disk(_readme_watches())
    assert watch.fire_on == "condition"
    assert [(p.field, p.op, p.value) for p in watch.condition] == [("output.pct", "gt", 90)]
    result = await run_command(watch, None)
    assert result.error is None, result.error
    pct = json.loads(result.output)["pct"]
    assert isinstance(pct, int) and 0 <= pct <= 100
    assert result.fire == (pct > 90)
    # The same command against a threshold it is over, and one it can never reach.
    over = watch.model_copy(update={"condition": [Predicate(field="output.pct", op="gt",
                                                            value=pct - 1)]})
    fired = await run_command(over, None)
    assert fired.fire and fired.reason == "every condition holds"
    never = watch.model_copy(update={"condition": [Predicate(field="output.pct", op="gt",
                                                             value=100)]})
    assert not (await run_command(never, None)).fire


def test_the_readme_watch_add_line_declares_the_same_watch(tmp_path: Path) -> None:
    text = README.read_text()
    start = text.index("mailslot watch add disk ")
    line = text[start:text.index("\n", text.index("--argv", start))].replace("\\\n", " ")
    argv = shlex.split(line)[1:]  # without "mailslot"
    result = mailslot(tmp_path, *argv)
    assert result.returncode == 0, result.stderr
    added = load_intents(tmp_path / "config" / "intents.toml").watch("disk")
    documented = _disk(_readme_watches())
    assert isinstance(added, CommandWatch)
    assert (added.argv, added.fire_on, added.condition) == (
        documented.argv, documented.fire_on, documented.condition)
