"""Laptop life, with real processes: a link that dies without a FIN (the network
black-holed between a real edge daemon and the relay, or the edge frozen with SIGSTOP) is
noticed within the edge's keepalive, the edge links again as soon as traffic flows, and
every interrupt sent meanwhile reaches the inbox exactly once.

The edge runs with ``keepalive`` 2 s here (20 s by default) so that the suite stays
fast; ``scripts/laptop`` runs the same with the defaults and a two-minute freeze."""

from __future__ import annotations

import asyncio
import signal
import time

from blackhole_support import BlackHoleProxy
from tests_support import EdgeProcess, Member, post_drafts, wait_until

from edge.config import load_config, save_config

KEEPALIVE = 2.0
#: What a loaded machine may add to a timer-driven bound (scheduling, a slow fsync).
MARGIN = 3.0


def _point_at(member: Member, relay_url: str) -> None:
    paths = member.paths()
    config = load_config(paths)
    save_config(paths, config.model_copy(update={
        "relay_url": relay_url, "keepalive": KEEPALIVE,
        # the defaults: what is measured is the backoff a user has, not a test's
        "reconnect_base": 0.5, "reconnect_cap": 30.0,
    }))


def _status(member: Member) -> dict[str, object]:
    with member.inbox() as inbox:
        return inbox.status()


def _inbox_ids(member: Member) -> list[str]:
    with member.inbox() as inbox:
        return [item.id for item in inbox.list(state=None, limit=1000)]


async def _send(relay_url: str, member: Member, n: int, tag: str) -> set[str]:
    drafts = [{"to": member.id, "type": f"test.{tag}", "payload": {"n": i}} for i in range(n)]
    responses = await post_drafts(relay_url, member.token, drafts)
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    return {r.json()["id"] for r in responses}


async def _connected_session(member: Member) -> object:
    await wait_until(lambda: _status(member).get("connected") is True, 20, "edge linked")
    return _status(member).get("session")


async def test_a_black_holed_link_is_noticed_in_a_keepalive_and_relinked_at_once(
        relay, make_member):
    member = await make_member()
    host, port = relay.url.removeprefix("http://").rsplit(":", 1)
    async with BlackHoleProxy(host, int(port)) as proxy:
        _point_at(member, proxy.url)
        edge = EdgeProcess(member.home)
        edge.start()
        try:
            first = await _connected_session(member)
            before = await _send(relay.url, member, 3, "before")
            await wait_until(lambda: before <= set(_inbox_ids(member)), 20, "first ones in")

            proxy.black_hole()
            holed = time.monotonic()
            during = await _send(relay.url, member, 5, "during")
            await wait_until(lambda: _status(member).get("connected") is False,
                             KEEPALIVE + MARGIN, "the edge noticed the dead link")
            noticed = time.monotonic() - holed
            assert noticed <= KEEPALIVE + MARGIN
            assert not during & set(_inbox_ids(member))  # nothing crossed the hole
            await asyncio.sleep(0.5)  # a dial is under way into the hole

            proxy.restore()
            restored = time.monotonic()
            await wait_until(lambda: _status(member).get("connected") is True
                             and _status(member).get("session") != first,
                             MARGIN + 2, "linked again soon after the network came back")
            relinked = time.monotonic() - restored
            await wait_until(lambda: during <= set(_inbox_ids(member)), 20,
                             "the ones sent during the hole arrived")
            after = await _send(relay.url, member, 2, "after")
            await wait_until(lambda: after <= set(_inbox_ids(member)), 20, "and later ones")
        finally:
            edge.kill9()
    ids = _inbox_ids(member)
    assert sorted(ids) == sorted(before | during | after)  # each once
    assert relinked <= MARGIN + 2


async def test_a_frozen_edge_gets_every_interrupt_once_when_it_continues(relay, make_member):
    member = await make_member()
    _point_at(member, relay.url)
    edge = EdgeProcess(member.home)
    edge.start()
    try:
        await _connected_session(member)
        assert edge.process is not None
        edge.process.send_signal(signal.SIGSTOP)
        try:
            sent = await _send(relay.url, member, 10, "frozen")
            # longer than the edge's keepalive: its ping timers all ran out meanwhile
            await asyncio.sleep(2 * KEEPALIVE + 1)
            assert not sent & set(_inbox_ids(member))
        finally:
            edge.process.send_signal(signal.SIGCONT)
        await wait_until(lambda: sent <= set(_inbox_ids(member)), 20, "all arrived")
        await wait_until(lambda: _status(member).get("connected") is True, 20, "linked")
        later = await _send(relay.url, member, 3, "later")
        await wait_until(lambda: later <= set(_inbox_ids(member)), 20, "later ones too")
    finally:
        edge.kill9()
    ids = _inbox_ids(member)
    assert sorted(ids) == sorted(sent | later)
