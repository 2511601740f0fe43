"""``edge.link.keepalive``: a ping only after ``interval`` without a sign of life, none
while frames arrive, and a link that does not answer aborted within ``keepalive`` of its
last sign of life. A fake connection stands in for websockets (the real link, a real
relay and a black-holed proxy: ``tests/system/test_laptop.py``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge.errors import LinkClosed
from edge.link.keepalive import Liveness, PingSchedule

KEEPALIVE = 0.4
#: What a loaded machine may add to a timer (the bounds below are otherwise exact).
SLACK = 0.5


class _Transport:
    def __init__(self) -> None:
        self.aborted_at: float | None = None

    def abort(self) -> None:
        self.aborted_at = time.monotonic()


class _Link:
    """Answers each ping with a pong after ``answer_after`` seconds (None: never)."""

    def __init__(self, answer_after: float | None = 0.0) -> None:
        self.answer_after = answer_after
        self.transport = _Transport()
        self.pings: list[float] = []

    async def ping(self) -> asyncio.Future[float]:
        self.pings.append(time.monotonic())
        pong: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if self.answer_after is not None:
            asyncio.get_running_loop().call_later(self.answer_after, pong.set_result, 0.0)
        return pong


def test_the_schedule_is_three_quarters_silence_and_a_quarter_to_answer():
    assert PingSchedule.of(20.0) == PingSchedule(interval=15.0, timeout=5.0)
    schedule = PingSchedule.of(2.0)
    assert schedule.interval + schedule.timeout == 2.0


async def test_an_idle_live_link_is_pinged_once_per_interval_and_kept():
    link = _Link()
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    began = time.monotonic()
    watch = asyncio.create_task(liveness.watch(link))
    await asyncio.sleep(4 * 0.3 + 0.15)
    assert not watch.done()
    watch.cancel()
    # about one every 0.3 s (not every 0.2 s, half the keepalive, as before)
    assert 3 <= len(link.pings) <= 4, link.pings
    assert link.pings[0] - began >= 0.3 - 0.01
    assert link.transport.aborted_at is None


async def test_frames_arriving_put_the_ping_off():
    link = _Link()
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    watch = asyncio.create_task(liveness.watch(link))
    for _ in range(8):  # a frame every 0.1 s for 0.8 s: twice the keepalive
        await asyncio.sleep(0.1)
        liveness.seen()
    assert link.pings == []
    await asyncio.sleep(0.3 + 0.1)  # silence: now it pings
    watch.cancel()
    assert len(link.pings) == 1


async def test_no_pong_aborts_the_link_within_the_keepalive_of_its_last_sign_of_life():
    link = _Link(answer_after=None)
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    last = time.monotonic()
    with pytest.raises(LinkClosed, match="keepalive ping"):
        await asyncio.wait_for(liveness.watch(link), KEEPALIVE + SLACK + 1)
    assert link.transport.aborted_at is not None
    took = link.transport.aborted_at - last
    assert KEEPALIVE - 0.01 <= took <= KEEPALIVE + SLACK
    assert len(link.pings) == 1


async def test_a_late_pong_is_a_dead_link_but_a_frame_meanwhile_is_life():
    link = _Link(answer_after=0.2)  # later than the 0.1 s it has
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(liveness.watch(link), 2)

    link = _Link(answer_after=None)
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    watch = asyncio.create_task(liveness.watch(link))
    await asyncio.sleep(0.3 + 0.05)  # the ping is out, its pong never comes …
    assert len(link.pings) == 1
    liveness.seen()  # … but a deliver frame does
    await asyncio.sleep(0.1)
    assert not watch.done()
    watch.cancel()
    assert link.transport.aborted_at is None


async def test_a_pong_that_arrives_with_the_timer_counts(monkeypatch):
    """After a freeze (SIGSTOP, a laptop asleep) the pong may be read in the same loop
    iteration as the timeout fires: it was answered."""
    link = _Link(answer_after=None)
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    answered: list[asyncio.Future[float]] = []
    real_ping = link.ping

    async def ping() -> asyncio.Future[float]:
        pong = await real_ping()
        answered.append(pong)
        return pong

    monkeypatch.setattr(link, "ping", ping)
    watch = asyncio.create_task(liveness.watch(link))
    await asyncio.sleep(0.3 + 0.02)
    assert answered
    time.sleep(0.15)  # the loop frozen past the ping's deadline …
    # … and the pong read as it wakes, in the loop iteration that runs the deadline
    asyncio.get_running_loop().call_soon(answered[0].set_result, 0.0)
    await asyncio.sleep(0.05)
    assert not watch.done()
    watch.cancel()
    assert link.transport.aborted_at is None


async def test_a_frame_during_the_ping_moves_the_deadline_to_a_keepalive_after_it():
    """A frame that arrives while the pong is awaited is the last sign of life: with no
    answer and no frame after it, the link is given up a keepalive after that frame."""
    link = _Link(answer_after=None)
    liveness = Liveness(PingSchedule.of(KEEPALIVE))
    watch = asyncio.create_task(liveness.watch(link))
    await asyncio.sleep(0.3 + 0.05)  # the first ping is out, unanswered
    assert len(link.pings) == 1
    liveness.seen()
    last = time.monotonic()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(watch, KEEPALIVE + SLACK + 1)
    assert link.transport.aborted_at is not None
    assert KEEPALIVE - 0.01 <= link.transport.aborted_at - last <= KEEPALIVE + SLACK
    assert len(link.pings) == 2  # the second 0.3 s after the frame, unanswered too
