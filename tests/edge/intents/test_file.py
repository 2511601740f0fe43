"""``edge.intents.file`` and its companions ``edge.intents.edit`` and ``edge.intents.reload``:
real files on disk, real inotify for the watcher."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

import pytest

from edge.errors import DuplicateIntent, IntentFileError
from edge.intents.declarations import Declarations
from edge.intents.edit import (
    HEADER,
    add_intent,
    format_duration,
    remove_intent,
    render_intent,
    set_paused,
)
from edge.intents.file import load_intents, parse_intents
from edge.intents.model import (
    ActiveHours,
    Intent,
    IntentSet,
    Judge,
    Match,
    Policy,
    Settings,
)
from edge.intents.reload import IntentWatcher
from shared.match import Predicate

GOOD = """\
[settings]
timezone = "Europe/Berlin"
wakes_per_day = 40
tokens_per_day = 200000

[[intent]]
id = "ci-failures"
description = "CI failed on main"
critical = false
grant = ["repo:read", "ci:rerun"]
route = { kind = "record" }
[intent.match]
type = ["ci.failed", "ci.error*"]
source_kind = "producer"
priority = ["now", "next"]
all = [ { field = "payload.branch", op = "eq", value = "main" } ]
[intent.judge]
command = ["python3", "judge.py"]
timeout = "10s"
on_failure = "skip"
[intent.policy]
cooldown = "30m"
max_reminders = 3
suppress_when_active = true
coalesce = "5m"
dedupe = "1h"
active_hours = { start = "08:00", end = "22:00", timezone = "Europe/Berlin" }
"""

CI = Intent(
    id="ci-failures",
    description="CI failed on main",
    grant=["repo:read", "ci:rerun"],
    match=Match(
        type=["ci.failed", "ci.error*"],
        source_kind=["producer"],
        priority=["now", "next"],
        all=[Predicate(field="payload.branch", op="eq", value="main")],
    ),
    judge=Judge(command=["python3", "judge.py"], timeout=10, on_failure="skip"),
    policy=Policy(
        cooldown=1800,
        max_reminders=3,
        suppress_when_active=True,
        coalesce=300,
        dedupe=3600,
        active_hours=ActiveHours(start="08:00", end="22:00", timezone="Europe/Berlin"),
    ),
)

#: Three intents with comments, for locating errors in the third and for editing.
THREE = """\
# my intents (file header)

[settings]
timezone = "UTC"  # where I live

# deploys: always
[[intent]]
id = "deploys"
type_note = 1
[intent.match]
type = "deploy.*"

# reviews, during the day
[[intent]]
id = "reviews"
paused = true  # on holiday
[intent.match]
type = ["review.requested"]
any = [
    { field = "payload.repo", op = "glob", value = "me/*" },
    { field = "payload.urgent", op = "eq", value = true },
]

