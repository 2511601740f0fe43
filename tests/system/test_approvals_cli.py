"""``mailslot approve request`` and ``mailslot approvals ...`` as a runtime and a person
run them: the real CLI (``python -m edge``) in subprocesses, in a real enrolled edge home
(a real relay and nats-server), a real inbox, log and intents file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests_support import json_out, mailslot, running_edge, wait_until

from edge.intents.model import Intent
from edge.store.deliveries import permission_envelope, write_envelope_file

INTENTS = """\
# approvals wake the runtime's session
[[intent]]
id = "approvals"
[intent.match]
source_kind = "approval"

[approvals]
level = 1
promote_after = 2
"""


def request(home: Path, action: str, *extra: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return mailslot(home, "approve", "request", "--action", action, "--summary",
                    f"please {action}", "--json", *extra, **kwargs)


def approval_items(member: Any, *, notices: bool = False) -> list[Any]:
    """Decisions raised into the inbox (with ``notices``: the pending notices too)."""
    with member.inbox() as inbox:
        return [i for i in sorted(inbox.list(state=None, limit=1000), key=lambda i: i.seq)
                if i.source_kind == "approval" and (notices or i.type != "approval.pending")]


def log_steps(home: Path) -> list[dict[str, Any]]:
    entries = json_out(mailslot(home, "log", "--json"))
    return [e for e in entries if e["step"].startswith("approval_")]


async def test_request_decide_edit_and_promote(make_member: Callable[..., Any]) -> None:
    member = await make_member()
    home = member.home
    (home / "config" / "intents.toml").write_text(INTENTS)

    read = request(home, "repo:read", "--session", "api")
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["status"] == "allowed"

    asked = request(home, "deploy:*", "--session", "api", "--intent", "ci")
    assert asked.returncode == 3, asked.stderr
    pending = json.loads(asked.stdout)
    assert pending["status"] == "pending" and pending["reason"] == "level 1: not a read-only action"
    listed = json_out(mailslot(home, "approvals", "list", "--json"))
    assert [a["id"] for a in listed] == [pending["id"]]
    assert len(json_out(mailslot(home, "approvals", "list", "--all", "--json"))) == 2

    edited = json_out(mailslot(home, "approvals", "edit", pending["id"], "--action",
                               "deploy:staging", "--json"))
    assert (edited["action"], edited["edited_from"]) == ("deploy:staging", "deploy:*")
    rejected = json_out(mailslot(home, "approvals", "reject", pending["id"], "--note",
                                 "not today", "--json"))
    assert (rejected["status"], rejected["note"], rejected["suggestion"]) == (
        "rejected", "not today", None)

    # the runtime hears it as a local interrupt in its session
    [item] = approval_items(member)
    assert (item.type, item.session, item.id) == ("approval.rejected", "api", rejected["interrupt"])
    assert item.payload == {"id": pending["id"], "action": "deploy:staging",
                            "summary": "please deploy:*", "note": "not today"}

    # two approvals in a row (promote_after = 2): the second suggests promoting
    outputs = []
    for _ in range(2):
        asked = request(home, "deploy:staging")
        assert asked.returncode == 3
        done = mailslot(home, "approvals", "approve", json.loads(asked.stdout)["id"])
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "promote" not in outputs[0]
    assert ("approved 2 times in a row: `mailslot approvals promote deploy:staging` adds an "
            "allow rule (rules apply at level 2; the dial is at 1)") in outputs[1]

    promoted = json_out(mailslot(home, "approvals", "promote", "deploy:staging", "--json"))
    assert promoted == {"action": "deploy:staging", "added": True, "level": 1,
                        "file": str(home / "config" / "intents.toml")}
    text = (home / "config" / "intents.toml").read_text()
    assert "# approvals wake the runtime's session" in text
    (home / "config" / "intents.toml").write_text(text.replace("level = 1", "level = 2"))
    now_allowed = request(home, "deploy:staging")
    assert now_allowed.returncode == 0 and json.loads(now_allowed.stdout)["status"] == "allowed"
    assert request(home, "deploy:prod").returncode == 3  # no rule: ask

    steps = [e["step"] for e in log_steps(home)]
    assert steps.count("approval_suggested") == 1
    assert steps.count("approval_decided") == 5  # allowed, rejected, 2 approved, allowed
    assert mailslot(home, "log", "--verify").returncode == 0


async def test_errors_carry_codes(make_member: Callable[..., Any]) -> None:
    member = await make_member()
    home = member.home
    bad = request(home, "deploy prod")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"] == "invalid_action"
    unknown = mailslot(home, "approvals", "approve", "01JDQ8Z9X4NOSUCHAPPROVAL00", "--json")
    assert (unknown.returncode, json.loads(unknown.stdout)["error"]) == (1, "unknown_approval")
    asked = json.loads(request(home, "repo:write").stdout)
    assert mailslot(home, "approvals", "approve", asked["id"]).returncode == 0
    again = mailslot(home, "approvals", "reject", asked["id"])
    assert again.returncode == 1 and "already_decided" in again.stderr
    edit = mailslot(home, "approvals", "edit", asked["id"], "--action", "a b", "--json")
    assert json.loads(edit.stdout)["error"] == "invalid_action"
    promote = mailslot(home, "approvals", "promote", "*!", "--json")
    assert json.loads(promote.stdout)["error"] == "invalid_action"


async def test_the_envelope_allows_at_once(
    make_member: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = await make_member()
    home = member.home
    (home / "config" / "intents.toml").write_text("[approvals]\nlevel = 0\n")
    envelope = permission_envelope(Intent(id="ci", grant=["ci:*"]), [None], datetime.now(UTC))
    path = write_envelope_file(tmp_path / "perm", 1, envelope)
    # what an exec route hands the runtime it starts
    monkeypatch.setenv("MAILSLOT_PERMISSIONS", str(path))
    monkeypatch.setenv("MAILSLOT_SESSION", "api")
    allowed = request(home, "ci:rerun")
    assert allowed.returncode == 0, allowed.stderr
    doc = json.loads(allowed.stdout)
    assert (doc["status"], doc["intent"], doc["session"]) == ("allowed", "ci", "api")
    assert request(home, "repo:read").returncode == 3  # level 0 asks


async def test_a_waiting_runtime_sees_the_users_approval(make_member: Callable[..., Any]) -> None:
    member = await make_member()
    home = member.home
    # INFO, as a user runs it: watchfiles' "N changes detected" lines must not leak out.
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "INFO"}
    waiting = subprocess.Popen(
        [sys.executable, "-m", "edge", "approve", "request", "--action", "deploy:staging",
         "--summary", "ship 1.2", "--session", "api", "--wait", "5s", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        pending = await wait_until(
            lambda: json_out(mailslot(home, "approvals", "list", "--json")), 10, "the request")
        began = time.monotonic()
        done = json_out(mailslot(home, "approvals", "approve", pending[0]["id"], "--note",
                                 "go", "--json"))
        assert done["status"] == "approved"
        out, err = waiting.communicate(timeout=10)
        answered_in = time.monotonic() - began
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0, err
    assert "watchfiles" not in err, err
    seen = json.loads(out)
    assert (seen["id"], seen["status"], seen["note"]) == (pending[0]["id"], "approved", "go")
    assert answered_in < 4, answered_in  # woken by inotify, not by the 5 s timeout
    assert [i.type for i in approval_items(member)] == ["approval.approved"]


async def test_wait_timeout_stays_pending_and_a_rejection_exits_4(make_member: Callable[..., Any]) -> None:
    member = await make_member()
    home = member.home
    (home / "config" / "intents.toml").write_text('[approvals]\nexpires = "1s"\n')
    timed_out = request(home, "repo:write", "--wait", "300ms")
    assert timed_out.returncode == 3 and json.loads(timed_out.stdout)["status"] == "pending"
    expired = request(home, "repo:write", "--wait", "5s", "--session", "api")
    assert expired.returncode == 4 and json.loads(expired.stdout)["status"] == "expired"
    items = approval_items(member)
    assert sorted(i.type for i in items) == ["approval.expired", "approval.expired"]
    assert json_out(mailslot(home, "approvals", "list", "--json")) == []
    decided = [e for e in log_steps(home) if e["step"] == "approval_decided"]
    assert [e["detail"]["by"] for e in decided] == ["expiry", "expiry"]


async def test_an_approval_interrupt_is_routed_by_intents(make_member: Callable[..., Any]) -> None:
    member = await make_member()
    home = member.home
    (home / "config" / "intents.toml").write_text(INTENTS)
    async with running_edge(member) as daemon:
        assert daemon.watches is not None
        await wait_until(lambda: daemon.watches.files.ready.is_set(), 10, "inotify up")
        asked = json.loads(request(home, "deploy:prod", "--session", "api").stdout)
        # the decision pokes the daemon, whose engine then decides the raised interrupt
        done = json_out(mailslot(home, "approvals", "approve", asked["id"], "--json"))

        def matched() -> bool:
            entries = json_out(mailslot(home, "log", "--json"))
            return any(e["step"] == "matched" and e["interrupt"] == done["interrupt"]
                       and e["intent"] == "approvals" for e in entries)

        await wait_until(matched, 10, "the approval matched by its intent")
