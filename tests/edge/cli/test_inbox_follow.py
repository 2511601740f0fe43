"""``mailslot inbox follow``: the real CLI in a subprocess streams each interrupt as it is
committed by another process's connection — within 200 ms of the commit, with no polling
(it sleeps on inotify) — and resumes after a given seq without gaps or repeats."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import ulid

from edge.cli.main import main
from edge.config import EdgePaths
from edge.store.inbox import Accepted, Inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

ME, PRODUCER = Identity.generate(), Identity.generate()
#: The bound the issue sets, from the commit returning to the line being read.
WITHIN = 0.200


def _accepted(n: int) -> Accepted:
    envelope = Envelope(id=str(ulid.ULID()), to=ME.id, source=Source(kind="producer", name="ci"),
                        type="build.failed", priority=Priority.now,
                        created_at=datetime.now(UTC), payload={"n": n}, signer=PRODUCER.id)
    return Accepted(envelope, sign_envelope(envelope, PRODUCER), None, datetime.now(UTC))


class Follower:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self, timeout: float = 10) -> dict[str, object]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, "follow ended"
        doc: dict[str, object] = json.loads(raw)
        return doc


@pytest.fixture
async def follower(home: Path) -> AsyncIterator[Follower]:
    yield await _follow(home)


async def _follow(home: Path, *args: str) -> Follower:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge", "inbox", "follow", "--json", *args,
        env={**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    ready = await asyncio.wait_for(process.stderr.readline(), 30)  # armed, then says so
    assert ready.startswith(b"following "), ready
    return Follower(process)


async def _stop(follower: Follower) -> None:
    follower.process.terminate()
    await asyncio.wait_for(follower.process.wait(), 10)


async def test_follow_sees_each_commit_within_200_ms(home: Path, follower: Follower) -> None:
    paths = EdgePaths(home / "config", home / "data")
    try:
        with Inbox.open(paths.inbox_file) as inbox:
            for n in range(5):
                item = _accepted(n)
                inbox.commit_batch([item])
                committed = time.monotonic()
                doc = await follower.line()
                latency = time.monotonic() - committed
                assert doc["id"] == item.envelope.id and doc["payload"] == {"n": n}
                assert latency < WITHIN, f"seen {latency * 1000:.0f} ms after its commit"
            # a burst, committed at once, comes out whole and in order
            burst = [_accepted(10 + n) for n in range(300)]
            inbox.commit_batch(burst)
            seen = [(await follower.line())["id"] for _ in burst]
            assert seen == [a.envelope.id for a in burst]
    finally:
        await _stop(follower)


async def test_follow_resumes_after_a_seq(home: Path) -> None:
    paths = EdgePaths(home / "config", home / "data")
    with Inbox.open(paths.inbox_file) as inbox:
        inbox.commit_batch([_accepted(n) for n in range(3)])
        first_seq = inbox.after(0)[0].seq
    follower = await _follow(home, "--after", str(first_seq))
    try:
        assert [(await follower.line())["payload"] for _ in range(2)] == [{"n": 1}, {"n": 2}]
        with Inbox.open(paths.inbox_file) as inbox:
            inbox.commit_batch([_accepted(3)])
        assert (await follower.line())["payload"] == {"n": 3}
    finally:
        await _stop(follower)


def test_follow_refuses_a_bad_seq_and_a_missing_inbox(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAILSLOT_HOME", str(tmp_path))
    for argv, code, error in ((["--after", "-1"], 2, "usage"), (["--json"], 1, "not_initialized")):
        with pytest.raises(SystemExit) as exited:
            main(["inbox", "follow", "--json", *argv])
        assert exited.value.code == code
        assert json.loads(capsys.readouterr().out)["error"] == error
