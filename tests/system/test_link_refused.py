"""A real edge daemon whose relay refuses the link with an ``error`` frame after auth (its
account disabled: ``account_disabled``, then close 4403): the edge counts it as a link
that is down — it stays up and dials again with backoff — and links as soon as the
account is enabled again. (An edge that asserted on the frame stopped for good.)"""

from __future__ import annotations

import logging

from relay_support import SOON
from tests_support import running_edge, wait_until

from relay.registry import Registry


async def test_an_error_frame_instead_of_welcome_is_a_link_down_not_a_stop(
    relay, make_member, caplog
):
    member = await make_member("acme")
    registry = Registry(relay.store)
    await registry.set_disabled("acme", True)
    caplog.set_level(logging.INFO, logger="mailslot.edge.link")

    def refusals() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.name == "mailslot.edge.link" and "account_disabled" in r.getMessage()]

    async with running_edge(member) as daemon:
        await wait_until(lambda: len(refusals()) >= 2, SOON, "the edge dialled again")
        assert daemon.link is not None and not daemon.link.connected.is_set()
        await registry.set_disabled("acme", False)
        await wait_until(daemon.link.connected.is_set, SOON, "the edge linked once enabled")
    assert "relay refused the link: account_disabled" in refusals()[0]