# nightly builds
[[intent]]
id = "nightly"
[intent.policy]
cooldown = "1h"  # at most hourly
active_hours = { start = "08:00", end = "22:00", timezone = "Europe/Berlin" }
"""


CLEAN = THREE.replace("type_note = 1\n", "")


def three(old: str, new: str) -> str:
    """``CLEAN`` with one change."""
    assert old in CLEAN
    return CLEAN.replace(old, new)


def test_parse_the_documented_example() -> None:
    parsed = parse_intents(GOOD, Path("intents.toml"))
    assert parsed == Declarations(
        settings=Settings(timezone="Europe/Berlin", wakes_per_day=40, tokens_per_day=200000),
        intents=[CI],
    )


def test_missing_file_is_an_empty_set(tmp_path: Path) -> None:
    assert load_intents(tmp_path / "intents.toml") == Declarations()


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        pytest.param(
            GOOD.replace('dedupe = "1h"', "dedupe = "), 26, "not valid TOML: Invalid value",
            id="syntax",
        ),
        pytest.param(
            "[settings\n", 1, "not valid TOML: Expected ']' at the end of a table declaration",
            id="syntax-header",
        ),
        pytest.param(
            THREE, 9, "intent 'deploys': type_note: unknown field", id="unknown-field-in-intent"
        ),
        pytest.param(
            three('cooldown = "1h"', 'cooldwn = "1h"'), 27,
            "intent 'nightly': policy.cooldwn: unknown field (did you mean 'cooldown'?)",
            id="unknown-field",
        ),
        pytest.param(
            three("value = true },\n", 'value = true },\n    { field = "x", op = "regex", value = "(a" },\n'),
            21,
            "intent 'reviews': match.any[2]: bad regular expression '(a': "
            "missing ), unterminated subpattern at position 0",
            id="bad-regex",
        ),
        pytest.param(
            three('timezone = "Europe/Berlin"', 'timezone = "Mars/Base"'), 28,
            "intent 'nightly': policy.active_hours.timezone: unknown time zone 'Mars/Base' "
            "(use an IANA name like 'Europe/Berlin')",
            id="unknown-time-zone",
        ),
        pytest.param(
            three('id = "nightly"', 'id = "deploys"'), 25,
            "intent 'deploys': id: duplicate intent id 'deploys' (first at line 8)",
            id="duplicate-id",
        ),
        pytest.param(
            three('cooldown = "1h"', 'cooldown = "an hour"'), 27,
            "intent 'nightly': policy.cooldown: 'an hour' is not a duration "
            "(e.g. 90, '90s', '15m', '2h', '1d')",
            id="bad-duration",
        ),
        pytest.param(
            three("paused = true  # on holiday", 'paused = "maybe"'), 15,
            "intent 'reviews': paused: Input should be a valid boolean",
            id="wrong-type",
        ),
        pytest.param(
            three('timezone = "UTC"', "timezone = 1"), 4,
            "settings.timezone: Input should be a valid string",
            id="wrong-type-settings",
        ),
        pytest.param(
            three("[intent.policy]", "[intent.judge]\ntimeout = 3\n[intent.policy]"), 26,
            "intent 'nightly': judge.command: Field required",
            id="missing-field-points-at-its-table",
        ),
        pytest.param(
            three('[[intent]]\nid = "nightly"', '[[intents]]\nid = "nightly"'), 24,
            "unknown top-level key 'intents': only [settings], [[intent]] and [[watch]] "
            "(did you mean 'intent'?)",
            id="unknown-top-level",
        ),
        pytest.param(
            three('id = "nightly"', 'id = "Night Ly"'), 25,
            "intent 'Night Ly': id: intent id 'Night Ly' is not allowed",
            id="bad-id",
        ),
        pytest.param(
            three('id = "deploys"', 'id = "deploys"\npolicy.cooldown = "never"'), 9,
            "intent 'deploys': policy.cooldown: 'never' is not a duration",
            id="dotted-key",
        ),
        pytest.param(
            three('id = "reviews"', 'id = "reviews"\ndescription = """\n[[intent]]\n# no\n"""')
            .replace('"payload.urgent"', '"payload urgent"'),
            24,
            "intent 'reviews': match.any[1].field: String should match pattern",
            id="after-a-multi-line-string",
        ),
        pytest.param(
            three(
                'type = "deploy.*"',
                'type = "deploy.*"\nall = [{ field = "x", value = 1979-05-27 07:32:00 }]\n'
                '"session" = [1]',
            ),
            12,
            "intent 'deploys': match.session[0]: Input should be a valid string",
            id="quoted-key-after-a-date",
        ),
        pytest.param(
            three('id = "nightly"', "id = 7"), 25,
            "intent #3: id: Input should be a valid string",
            id="id-not-a-string",
        ),
    ],
)
def test_bad_files_name_line_and_field(text: str, line: int, reason: str) -> None:
    path = Path("/etc/mailslot/intents.toml")
    with pytest.raises(IntentFileError) as caught:
        parse_intents(text, path)
    error = caught.value
    assert (error.path, error.line) == (path, line), error
    assert error.reason.startswith(reason), error.reason
    assert str(error) == f"{path}:{line}: {error.reason}"
    assert error.code == "intent_file_error"


def test_first_problem_by_line_and_a_count_of_the_rest() -> None:
    text = three('timezone = "UTC"', 'timezone = "Nowhere/Land"').replace(
        'cooldown = "1h"', 'cooldown = "soon"'
    )
    with pytest.raises(IntentFileError) as caught:
        parse_intents(text, Path("intents.toml"))
    assert caught.value.line == 4
    assert caught.value.reason.startswith("settings.timezone: unknown time zone 'Nowhere/Land'")
    assert caught.value.reason.endswith("(and 1 more problem)")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "intents.toml"
    path.write_bytes(b'[settings]\ntimezone = "\xff"\n')
    with pytest.raises(IntentFileError) as caught:
        load_intents(path)
    assert (caught.value.line, caught.value.reason) == (2, "not UTF-8 text")


