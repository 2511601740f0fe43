"""``[[watch]]`` tables in ``intents.toml`` (``edge.intents.file``, ``edge.intents.edit``):
parsing with line-numbered errors, rendering, and edits that keep the user's comments.
Real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.errors import DuplicateWatch, IntentFileError
from edge.intents.declarations import (
    AbsenceWatch,
    CommandWatch,
    Declarations,
    FileWatch,
    Schedule,
    TickWatch,
    TimerWatch,
    Watch,
)
from edge.intents.edit import (
    add_intent,
    add_watch,
    remove_intent,
    remove_watch,
    render_watch,
    set_paused,
    set_watch_paused,
)
from edge.intents.file import load_intents, parse_intents
from edge.intents.model import Intent, Match, Settings
from edge.intents.reload import IntentWatcher
from shared.envelope import Priority
from shared.match import Predicate

#: One watch of every kind, with comments, after an intent.
WATCHES = """\
# my declarations

[settings]
timezone = "Europe/Berlin"

# CI: always
[[intent]]
id = "ci"
[intent.match]
type = "ci.*"

# sources I edit
[[watch]]
id = "src"
kind = "file"
description = "python sources"
paths = ["~/proj/src/**/*.py", "/etc/hosts"]
ignore = ["build", "*.gen.py"]
changes = ["created", "modified"]
debounce = "500ms"  # editors save twice
include_content = true
content_max = 2048

# disk almost full
[[watch]]
id = "disk"
kind = "command"
argv = ["sh", "-c", "df --output=pcent / | tail -1"]
timeout = "10s"
fire_on = "condition"
condition = [{ field = "output.pct", op = "gt", value = 90 }]
cwd = "/tmp"
[watch.schedule]
every = "5m"
jitter = "30s"  # spread the load

[[watch]]
id = "standup"
kind = "timer"
type = "timer.standup"
priority = "now"
session = "main"
schedule = { cron = "0 9 * * 1-5", timezone = "Europe/Berlin", catch_up = "skip" }

# nightly backup must report
[[watch]]
id = "backup-missing"
kind = "absence"
within = "26h"
[watch.match]
type = "backup.done"
all = [{ field = "payload.ok", op = "eq", value = true }]

