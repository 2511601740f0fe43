"""The approvals desk (``edge.approvals.desk``) on real files — a real SQLite engine
database, a real activity log, a real inbox signed with a real edge key, real inotify
for ``wait`` — and the dial's settings read from ``intents.toml``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.approvals.desk import ApprovalDesk, InboxNotifier
from edge.approvals.dial import HeldPermissions
from edge.config import EdgePaths
from edge.errors import (
    AlreadyDecided,
    IntentFileError,
    InvalidAction,
    InvalidRequest,
    UnknownApproval,
    WiderAction,
)
from edge.intents.approvalrules import ApprovalSettings, Rule
from edge.intents.edit import promote
from edge.intents.file import load_intents, parse_intents
from edge.store.activity import ActivityLog, Entry
from edge.store.approvals import ApprovalStore
from edge.store.inbox import Inbox, InboxItem

T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
RULES = [
    Rule(pattern="deploy:prod", decision="deny"),
    Rule(pattern="deploy:*", decision="allow"),
    Rule(pattern="repo:*", decision="ask"),
    Rule(pattern="ci:*", decision="allow"),
]


# -- the desk on real files ---------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def paths(enrolled_home: Path) -> EdgePaths:
    return EdgePaths.resolve({"MAILSLOT_HOME": str(enrolled_home)})


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


class Desks:
    """Opens desks on one edge home (one per "command", as the CLI does)."""

    def __init__(self, paths: EdgePaths, clock: Any) -> None:
        self.paths = paths
        self.clock = clock
        self.settings = ApprovalSettings()
        self._open: list[Any] = []

    def __call__(self, **settings: Any) -> ApprovalDesk:
        store = ApprovalStore.open(self.paths.engine_file)
        log = ActivityLog.open(self.paths.activity_file, self.paths.activity_key_file)
        notifier = InboxNotifier(self.paths)
        self._open += [store, log, notifier]
        chosen = self.settings.model_copy(update=settings) if settings else self.settings
        return ApprovalDesk(store, log, notifier, chosen, clock=self.clock)

    def close(self) -> None:
        for thing in self._open:
            thing.close()

    def log(self, *steps: str) -> list[Entry]:
        with ActivityLog.open(self.paths.activity_file, self.paths.activity_key_file) as log:
            entries = list(log.entries())
        return [e for e in entries if not steps or e.step in steps]

    def inbox(self, *, notices: bool = False) -> list[InboxItem]:
        """Decisions raised into the inbox (with ``notices``: the pending notices too)."""
        with Inbox.open(self.paths.inbox_file) as inbox:
            return [i for i in sorted(inbox.list(state=None, limit=1000), key=lambda i: i.seq)
                    if i.source_kind == "approval"
                    and (notices or i.type != "approval.pending")]


@pytest.fixture
def desks(paths: EdgePaths, clock: Clock) -> Iterator[Desks]:
    made = Desks(paths, clock)
    yield made
    made.close()


def test_automatic_answers_are_stored_and_logged_but_raise_nothing(desks: Desks) -> None:
    desk = desks(level=2, rules=RULES)
    allowed = desk.request("deploy:staging", "ship it", session="api", intent="ci")
    denied = desk.request("deploy:prod", "ship it to prod", session="api")
    assert (allowed.status, denied.status) == ("allowed", "denied")
    assert allowed.decided == T0 and "rule 'deploy:*' says allow" in allowed.reason
    assert [a.id for a in desk.requests(everything=True)] == [allowed.id, denied.id]
    assert desk.requests() == []
    decided = desks.log("approval_decided")
    assert [(e.detail["id"], e.detail["status"], e.detail["by"], e.detail["rule"]) for e in decided] \
        == [(allowed.id, "allowed", "rule", 1), (denied.id, "denied", "rule", 0)]
    requested = desks.log("approval_requested")[0]
    assert requested.intent == "ci" and requested.detail["summary"] == "ship it"
    assert requested.detail["decision"] == "allow" and requested.detail["level"] == 2
    assert desks.inbox() == []


def test_the_envelope_is_named_in_the_log(desks: Desks) -> None:
    held = HeldPermissions(("repo:*",), T0 + timedelta(minutes=5), "ci", "/perm/delivery-3.json")
    approval = desks(level=0).request("repo:write", "push a fix", held=held)
    assert approval.status == "allowed"
    entry = desks.log("approval_requested")[0]
    assert entry.detail["by"] == "envelope" and entry.detail["envelope"] == "/perm/delivery-3.json"


def test_a_pending_request_raises_a_notice_and_an_automatic_answer_does_not(
    desks: Desks, clock: Clock
) -> None:
    desk = desks()
    assert desk.request("repo:read", "look around").status == "allowed"
    assert desks.inbox(notices=True) == []  # decided by the dial: nobody to tell
    asked = desk.request("repo:write", "push the fix", session="api")
    [notice] = desks.inbox(notices=True)
    assert (notice.type, notice.session, notice.priority) == ("approval.pending", "api", "now")
    assert notice.payload["id"] == asked.id and notice.payload["action"] == "repo:write"
    assert desks.inbox() == []  # no decision yet


@pytest.mark.parametrize("approve", [True, False])
def test_a_user_decision_is_logged_and_raised_into_the_inbox(
    desks: Desks, paths: EdgePaths, clock: Clock, approve: bool
) -> None:
    desk = desks()
    asked = desk.request("repo:write", "push the fix for #12", session="api", intent="ci")
    assert asked.status == "pending" and asked.decided is None
    assert asked.expires == T0 + timedelta(hours=1)
    assert [a.id for a in desk.requests()] == [asked.id]
    clock.now = T0 + timedelta(minutes=3)
    decide_ = desk.approve if approve else desk.reject
    done = decide_(asked.id, note="  only the one file ")
    status = "approved" if approve else "rejected"
    assert (done.approval.status, done.approval.note) == (status, "only the one file")
    assert done.approval.decided == clock.now
    [item] = desks.inbox()
    assert item.id == done.interrupt
    assert (item.type, item.session, item.priority, item.source_name) == (
        f"approval.{status}", "api", "now", "approvals")
    assert item.payload == {"id": asked.id, "action": "repo:write",
                            "summary": "push the fix for #12", "note": "only the one file"}
    entry = desks.log("approval_decided")[0]
    assert (entry.interrupt, entry.intent, entry.type) == (item.id, "ci", f"approval.{status}")
    assert entry.detail["by"] == "user" and entry.detail["note"] == "only the one file"
    assert paths.poke_file.exists()
    # decided once, by one desk
    with pytest.raises(AlreadyDecided, match=f"already {status}"):
        desks().approve(asked.id)
    with pytest.raises(UnknownApproval):
        desk.reject("01JDQ8Z9X4NOSUCHAPPROVAL00")
    assert desks().get(asked.id).status == status


def test_expiry_applies_when_read_and_is_recorded_once(desks: Desks, clock: Clock) -> None:
    desk = desks(expires=60.0)
    asked = desk.request("repo:write", "push", session="api")
    clock.now = T0 + timedelta(seconds=59)
    assert desk.get(asked.id).status == "pending"
    clock.now = T0 + timedelta(seconds=61)
    assert desks().requests() == []  # another process reads first
    assert desk.get(asked.id).status == "expired"
    assert desk.get(asked.id).decided == T0 + timedelta(seconds=60)
    assert desk.expire() == []
    with pytest.raises(AlreadyDecided, match="already expired"):
        desk.approve(asked.id)
    assert [i.type for i in desks.inbox()] == ["approval.expired"]
    assert (desks.inbox()[0].payload or {}).get("id") == asked.id
    [entry] = desks.log("approval_decided")
    assert entry.detail["by"] == "expiry" and entry.detail["status"] == "expired"


def test_promotion_is_suggested_after_exactly_promote_after_approvals(desks: Desks) -> None:
    desk = desks()

    def approve(action: str = "repo:write") -> Any:
        return desk.approve(desk.request(action, "again").id)

    results = [approve() for _ in range(9)]
    assert [r.streak for r in results] == list(range(1, 10))
    assert not any(r.suggest for r in results)
    approve("other:thing")  # another action does not count, nor break the streak
    tenth = approve()
    assert (tenth.streak, tenth.suggest) == (10, True)
    [suggested] = desks.log("approval_suggested")
    assert suggested.detail == {"id": tenth.approval.id, "action": "repo:write", "streak": 10,
                                "promote": "mailslot approvals promote repo:write"}
    assert approve().suggest is False  # the 11th
    # a rejection resets the count
    desk.reject(desk.request("repo:write", "no").id)
    again = [approve() for _ in range(10)]
    assert [r.suggest for r in again] == [False] * 9 + [True]
    assert again[-1].streak == 10


def test_no_suggestion_once_an_allow_rule_exists(desks: Desks) -> None:
    desk = desks(promote_after=2, rules=[Rule(pattern="repo:write", decision="allow")])
    results = [desk.approve(desk.request("repo:write", "x").id) for _ in range(2)]
    assert [r.suggest for r in results] == [False, False]


def test_edit_changes_a_pending_action_before_deciding(desks: Desks) -> None:
    desk = desks()
    asked = desk.request("deploy:*", "deploy")
    edited, before = desk.edit(asked.id, "deploy:staging")
    assert (edited.action, before, edited.status) == ("deploy:staging", "deploy:*", "pending")
    entry = desks.log("approval_requested")[-1]
    assert entry.detail["edited_from"] == "deploy:*" and entry.detail["action"] == "deploy:staging"
    done = desk.approve(asked.id)
    assert done.approval.action == "deploy:staging"
    assert (desks.inbox()[0].payload or {}).get("action") == "deploy:staging"
    with pytest.raises(AlreadyDecided):
        desk.edit(asked.id, "deploy:prod")
    with pytest.raises(InvalidAction):
        desk.edit(desk.request("x:y", "s").id, "not an action!")
    with pytest.raises(UnknownApproval):
        desk.edit("nope", "x:y")


def test_edit_only_narrows_a_request(desks: Desks) -> None:
    desk = desks()
    asked = desk.request("deploy:staging", "deploy")
    for wider in ("deploy:*", "*:staging", "*", "deploy:prod", "repo:write"):
        with pytest.raises(WiderAction) as refused:
            desk.edit(asked.id, wider)
        assert refused.value.code == "wider_action"
    assert desk.get(asked.id).action == "deploy:staging"  # nothing changed
    assert not [e for e in desks.log("approval_requested") if "edited_from" in e.detail]
    assert desk.edit(asked.id, "deploy:staging")[0].action == "deploy:staging"  # same: fine


def test_bad_requests_are_refused(desks: Desks) -> None:
    desk = desks()
    with pytest.raises(InvalidAction):
        desk.request("deploy prod", "s")
    with pytest.raises(InvalidAction):
        desk.request("x" * 129, "s")
    with pytest.raises(InvalidRequest):
        desk.request("x:y", "   ")
    with pytest.raises(InvalidRequest):
        desk.request("x:y", "s", session="no spaces")
    with pytest.raises(InvalidRequest):
        desk.request("x:y", "s", intent="Not An Id")
    assert desk.requests(everything=True) == []
    assert desks.log() == []


# -- waiting: real inotify ----------------------------------------------------------------


async def test_wait_sees_a_decision_made_by_another_connection(desks: Desks, paths: EdgePaths) -> None:
    desks.clock = lambda: datetime.now(UTC)
    waiter = desks()
    asked = waiter.request("repo:write", "push")
    other = desks()  # opened here: SQLite connections belong to their thread
    timer = threading.Timer(0.3, lambda: other.approve(asked.id, "ok"))
    began = asyncio.get_running_loop().time()
    timer.start()
    try:
        seen = await waiter.wait(asked.id, 10.0, paths.data_dir)
    finally:
        timer.join()
    assert (seen.status, seen.note) == ("approved", "ok")
    assert asyncio.get_running_loop().time() - began < 3.0


async def test_wait_runs_out_pending_or_sees_the_expiry(desks: Desks, paths: EdgePaths) -> None:
    desks.clock = lambda: datetime.now(UTC)
    desk = desks(expires=0.5)
    asked = desk.request("repo:write", "push")
    desk_long = desks()
    longer = desk_long.request("repo:write", "push again")
    assert (await desk_long.wait(longer.id, 0.2, paths.data_dir)).status == "pending"
    assert (await desk.wait(asked.id, 10.0, paths.data_dir)).status == "expired"
    assert [i.type for i in desks.inbox()] == ["approval.expired"]


# -- [approvals] in intents.toml -----------------------------------------------------------

APPROVALS = """\
# my intents
[[intent]]
id = "ci"

