"""The decision engine inside the real edge daemon: interrupts posted to a real relay,
drained over the real link, decided by the user's intents file, recorded, explained,
replayed; the intents file hot-reloaded, and a bad one refused while the last good set
stays in force."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests_support import json_out, mailslot, post_drafts, running_edge, wait_until

from edge.engine.replay import outcomes_from_log
from edge.store.activity import ActivityLog

GOOD = """\
[settings]
timezone = "Europe/Berlin"

[[intent]]
id = "ci"
description = "CI failures, at most one wake per hour and session"
[intent.match]
type = "ci.*"
[intent.policy]
cooldown = "1h"
"""

BAD = GOOD + """
[[intent]]
id = "night"
[intent.policy]
active_hours = { start = "22:00", end = "06:00", timezone = "Mars/Olympus_Mons" }
"""

BETTER = GOOD + """
[[intent]]
id = "ops"
[intent.match]
type = "ops.*"
priority = "now"
"""


def entries(home: Path) -> list:
    paths_data = home / "data"
    with ActivityLog.open(paths_data / "activity.log", home / "config" / "keys" / "activity.key") as log:
        return list(log.entries())


def outcome(home: Path, interrupt: str, intent: str | None) -> str | None:
    return outcomes_from_log(entries(home)).get((interrupt, intent))


async def test_engine_in_the_daemon(relay, make_member) -> None:
    member = await make_member()
    home = member.home
    assert home is not None
    (home / "config" / "intents.toml").write_text(GOOD)

    async def send(*drafts: dict) -> list[str]:
        responses = await post_drafts(relay.url, member.token, [
            {"to": member.id, **d} for d in drafts
        ])
        assert all(r.status_code == 202 for r in responses)
        return [r.json()["id"] for r in responses]

    async with running_edge(member):
        first, second, other = await send(
            {"type": "ci.failed", "priority": "now", "session": "api"},
        ) + await send(
            {"type": "ci.failed", "session": "api"},
            {"type": "mail.received"},
        )
        await wait_until(lambda: outcome(home, first, "ci") == "woken", 20, "first woken")
        await wait_until(lambda: outcome(home, second, "ci") == "suppressed", 20, "cooldown")
        await wait_until(lambda: outcome(home, other, None) == "unmatched", 20, "unmatched")

        explained = mailslot(home, "explain", second)
        assert explained.returncode == 0, explained.stderr
        assert "matched intent ci" in explained.stdout
        assert "cooldown" in explained.stdout

        # a bad file is refused with its line; the last good set stays in force
        (home / "config" / "intents.toml").write_text(BAD)
        await wait_until(
            lambda: [e for e in entries(home) if e.step == "intents_refused"], 20, "refusal"
        )
        refused = [e for e in entries(home) if e.step == "intents_refused"][-1]
        assert refused.detail["line"] == 15 and "Mars/Olympus_Mons" in refused.detail["reason"]
        (third,) = await send({"type": "ci.failed", "session": "docs"})
        await wait_until(lambda: outcome(home, third, "ci") == "woken", 20, "still deciding")

        # a good file is picked up without a restart
        (home / "config" / "intents.toml").write_text(BETTER)
        await wait_until(
            lambda: any(e.step == "intents_loaded" and e.detail.get("count") == 2
                        for e in entries(home)), 20, "reload",
        )
        (alert,) = await send({"type": "ops.disk_full", "priority": "now"})
        await wait_until(lambda: outcome(home, alert, "ops") == "woken", 20, "new intent")

    verified = mailslot(home, "log", "--verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # replay over what was stored gives the decisions the live engine made
    replayed = json_out(mailslot(home, "replay", "--since", "1h", "--intents",
                                 str(home / "config" / "intents.toml"), "--json"))
    live = outcomes_from_log(entries(home))
    for row in replayed["decisions"]:
        if row["interrupt"] in (first, second, alert):
            assert live[(row["interrupt"], row["intent"])] == row["outcome"]


async def test_activity_command(relay, make_member, tmp_path: Path) -> None:
    refused = mailslot(tmp_path / "nobody", "activity", "--json")
    assert refused.returncode == 1 and json_out_error(refused) == "not_initialized"
    member = await make_member()
    assert member.home is not None
    bad = mailslot(member.home, "activity", "--session", "a b", "--json")
    assert bad.returncode == 1 and json_out_error(bad) == "invalid_token"
    done = json_out(mailslot(member.home, "activity", "--session", "api", "--json"))
    assert done["session"] == "api"
    reports = [e for e in entries(member.home) if e.step == "activity"]
    assert [e.detail["session"] for e in reports] == ["api"]


def json_out_error(result: subprocess.CompletedProcess[str]) -> str:
    import json

    return str(json.loads(result.stdout)["error"])


async def test_outcome_reports_tokens_against_the_budget(relay, make_member) -> None:
    member = await make_member()
    home = member.home
    assert home is not None
    (home / "config" / "intents.toml").write_text(
        '[settings]\ntokens_per_day = 1000\n\n[[intent]]\nid = "ci"\n[intent.match]\ntype = "ci.*"\n'
    )
    async with running_edge(member):
        responses = await post_drafts(relay.url, member.token, [
            {"to": member.id, "type": "ci.failed"}])
        first = responses[0].json()["id"]
        await wait_until(lambda: outcome(home, first, "ci") == "woken", 20, "woken")
        reported = json_out(mailslot(home, "outcome", first, "--status", "action-taken",
                                     "--tokens", "1200", "--intent", "ci", "--json"))
        assert reported == {"id": first, "outcome": "action-taken", "tokens": 1200}
        responses = await post_drafts(relay.url, member.token, [
            {"to": member.id, "type": "ci.failed"}])
        second = responses[0].json()["id"]
        await wait_until(lambda: outcome(home, second, "ci") == "skipped", 20, "budget spent")
    explained = mailslot(home, "explain", second).stdout
    assert "token budget exhausted (1200/1000)" in explained
    bad = mailslot(home, "outcome", first, "--status", "ok", "--tokens", "-5")
    assert bad.returncode != 0