[[watch]]
id = "tick-main"
kind = "tick"
session = "main"
every = "30m"
jitter_pct = 15
max_idle = "4h"
daily_budget = 20
cache_aware = true
paused = true  # on holiday
"""

SRC = FileWatch(
    id="src",
    kind="file",
    description="python sources",
    paths=["~/proj/src/**/*.py", "/etc/hosts"],
    ignore=["build", "*.gen.py"],
    changes=["created", "modified"],
    debounce=0.5,
    include_content=True,
    content_max=2048,
)
DISK = CommandWatch(
    id="disk",
    kind="command",
    argv=["sh", "-c", "df --output=pcent / | tail -1"],
    timeout=10,
    fire_on="condition",
    condition=[Predicate(field="output.pct", op="gt", value=90)],
    cwd="/tmp",
    schedule=Schedule(every=300, jitter=30),
)
STANDUP = TimerWatch(
    id="standup",
    kind="timer",
    type="timer.standup",
    priority=Priority.now,
    session="main",
    schedule=Schedule(cron="0 9 * * 1-5", timezone="Europe/Berlin", catch_up="skip"),
)
BACKUP = AbsenceWatch(
    id="backup-missing",
    kind="absence",
    within=26 * 3600,
    match=Match(type=["backup.done"], all=[Predicate(field="payload.ok", op="eq", value=True)]),
)
TICK = TickWatch(
    id="tick-main",
    kind="tick",
    session="main",
    every=1800,
    jitter_pct=15,
    max_idle=4 * 3600,
    daily_budget=20,
    cache_aware=True,
    paused=True,
)
ALL: list[Watch] = [SRC, DISK, STANDUP, BACKUP, TICK]


def watches(old: str, new: str) -> str:
    """``WATCHES`` with one change."""
    assert old in WATCHES, old
    return WATCHES.replace(old, new, 1)


def test_parse_every_kind_next_to_intents() -> None:
    parsed = parse_intents(WATCHES, Path("intents.toml"))
    assert parsed == Declarations(
        settings=Settings(timezone="Europe/Berlin"),
        intents=[Intent(id="ci", match=Match(type=["ci.*"]))],
        watches=ALL,
    )
    assert parsed.watch("disk") == DISK and parsed.watch("nobody") is None
    assert parsed.get("ci") is not None


def test_a_file_of_watches_only_and_one_inline_array() -> None:
    text = 'watch = [{ id = "t", kind = "timer", schedule = { at = "2026-05-01T09:00" } }]\n'
    parsed = parse_intents(text, Path("x"))
    assert parsed.intents == []
    assert parsed.watches == [TimerWatch(id="t", kind="timer", schedule=Schedule(at="2026-05-01T09:00"))]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param(
            watches('debounce = "500ms"', 'debunce = "500ms"'), 20,
            "watch 'src': debunce: unknown field (did you mean 'debounce'?)",
            id="unknown-field",
        ),
        pytest.param(
            watches('jitter = "30s"', 'jiter = "30s"'), 35,
            "watch 'disk': schedule.jiter: unknown field (did you mean 'jitter'?)",
            id="unknown-field-in-schedule",
        ),
        pytest.param(
            watches('within = "26h"', 'within = "26h"\nmatch_type = 1'), 50,
            "watch 'backup-missing': match_type: unknown field (did you mean 'match'?)",
            id="unknown-field-of-this-kind",
        ),
        pytest.param(
            watches('type = "backup.done"', 'tipe = "backup.done"'), 51,
            "watch 'backup-missing': match.tipe: unknown field (did you mean 'type'?)",
            id="unknown-field-in-match",
        ),
        pytest.param(
            watches('cache_aware = true', 'cache_aware = true\npaths = ["/x"]'), 63,
            "watch 'tick-main': paths: unknown field",
            id="field-of-another-kind",
        ),
        pytest.param(
            watches("0 9 * * 1-5", "0 9 * *"), 43,
            "watch 'standup': schedule.cron: bad cron expression '0 9 * *': Wrong number of fields",
            id="bad-cron",
        ),
        pytest.param(
            watches('"/etc/hosts"', '"/etc/[hosts"'), 17,
            "watch 'src': paths[1]: bad glob '/etc/[hosts': unbalanced [ ]",
            id="bad-glob",
        ),
        pytest.param(
            watches('kind = "timer"', 'kind = "timr"'), 39,
            "watch 'standup': kind: unknown kind 'timr' (did you mean 'timer'?): "
            "one of file, command, timer, absence, tick",
            id="unknown-kind",
        ),
        pytest.param(
            watches('kind = "timer"\n', ""), 37,
            "watch 'standup': kind: Field required (one of file, command, timer, absence, tick)",
            id="missing-kind-points-at-the-table",
        ),
        pytest.param(
            watches('every = "5m"', "every = -300"), 34,
            "watch 'disk': schedule.every: a duration cannot be negative",
            id="negative-interval",
        ),
        pytest.param(
            watches('every = "30m"', 'every = "-30m"'), 58,
            "watch 'tick-main': every: '-30m' is not a duration",
            id="negative-interval-text",
        ),
        pytest.param(
            watches('every = "30m"', "every = 0"), 58,
            "watch 'tick-main': every: Input should be greater than 0",
            id="zero-interval",
        ),
        pytest.param(
            watches('session = "main"\nevery', "every"), 54,
            "watch 'tick-main': session: Field required",
            id="missing-required-field",
        ),
        pytest.param(
            watches('[watch.schedule]\nevery = "5m"\njitter = "30s"  # spread the load\n', ""), 25,
            "watch 'disk': schedule: Field required",
            id="missing-table",
        ),
        pytest.param(
            watches('every = "5m"', 'every = "5m"\ncron = "* * * * *"'), 33,
            "watch 'disk': schedule: give exactly one of cron, every or at",
            id="two-schedules",
        ),
        pytest.param(
            watches('condition = [{ field = "output.pct", op = "gt", value = 90 }]\n', ""), 25,
            "watch 'disk': fire_on = 'condition' needs a condition",
            id="condition-missing",
        ),
        pytest.param(
            watches('id = "tick-main"', 'id = "disk"'), 55,
            "watch 'disk': id: duplicate watch id 'disk' (first at line 26)",
            id="duplicate-id-points-at-the-second",
        ),
        pytest.param(
            watches('timezone = "Europe/Berlin", catch', 'timezone = "Mars/Base", catch'), 43,
            "watch 'standup': schedule.timezone: unknown time zone 'Mars/Base' "
            "(use an IANA name like 'Europe/Berlin')",
            id="bad-time-zone",
        ),
        pytest.param(
            watches('paths = ["~/proj', 'paths = [1, "~/proj'), 17,
            "watch 'src': paths[0]: Input should be a valid string",
            id="wrong-type",
        ),
        pytest.param(
            watches('id = "standup"', 'id = "Stand Up"'), 38,
            "watch 'Stand Up': id: watch id 'Stand Up' is not allowed",
            id="bad-id",
        ),
        pytest.param(
            watches('id = "standup"', "id = 5"), 38,
            "watch #3: id: Input should be a valid string",
            id="id-not-a-string",
        ),
        pytest.param(
            watches("[[watch]]\nid = \"standup\"", "[[watches]]\nid = \"standup\""), 37,
            "unknown top-level key 'watches': only [settings], [[intent]] and [[watch]] "
            "(did you mean 'watch'?)",
            id="unknown-top-level",
        ),
        pytest.param(
            "[[watch]]\nkind = 3\n", 2,
            "watch #1: kind: unknown kind '3': one of file, command, timer, absence, tick",
            id="kind-not-a-string",
        ),
    ],
)
def test_bad_watches_name_line_and_field(text: str, line: int, reason: str) -> None:
    path = Path("/etc/mailslot/intents.toml")
    with pytest.raises(IntentFileError) as caught:
        parse_intents(text, path)
    error = caught.value
    assert (error.path, error.line) == (path, line), error
    assert error.reason.startswith(reason), error.reason
    assert str(error) == f"{path}:{line}: {error.reason}"


def test_an_intent_and_a_watch_may_share_an_id() -> None:
    text = WATCHES.replace('id = "ci"', 'id = "disk"')
    assert [w.id for w in parse_intents(text, Path("x")).watches] == [w.id for w in ALL]


def test_render_round_trips_every_kind() -> None:
    for watch in ALL:
        text = render_watch(watch)
        assert text.startswith(f'[[watch]]\nid = "{watch.id}"\nkind = "{watch.kind}"\n'), text
        assert parse_intents(text, Path("x")).watches == [watch]
    disk = render_watch(DISK)
    assert '[watch.schedule]\nevery = "5m"\njitter = "30s"\n' in disk
    assert 'timeout = "10s"' in disk and 'op = "gt"' in disk
    assert '[watch.match]\ntype = ["backup.done"]\n' in render_watch(BACKUP)
    minimal = TimerWatch(id="t", kind="timer", schedule=Schedule(every=0.25))
    assert render_watch(minimal) == '[[watch]]\nid = "t"\nkind = "timer"\n\n[watch.schedule]\nevery = "250ms"\n'


# -- editing ----------------------------------------------------------------------------


def intents_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "intents.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_add_appends_a_watch_and_keeps_everything_else(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES)
    new = TimerWatch(id="later", kind="timer", schedule=Schedule(at="2026-05-01T09:00+02:00"))
    add_watch(path, new)
    text = path.read_text()
    assert text.startswith(WATCHES.rstrip() + '\n\n[[watch]]\nid = "later"\nkind = "timer"\n')
    assert load_intents(path).watches == [*ALL, new]
    assert load_intents(path).intents == [Intent(id="ci", match=Match(type=["ci.*"]))]


def test_add_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config" / "intents.toml"
    add_watch(path, TICK)
    assert load_intents(path) == Declarations(watches=[TICK])


def test_add_refuses_a_duplicate_watch_and_writes_nothing(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES)
    with pytest.raises(DuplicateWatch) as caught:
        add_watch(path, SRC.model_copy(update={"paths": ["/elsewhere"]}))
    assert caught.value.code == "duplicate_watch"
    assert caught.value.message == f"watch 'src' already exists in {path}"
    add_watch(path, TimerWatch(id="ci", kind="timer", schedule=Schedule(every=60)))  # an intent's id
    assert path.read_text().startswith(WATCHES)


def test_edits_refuse_a_file_with_a_broken_watch(tmp_path: Path) -> None:
    text = watches("0 9 * * 1-5", "every day")
    path = intents_file(tmp_path, text)
    for edit in (
        lambda: add_watch(path, TimerWatch(id="new", kind="timer", schedule=Schedule(every=60))),
        lambda: remove_watch(path, "src"),
        lambda: set_watch_paused(path, "src", True),
        lambda: add_intent(path, Intent(id="new")),
    ):
        with pytest.raises(IntentFileError) as caught:
            edit()
        assert caught.value.line == 43
    assert path.read_text() == text


def test_remove_cuts_the_watch_block_and_its_comment_only(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES)
    assert remove_watch(path, "disk") is True
    block = WATCHES[WATCHES.index("# disk almost full") : WATCHES.index("[[watch]]\nid = \"standup\"")]
    assert path.read_text() == WATCHES.replace(block, "")
    assert remove_watch(path, "disk") is False
    for watch_id in ("src", "standup", "backup-missing", "tick-main"):
        assert remove_watch(path, watch_id) is True
    assert path.read_text() == WATCHES[: WATCHES.index("# sources I edit")].rstrip("\n") + "\n"
    assert load_intents(path).watches == []
    assert [i.id for i in load_intents(path).intents] == ["ci"]


def test_removing_an_intent_leaves_a_watch_of_the_same_id(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES.replace('id = "ci"', 'id = "disk"'))
    assert remove_intent(path, "disk") is True
    assert load_intents(path).intents == []
    assert load_intents(path).watches == ALL
    assert remove_intent(path, "src") is False  # a watch, not an intent


def test_remove_a_watch_from_an_inline_array(tmp_path: Path) -> None:
    text = (
        '# mine\nwatch = [\n  { id = "a", kind = "tick", session = "s", every = "1h" },\n'
        '  { id = "b", kind = "tick", session = "s", every = "2h" },\n]  # two\n'
    )
    path = intents_file(tmp_path, text)
    assert remove_watch(path, "a") is True
    assert [w.id for w in load_intents(path).watches] == ["b"]
    assert path.read_text().startswith("# mine\n")


def test_pause_and_resume_keep_comments(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES)
    assert set_watch_paused(path, "disk", True) is True  # it has a [watch.schedule] table
    assert set_watch_paused(path, "tick-main", False) is True
    assert set_watch_paused(path, "standup", False) is True  # already: nothing to write
    text = path.read_text()
    assert "paused = false  # on holiday" in text
    assert text.count("#") == WATCHES.count("#")
    # the new key goes last in the [[watch]] table (tomlkit sets a blank line before the next)
    assert text == watches('cwd = "/tmp"\n', 'cwd = "/tmp"\npaused = true\n\n').replace(
        "paused = true  # on holiday", "paused = false  # on holiday"
    )
    assert {w.id: w.paused for w in load_intents(path).watches} == {
        "src": False, "disk": True, "standup": False, "backup-missing": False, "tick-main": False,
    }
    assert set_watch_paused(path, "nobody", True) is False
    assert set_watch_paused(path, "ci", True) is False  # an intent, not a watch
    assert set_paused(path, "ci", True) is True
    assert load_intents(path).watches[1] == DISK.model_copy(update={"paused": True})


async def test_the_watcher_loads_watches(tmp_path: Path) -> None:
    path = intents_file(tmp_path, WATCHES)
    loads: asyncio.Queue[Declarations] = asyncio.Queue()
    errors: asyncio.Queue[IntentFileError] = asyncio.Queue()
    watcher = IntentWatcher(path, loads.put_nowait, errors.put_nowait)
    assert loads.get_nowait().watches == ALL == watcher.current.watches
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.ready.wait(), 10)
    assert set_watch_paused(path, "src", True)
    loaded = await asyncio.wait_for(loads.get(), 10)
    assert loaded.watch("src") == SRC.model_copy(update={"paused": True})
    path.write_text(watches("kind = \"tick\"", "kind = \"tock\""))
    assert (await asyncio.wait_for(errors.get(), 10)).line == 56
    assert watcher.current == loaded
    stop.set()
    await asyncio.wait_for(task, 10)
