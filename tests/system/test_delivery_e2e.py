"""A wake delivered by the real daemon: posted to a real relay, drained over the real
link, decided by the engine, handed to an exec runtime by the deliverer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests_support import post_drafts, running_edge, wait_until

from edge.store.activity import ActivityLog


async def test_exec_route_end_to_end(relay, make_member, tmp_path: Path) -> None:
    member = await make_member()
    home = member.home
    assert home is not None
    seen = tmp_path / "seen.json"
    script = (f"import json, os, sys; open({str(seen)!r}, 'w').write(json.dumps("
              "{'wake': json.load(sys.stdin), 'intent': os.environ['MAILSLOT_INTENT']}));"
              " print(json.dumps({'outcome': 'action-taken', 'tokens': 5}))")
    (home / "config" / "intents.toml").write_text(
        '[[intent]]\nid = "ci"\ngrant = ["ci:*"]\n[intent.match]\ntype = "ci.*"\n'
        f'[intent.route]\nkind = "exec"\nargv = {json.dumps([sys.executable, "-c", script])}\n'
    )
    async with running_edge(member):
        responses = await post_drafts(relay.url, member.token, [{
            "to": member.id, "type": "ci.failed", "priority": "now",
            "payload": {"repo": "api"}, "permissions": {"actions": ["ci:rerun", "prod:deploy"]},
        }])
        interrupt = responses[0].json()["id"]
        await wait_until(seen.exists, 20, "the runtime ran")

        def outcome() -> list[str]:
            with ActivityLog.open(home / "data" / "activity.log",
                                  home / "config" / "keys" / "activity.key") as log:
                return [e.detail.get("outcome") for e in log.trace(interrupt)
                        if e.step == "outcome"]

        await wait_until(lambda: outcome() == ["action-taken"], 20, "outcome recorded")
    got = json.loads(seen.read_text())
    assert got["intent"] == "ci"
    assert got["wake"]["interrupts"][0]["id"] == interrupt
    assert got["wake"]["permissions"]["actions"] == ["ci:rerun"]
    assert got["wake"]["permissions"]["denied"] == ["prod:deploy"]
    assert got["wake"]["text"].startswith("mailslot: intent ci woke you")
