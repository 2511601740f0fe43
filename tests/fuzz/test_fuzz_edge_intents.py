"""Property: whatever ``intents.toml`` holds — any bytes, TOML-ish lines, or a well-formed
TOML document of ``[[intent]]``, ``[[watch]]``, ``[settings]`` and ``[approvals]`` tables
with any keys and values (``nan``, ``inf``, dates, huge integers, deep arrays…) —
``load_intents`` gives a valid set or refuses with ``IntentFileError`` (code
``intent_file_error``, a reason, and a line that exists in the file or ``None``), never
another exception, and leaves the file as it was. A set it accepts is one the engine can
run: every duration is finite and not negative. Real files; the examples' count comes
from the hypothesis profile in ``tests/fuzz/conftest.py``."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import IntentFileError
from edge.intents.declarations import Declarations
from edge.intents.file import load_intents

#: Keys the models know, so that generated tables get past "unknown field" to the values.
KEYS = [
    "id", "description", "match", "judge", "policy", "route", "grant", "grant_ttl",
    "critical", "paused", "type", "source_kind", "source_name", "session", "priority", "all",
    "any", "field", "op", "value", "command", "timeout", "on_failure", "cache", "dedupe",
    "suppress_when_active", "active_for", "max_reminders", "cooldown", "condition",
    "active_hours", "start", "end", "timezone", "days", "coalesce", "kind", "argv", "cwd",
    "env", "url", "secret_env", "bearer_env", "max_attempts", "paths", "ignore",
    "default_ignores", "changes", "debounce", "include_content", "content_max", "schedule",
    "cron", "every", "at", "jitter", "catch_up", "fire_on", "exit_codes", "output_max",
    "within", "jitter_pct", "max_idle", "daily_budget", "cache_aware", "level", "read_only",
    "irreversible", "rules", "pattern", "decision", "expires", "promote_after",
    "wakes_per_day", "tokens_per_day",
]
#: Values that are almost right, so validation goes deep.
WORDS = [
    "5m", "1h", "30s", "0", "-1s", "1e400s", "nan", "inf", "10ms", "99999999999d", "0 9 * * *",
    "*/5 * * * *", "61 25 * * *", "UTC", "Europe/Berlin", "Mars/Olympus", "now", "next",
    "later", "file", "command", "timer", "absence", "tick", "exec", "webhook", "mcp",
    "record", "eq", "gt", "in", "glob", "exists", "payload.x", "output.pct", "/tmp",
    "/nonexistent/**/*.py", "~/x", "http://127.0.0.1:1/hook", "ftp://x", "08:00", "25:61",
    "once", "skip", "wake", "allow", "deny", "ask", "deploy:*", "ci.failed", "a" * 300,
    "\u0000", "\ud7ff", "2026-05-01T09:00", "change", "exit_code", "condition",
]

scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS)
    | st.text(max_size=20)
    | st.datetimes()
    | st.dates()
    | st.times()
)
toml_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5),
    max_leaves=16,
)
tables = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), toml_values, max_size=8)
documents = st.fixed_dictionaries({}, optional={
    "intent": st.lists(tables, max_size=3),
    "watch": st.lists(tables, max_size=3),
    "settings": tables,
    "approvals": tables,
    "other": tables,
})

LINES = [
    "[[intent]]", "[[watch]]", "[settings]", "[approvals]", "[intent.match]",
    "[intent.policy]", "[intent.route]", "[watch.schedule]", "[watch.match]",
    "[[intent.match.all]]", "[[approvals.rules]]", 'id = "a"', 'id = "b"', "id = 1",
    'kind = "command"', 'kind = "file"', 'kind = "tick"', 'session = "main"',
    'argv = ["true"]', 'every = "1m"', 'cron = "0 9 * * *"', 'cooldown = "30m"',
    "cooldown = inf", "cooldown = nan", "max_reminders = -1", 'paths = ["/tmp"]',
    'type = "ci.*"', 'field = "payload.x"', 'op = "gt"', "value = 1e400",
    'timezone = "Nowhere/Else"', "x = [[[[[[1]]]]]]", "= 1", '"unterminated', "[", "]]",
    "a.b.c = 1", 'within = "26h"', "level = 3", "",
]
toml_ish = st.lists(st.sampled_from(LINES) | st.text(max_size=30), max_size=25).map("\n".join)


def _load(data: bytes) -> Declarations | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "intents.toml"
        path.write_bytes(data)
        try:
            declarations = load_intents(path)
        except IntentFileError as exc:
            assert exc.code == "intent_file_error"
            assert exc.reason and exc.path == path
            lines = data.count(b"\n") + 1
            assert exc.line is None or 1 <= exc.line <= lines, (exc.line, lines, exc)
            declarations = None
        assert path.read_bytes() == data
        return declarations


def _runnable(declarations: Declarations) -> None:
    """What the engine and the watch runner will compute with: finite durations."""

    def walk(value: Any) -> None:
        if isinstance(value, float):
            assert math.isfinite(value), declarations
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    for item in (*declarations.intents, *declarations.watches):
        walk(item.model_dump())
    walk(declarations.settings.model_dump())


def _dumps(doc: dict[str, Any]) -> str | None:
    """The document as TOML text, or None for one TOML cannot hold (tomlkit refuses)."""
    try:
        return tomlkit.dumps(doc)
    except (ValueError, TypeError, tomlkit.exceptions.TOMLKitError):
        return None


@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    _load(data)


@given(toml_ish)
def test_toml_ish_lines(text: str) -> None:
    result = _load(text.encode("utf-8", "surrogatepass"))
    if result is not None:
        _runnable(result)


@given(documents)
def test_well_formed_documents_of_any_shape(doc: dict[str, Any]) -> None:
    text = _dumps(doc)
    if text is None:
        return
    result = _load(text.encode("utf-8", "surrogatepass"))
    if result is not None:
        _runnable(result)


@given(st.sampled_from(["intent", "watch"]), st.sampled_from(KEYS), toml_values)
def test_a_valid_table_with_one_field_replaced(section: str, key: str, value: Any) -> None:
    base: dict[str, Any] = (
        {"id": "a", "match": {"type": "ci.*"}, "policy": {"cooldown": "30m"}}
        if section == "intent" else
        {"id": "a", "kind": "command", "argv": ["true"], "schedule": {"every": "5m"}}
    )
    text = _dumps({section: [{**base, key: value}]})
    if text is None:
        return
    result = _load(text.encode("utf-8", "surrogatepass"))
    if result is not None:
        _runnable(result)


def test_the_bases_are_valid() -> None:
    """The tables the mutations start from load (so mutating them tests something)."""
    text = tomlkit.dumps({
        "intent": [{"id": "a", "match": {"type": "ci.*"}, "policy": {"cooldown": "30m"}}],
        "watch": [{"id": "a", "kind": "command", "argv": ["true"], "schedule": {"every": "5m"}}],
    })
    loaded = _load(text.encode())
    assert loaded is not None and [i.id for i in loaded.intents] == ["a"]
    assert [w.id for w in loaded.watches] == ["a"]

