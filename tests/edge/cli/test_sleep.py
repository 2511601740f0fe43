"""``mailslot sleep``'s text answer says the whole moment it ends (a sleep may end on
another day) and says so when the duration asked for was clamped."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests_support import mailslot


def test_the_answer_names_the_day_and_the_clamp(enrolled_home: Path) -> None:
    done = mailslot(enrolled_home, "sleep", "--for", "2d", "--reason", "weekend")
    assert done.returncode == 0, done.stderr
    assert re.search(r"sleeping until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", done.stdout), done.stdout
    assert "(86400s) (clamped to 60 s .. 24 h)" in done.stdout
    plain = mailslot(enrolled_home, "sleep", "--for", "20m", "--reason", "CI", "--json")
    assert json.loads(plain.stdout)["clamped"] is False
    text = mailslot(enrolled_home, "sleep", "--for", "20m", "--reason", "CI")
    assert "clamped" not in text.stdout and "(1200s)" in text.stdout