def test_render_round_trips_every_field() -> None:
    intent = CI.model_copy(
        update={
            "critical": True,
            "paused": True,
            "match": CI.match.model_copy(
                update={"any": [Predicate(field="payload.n", op="gt", value=2.5),
                                Predicate(field="payload.tags", op="in", value=["a", {"b": 1}]),
                                Predicate(field="payload.x", op="absent")]}
            ),
            "judge": Judge(command=["j"], timeout=0.25, on_failure="wake", cache=90061),
        }
    )
    text = render_intent(intent)
    assert 'timeout = "250ms"' in text and 'cooldown = "30m"' in text
    assert 'op = "eq"' in text  # predicates always say their op
    assert parse_intents(text, Path("x")).intents == [intent]
    assert [format_duration(s) for s in (0, 1.5, 86400, 7200, 90, 0.001)] == [
        "0s", "1500ms", "1d", "2h", "90s", "1ms"
    ]


# -- editing ----------------------------------------------------------------------------


def intents_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config" / "intents.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_add_appends_and_keeps_everything_else(tmp_path: Path) -> None:
    text = CLEAN
    path = intents_file(tmp_path, text)
    add_intent(path, CI)
    new = path.read_text()
    assert new.startswith(text.rstrip() + "\n\n[[intent]]\nid = \"ci-failures\"\n")
    assert load_intents(path).intents[-1] == CI
    assert [i.id for i in load_intents(path).intents] == ["deploys", "reviews", "nightly", "ci-failures"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["intents.toml", "intents.toml.lock"]


def test_add_creates_the_file_with_a_header(tmp_path: Path) -> None:
    path = tmp_path / "config" / "intents.toml"
    add_intent(path, Intent(id="first"))
    assert path.read_text() == HEADER + '\n[[intent]]\nid = "first"\n'
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_add_refuses_a_duplicate_and_writes_nothing(tmp_path: Path) -> None:
    text = CLEAN
    path = intents_file(tmp_path, text)
    with pytest.raises(DuplicateIntent) as caught:
        add_intent(path, Intent(id="reviews"))
    assert caught.value.code == "duplicate_intent"
    assert path.read_text() == text


def test_edits_refuse_a_broken_file(tmp_path: Path) -> None:
    text = three('cooldown = "1h"', 'cooldown = "never"')
    path = intents_file(tmp_path, text)
    for edit in (
        lambda: add_intent(path, Intent(id="new")),
        lambda: remove_intent(path, "deploys"),
        lambda: set_paused(path, "deploys", True),
    ):
        with pytest.raises(IntentFileError) as caught:
            edit()
        assert caught.value.line == 27
    assert path.read_text() == text


def test_remove_cuts_the_block_and_its_comment_only(tmp_path: Path) -> None:
    path = intents_file(tmp_path, CLEAN)
    assert remove_intent(path, "reviews") is True
    assert path.read_text() == CLEAN.replace(
        THREE[THREE.index("# reviews") : THREE.index("# nightly")], ""
    )
    assert remove_intent(path, "reviews") is False
    assert remove_intent(path, "deploys") is True
    assert remove_intent(path, "nightly") is True
    assert path.read_text() == '# my intents (file header)\n\n[settings]\ntimezone = "UTC"  # where I live\n'
    assert load_intents(path) == Declarations()


def test_remove_is_not_fooled_by_strings(tmp_path: Path) -> None:
    keep = '# file header, right above\n[[intent]]\nid = "a"\ndescription = """\n[[intent]]\n# x\n"""\n'
    gone = '[[intent]]\nid = "b"\ndescription = \'\'\'\n[intent.policy]\n\'\'\'\n[intent.policy]\ncooldown = 1\n'
    path = intents_file(tmp_path, keep + gone)
    assert remove_intent(path, "b") is True
    assert path.read_text() == keep
    assert remove_intent(path, "a") is True
    assert path.read_text() == "# file header, right above\n"


def test_remove_from_an_inline_array(tmp_path: Path) -> None:
    path = intents_file(tmp_path, '# mine\nintent = [ { id = "a" }, { id = "b" } ]  # two\n')
    assert remove_intent(path, "a") is True
    assert [i.id for i in load_intents(path).intents] == ["b"]
    assert path.read_text().startswith("# mine\n")


def test_pause_and_resume_keep_comments(tmp_path: Path) -> None:
    path = intents_file(tmp_path, CLEAN)
    assert set_paused(path, "nightly", True) is True
    assert set_paused(path, "reviews", False) is True
    text = path.read_text()
    assert "paused = false  # on holiday" in text
    assert text.count("#") == THREE.count("#")
    paused = {i.id: i.paused for i in load_intents(path).intents}
    assert paused == {"deploys": False, "reviews": False, "nightly": True}
    assert set_paused(path, "nobody", True) is False


def test_concurrent_edits_do_not_lose_updates(tmp_path: Path) -> None:
    path = tmp_path / "config" / "intents.toml"
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            add_intent(path, Intent(id=f"i{n}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(i.id for i in load_intents(path).intents) == sorted(f"i{n}" for n in range(12))


# -- hot reload ---------------------------------------------------------------------------


def replace(path: Path, text: str) -> None:
    """Write the way editors and ``mailslot intent`` do: a new file renamed over."""
    tmp = path.with_name(".edit.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Recorder:
    def __init__(self) -> None:
        self.loads: asyncio.Queue[IntentSet] = asyncio.Queue()
        self.errors: asyncio.Queue[IntentFileError] = asyncio.Queue()

    async def load(self) -> IntentSet:
        return await asyncio.wait_for(self.loads.get(), 10)

    async def error(self) -> IntentFileError:
        return await asyncio.wait_for(self.errors.get(), 10)


async def test_watcher_reloads_good_files_and_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = intents_file(tmp_path, GOOD)
    seen = Recorder()
    watcher = IntentWatcher(path, seen.loads.put_nowait, seen.errors.put_nowait)
    assert seen.loads.get_nowait() == watcher.current == Declarations.model_validate(
        parse_intents(GOOD, path).model_dump()
    )
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.ready.wait(), 10)

    replace(path, CLEAN)
    loaded = await seen.load()
    assert [i.id for i in loaded.intents] == ["deploys", "reviews", "nightly"]
    assert watcher.current == loaded

    replace(path, three('cooldown = "1h"', 'cooldown = "later"'))
    error = await seen.error()
    assert error.line == 27 and "policy.cooldown" in error.reason
    assert watcher.current == loaded and watcher.error == error

    path.write_text(GOOD)  # in place, as some editors do
    assert await seen.load() == parse_intents(GOOD, path)
    assert watcher.error is None

    path.unlink()
    assert await seen.load() == Declarations()

    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen.loads.empty() and seen.errors.empty()


async def test_watcher_starts_empty_on_a_bad_file_and_recovers(tmp_path: Path) -> None:
    path = intents_file(tmp_path, "[[intent]]\nid = 3\n")
    seen = Recorder()
    watcher = IntentWatcher(path, seen.loads.put_nowait, seen.errors.put_nowait)
    assert seen.errors.get_nowait().line == 2
    assert watcher.current == Declarations() and watcher.error is not None
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.ready.wait(), 10)
    assert seen.errors.empty()  # the same error is not reported twice

    add_intent(path.with_name("other.toml"), Intent(id="elsewhere"))  # another file: ignored
    replace(path, '[[intent]]\nid = "fixed"\n')
    assert [i.id for i in (await seen.load()).intents] == ["fixed"]
    stop.set()
    await asyncio.wait_for(task, 10)
    assert seen.loads.empty()


async def test_cancelling_the_watcher_leaves_the_callers_event_alone(tmp_path: Path) -> None:
    path = tmp_path / "config" / "intents.toml"  # folder and file do not exist yet
    seen = Recorder()
    watcher = IntentWatcher(path, seen.loads.put_nowait, seen.errors.put_nowait)
    assert seen.loads.get_nowait() == Declarations()
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.ready.wait(), 10)
    add_intent(path, Intent(id="created"))
    assert [i.id for i in (await seen.load()).intents] == ["created"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not stop.is_set()
