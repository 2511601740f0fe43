"""``mailslot inbox`` and the match options as a person runs them (the real CLI in a
subprocess, a real SQLite inbox): a refused ack or nack is the documented error
(``mailslot: not_pending: …`` or ``{"error", "message"}``, exit 1), ``inbox list`` shows
who holds a claim, and ``--source-kind a b c`` takes several values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import ulid
from tests_support import json_out, mailslot

from edge.config import EdgePaths
from edge.intents.declarations import AbsenceWatch
from edge.intents.file import load_intents
from edge.store.inbox import Accepted, Inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

ME, PRODUCER = Identity.generate(), Identity.generate()
T0 = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)


def _stored(home: Path, n: int) -> list[str]:
    accepted = []
    for i in range(n):
        envelope = Envelope(id=str(ulid.ULID()), to=ME.id,
                            source=Source(kind="producer", name="ci"), type="build.failed",
                            priority=Priority.next, created_at=T0, payload={"n": i},
                            signer=PRODUCER.id)
        accepted.append(Accepted(envelope, sign_envelope(envelope, PRODUCER), None, T0))
    paths = EdgePaths(home / "config", home / "data")
    paths.ensure()
    with Inbox.open(paths.inbox_file) as box:
        box.commit_batch(accepted)
    return [a.envelope.id for a in accepted]


def test_ack_and_nack_of_what_is_not_pending_are_documented_errors(tmp_path: Path) -> None:
    (item,) = _stored(tmp_path, 1)
    for verb in ("ack", "nack"):
        text = mailslot(tmp_path, "inbox", verb, "01NOTTHERE")
        assert (text.returncode, text.stdout) == (1, "")
        assert text.stderr.strip() == (
            "mailslot: not_pending: 01NOTTHERE is not pending (unknown, or already acked)")
        as_json = mailslot(tmp_path, "inbox", verb, "01NOTTHERE", "--json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout) == {
            "error": "not_pending",
            "message": "01NOTTHERE is not pending (unknown, or already acked)"}
    assert json_out(mailslot(tmp_path, "inbox", "ack", item, "--json")) == {
        "id": item, "acked": True}
    again = mailslot(tmp_path, "inbox", "ack", item, "--json")  # acked twice: refused
    assert again.returncode == 1 and json.loads(again.stdout)["error"] == "not_pending"


def test_inbox_list_text_shows_who_holds_a_claim(tmp_path: Path) -> None:
    first, second = _stored(tmp_path, 2)
    claimed = json_out(mailslot(tmp_path, "inbox", "next", "--claim", "--owner", "agent-7",
                                "--json"))
    assert claimed["id"] == first
    listed = mailslot(tmp_path, "inbox", "list")
    assert listed.returncode == 0, listed.stderr
    lines = dict(line.split("  ", 1) for line in listed.stdout.splitlines())
    until = datetime.fromisoformat(claimed["claim_until"]).isoformat(timespec="seconds")
    assert lines[first].endswith(f"[claimed by agent-7 until {until}]")
    assert "claimed" not in lines[second]
    assert json_out(mailslot(tmp_path, "inbox", "ack", first, "--owner", "agent-7",
                             "--json")) == {"id": first, "acked": True}
    assert "claimed" not in mailslot(tmp_path, "inbox", "list", "--all").stdout


def test_match_options_take_several_values_or_repeat(tmp_path: Path) -> None:
    added = json_out(mailslot(tmp_path, "intent", "add", "local", "--source-kind", "file",
                              "timer", "command", "--source-kind", "tick", "--type",
                              "a.*", "b.*", "--json"))
    assert added["match"]["source_kind"] == ["file", "timer", "command", "tick"]
    assert added["match"]["type"] == ["a.*", "b.*"]
    result = mailslot(tmp_path, "watch", "add", "quiet", "--kind", "absence", "--within",
                      "1h", "--match-source-kind", "file", "timer", "--json")
    assert result.returncode == 0, result.stderr
    watch = load_intents(tmp_path / "config" / "intents.toml").watch("quiet")
    assert isinstance(watch, AbsenceWatch)
    assert watch.match.source_kind == ["file", "timer"]
    helped = mailslot(tmp_path, "intent", "add", "--help").stdout
    assert "--source-kind K [K ...]" in helped and "one or more" in helped