# the autonomy dial
[approvals]
level = 2            # rules decide
expires = "15m"
rules = [
  { pattern = "deploy:prod", decision = "deny" },  # never
]
"""


def test_the_dial_is_read_from_intents_toml(tmp_path: Path) -> None:
    settings = parse_intents(APPROVALS, tmp_path / "intents.toml").approvals
    assert settings == ApprovalSettings(
        level=2, expires=900.0, rules=[Rule(pattern="deploy:prod", decision="deny")])
    assert parse_intents("", tmp_path / "i.toml").approvals == ApprovalSettings()


@pytest.mark.parametrize(("text", "line", "reason"), [
    ("[approvals]\nlevel = 4\n", 2, "approvals.level: Input should be less than or equal to 3"),
    ("[approvals]\nlevel = \"2\"\n", 2, "approvals.level: Input should be a valid integer"),
    ("[approvals]\nrules = [{ pattern = \"x:y\", decision = \"maybe\" }]\n", 2,
     "approvals.rules[0].decision: Input should be 'allow', 'ask' or 'deny'"),
    ("[approvals]\nread_only = [\"bad pattern\"]\n", 2, "approvals.read_only[0]: String should"),
    ("[approvals]\nexpirs = \"1h\"\n", 2, "approvals.expirs: unknown field (did you mean 'expires'?)"),
    ("[approval]\nlevel = 2\n", 1, "unknown top-level key 'approval': only [settings], [[intent]] "
     "and [[watch]] (did you mean 'approvals'?), plus [approvals]"),
])
def test_a_bad_dial_is_reported_with_its_line(text: str, line: int, reason: str, tmp_path: Path) -> None:
    with pytest.raises(IntentFileError) as caught:
        parse_intents(text, tmp_path / "intents.toml")
    assert (caught.value.line, caught.value.reason.startswith(reason)) == (line, True), \
        caught.value.reason


def test_promote_appends_an_allow_rule_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "intents.toml"
    path.write_text(APPROVALS)
    assert promote(path, "deploy:staging") is True
    text = path.read_text()
    assert "# the autonomy dial" in text and "# never" in text and "# rules decide" in text
    assert load_intents(path).approvals.rules == [
        Rule(pattern="deploy:prod", decision="deny"),
        Rule(pattern="deploy:staging", decision="allow"),
    ]
    assert promote(path, "deploy:staging") is False
    assert path.read_text() == text
    with pytest.raises(InvalidAction):
        promote(path, "deploy staging")
    assert path.stat().st_mode & 0o777 == 0o600


def test_promote_adds_the_table_to_a_file_without_one(tmp_path: Path) -> None:
    path = tmp_path / "intents.toml"
    path.write_text('# hello\n[[intent]]\nid = "ci"\n\n[[watch]]\nid = "t"\nkind = "timer"\n'
                    '[watch.schedule]\nevery = "5m"\n')
    assert promote(path, "repo:write") is True
    loaded = load_intents(path)
    assert loaded.approvals.rules == [Rule(pattern="repo:write", decision="allow")]
    assert [w.id for w in loaded.watches] == ["t"] and path.read_text().startswith("# hello\n")
    fresh = tmp_path / "new" / "intents.toml"
    assert promote(fresh, "repo:write") is True
    assert load_intents(fresh).approvals.rules == [Rule(pattern="repo:write", decision="allow")]
    broken = tmp_path / "broken.toml"
    broken.write_text("[approvals]\nlevel = 9\n")
    with pytest.raises(IntentFileError):
        promote(broken, "repo:write")


# -- requests made for Claude Code permission prompts ----------------------------------

PROMPT = {"request_id": "abcde", "tool_name": "Bash", "description": "Run the tests",
          "input_preview": '{"command": "npm test"}'}


def test_a_prompt_is_stored_with_its_request_and_its_answer_logged(desks: Desks) -> None:
    desk = desks(level=2, rules=[Rule(pattern="claude:Bash:npm:test", decision="allow")])
    allowed = desk.request("claude:Bash:npm:test", "Claude Code asks to use Bash",
                           session="s1", permission=PROMPT)
    assert allowed.status == "allowed" and allowed.permission == PROMPT
    assert desk.get(allowed.id).permission == PROMPT  # read back from SQLite
    requested = desks.log("approval_requested")[-1]
    assert requested.detail["permission"] == PROMPT and requested.detail["session"] == "s1"
    decided = desks.log("approval_decided")[-1]
    assert decided.detail["answer"] == {"request_id": "abcde", "behavior": "allow"}
    # one left to the user: the notice carries the prompt (as data); the decision, the answer
    asked = desk.request("claude:Bash:make", "Claude Code asks to use Bash", session="s1",
                         permission={**PROMPT, "request_id": "fghij"})
    [notice] = desks.inbox(notices=True)
    assert notice.payload["permission"]["request_id"] == "fghij"
    with pytest.raises(InvalidRequest, match="answered as it was asked"):
        desk.edit(asked.id, "claude:Bash:make:test")  # all or nothing for Claude Code
    desk.reject(asked.id)
    decided = desks.log("approval_decided")[-1]
    assert decided.detail["answer"] == {"request_id": "fghij", "behavior": "deny"}
    # and a plain request has no answer
    assert desks().request("repo:read", "look").status == "allowed"
    assert "answer" not in desks.log("approval_decided")[-1].detail


def test_a_refused_prompt_is_denied_whatever_the_dial_says(desks: Desks) -> None:
    desk = desks(level=3)
    refused = desk.request("claude:invalid", "Claude Code asks to use invalid",
                           permission={"request_id": "abcde"}, refused="tool_name is missing")
    assert (refused.status, refused.reason) == ("denied", "tool_name is missing")
    decided = desks.log("approval_decided")[-1]
    assert decided.detail["by"] == "invalid"
    assert decided.detail["answer"] == {"request_id": "abcde", "behavior": "deny"}


def test_promotion_works_for_claude_actions(desks: Desks, tmp_path: Path) -> None:
    desk = desks()
    results = [desk.approve(desk.request("claude:Bash:npm:test", "again",
                                         permission={**PROMPT, "request_id": f"r{i}"}).id)
               for i in range(10)]
    assert [r.suggest for r in results] == [False] * 9 + [True]
    path = tmp_path / "intents.toml"
    path.write_text('[approvals]\nlevel = 2\n\n[approvals.claude]\npaths = { Edit = "file_path" }\n')
    assert promote(path, "claude:Bash:npm:test") is True
    settings = load_intents(path).approvals
    assert settings.rules == [Rule(pattern="claude:Bash:npm:test", decision="allow")]
    assert settings.claude.paths == {"Edit": "file_path"}
    promoted = desks(**dict(settings)).request("claude:Bash:npm:test", "now by itself")
    assert promoted.status == "allowed"
