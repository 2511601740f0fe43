"""Watches inside the real edge daemon: real files, a real relay and nats-server, the
real CLI. File changes become interrupts in the inbox in well under a second; a sleep
requested with ``mailslot sleep`` is interrupted by a real interrupt for its session."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests_support import json_out, mailslot, post_drafts, running_edge, wait_until

INTENTS = """\
[[intent]]
id = "local"
[intent.match]
source_kind = ["file", "sleep", "timer"]

[[intent]]
id = "ci"
[intent.match]
type = "ci.*"

[[watch]]
id = "src"
kind = "file"
paths = ["{folder}"]
debounce = "50ms"
"""


def local_items(member, kind: str) -> list:
    with member.inbox() as inbox:
        return [i for i in inbox.list(state=None, limit=1000) if i.source_kind == kind]


async def test_file_changes_and_sleep_in_the_daemon(relay, make_member, tmp_path: Path) -> None:
    member = await make_member()
    home = member.home
    assert home is not None
    folder = tmp_path / "project"
    folder.mkdir()
    (home / "config" / "intents.toml").write_text(INTENTS.format(folder=folder))

    async with running_edge(member) as daemon:
        assert daemon.watches is not None
        await wait_until(lambda: daemon.watches.files.ready.is_set(), 10, "file watches up")
        latencies = []
        target = folder / "main.py"
        for step, action in enumerate((
            lambda: target.write_text("print(1)"),
            lambda: target.write_text("print(2)"),
            lambda: target.unlink(),
        )):
            began = time.monotonic()
            action()
            await wait_until(lambda n=step + 1: len(local_items(member, "file")) == n, 5,
                             f"file event {step + 1}")
            latencies.append(time.monotonic() - began)
        kinds = [i.payload["changes"][0]["change"] for i in local_items(member, "file")]
        assert kinds == ["created", "modified", "deleted"]
        assert max(latencies) < 1.0, latencies
        (folder / ".git").mkdir()
        (folder / ".git" / "index").write_text("x")
        (folder / "notes.swp").write_text("x")
        (folder / "real.txt").write_text("x")
        await wait_until(lambda: len(local_items(member, "file")) == 4, 5, "the real file")
        assert "real.txt" in json.dumps(local_items(member, "file")[-1].payload)

        asleep = json_out(mailslot(home, "sleep", "--for", "5s", "--reason", "wait for CI",
                                   "--session", "api", "--json"))
        assert asleep["seconds"] == 60 and asleep["clamped"] is True
        responses = await post_drafts(relay.url, member.token, [
            {"to": member.id, "type": "ci.failed", "session": "api", "priority": "now"}])
        assert responses[0].status_code == 202
        await wait_until(lambda: json_out(mailslot(home, "status", "--json"))["counters"]
                         ["sleep.interrupted"] == 1, 20, "sleep interrupted")
    status = json_out(mailslot(home, "status", "--json"))
    assert status["counters"]["sleep.entered"] == 1
    metrics = mailslot(home, "status", "--metrics")
    assert metrics.returncode == 0
    assert "mailslot_sleep_interrupted_total 1.0" in metrics.stdout
    assert 'mailslot_inbox_pending{priority="now"}' in metrics.stdout


def test_sleep_is_clamped_and_snapped(tmp_path: Path, make_member=None) -> None:
    refused = mailslot(tmp_path, "sleep", "--for", "10m", "--reason", "x", "--json")
    assert refused.returncode == 1 and json.loads(refused.stdout)["error"] == "not_initialized"
    bad = mailslot(tmp_path, "sleep", "--for", "soon", "--reason", "x")
    assert bad.returncode != 0 and "duration" in bad.stderr
