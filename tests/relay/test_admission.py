"""The handshake cap's bookkeeping and its retry hint (``relay.admission``), on a fake
clock: a slot per handshake until it is over, refusals beyond the cap, and hints that
book the refused edges into the seconds ahead at the rate the relay completes them."""

from __future__ import annotations

from collections import Counter

from relay.admission import FIRST_RATE, HandshakeGate


def gate(cap: int | None = 2) -> tuple[HandshakeGate, list[float]]:
    now = [100.0]
    return HandshakeGate(cap, retry_max=30, clock=lambda: now[0]), now


def test_a_slot_per_handshake_and_refusals_beyond_the_cap():
    g, _ = gate(2)
    a, b = g.enter(), g.enter()
    assert a is not None and b is not None
    assert g.enter() is None
    assert (g.active, g.refused) == (2, 1)
    g.leave(a, welcomed=False)
    c = g.enter()
    assert c is not None
    g.leave(b, welcomed=True)
    g.leave(c, welcomed=True)
    assert g.active == 0


def test_no_cap_refuses_nothing():
    g, _ = gate(None)
    assert all(g.enter() is not None for _ in range(10_000))


def test_before_any_welcome_the_rate_is_a_guess():
    g, _ = gate(4)
    assert g.rate() == FIRST_RATE == 200
    hints = Counter(g.retry_after() for _ in range(1000))  # each second booked full
    assert hints == {1: 200, 2: 200, 3: 200, 4: 200, 5: 200}


def test_hints_fill_each_second_at_the_measured_rate():
    g, now = gate(4)
    started = [g.enter() for _ in range(4)]
    now[0] += 0.4  # each handshake took 0.4 s: 4 slots, 10 a second
    for s in started:
        assert s is not None
        g.leave(s, welcomed=True)
    assert abs(g.rate() - 10.0) < 1e-6
    hints = Counter(g.retry_after() for _ in range(100))  # 10 a second booked
    assert hints == {wait: 10 for wait in range(1, 11)}
    now[0] += 2  # two of those seconds are past: the next refusals queue after the rest
    assert g.retry_after() == 9  # second 11 of the first booking, 2 s on
    later = [g.retry_after() for _ in range(1000)]  # booked up: the second half of 30 s
    assert max(later) == 30 and min(later[-500:]) == 15


def test_slower_handshakes_give_longer_hints():
    g, now = gate(4)
    for _ in range(3):
        s = g.enter()
        assert s is not None
        now[0] += 0.2  # 0.2 s each: 20 a second with 4 slots (no second of history yet)
        g.leave(s, welcomed=True)
    assert abs(g.rate() - 20) < 1e-6
    assert max(g.retry_after() for _ in range(60)) == 3  # 20 a second booked


def test_the_rate_follows_what_was_done_lately_when_that_is_less():
    g, now = gate(100)
    for _ in range(100):  # one at a time, 0.05 s each: 2,000 a second the slots suggest
        s = g.enter()
        assert s is not None
        now[0] += 0.05
        g.leave(s, welcomed=True)
    assert abs(g.rate() - 1.5 * 100 / 4.95) < 0.5  # 1.5 x the 20 a second welcomed
    now[0] += 10  # nothing welcomed lately: the slots' rate again
    assert g.rate() > 1000
