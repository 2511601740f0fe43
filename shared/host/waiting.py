"""Waiting on events without polling: the two asyncio helpers every loop here needs.

Each long-running loop of the relay and the edge sleeps on "something arrived, or we are
asked to stop, or a timer ran out". Written by hand each time, that is five lines with a
subtle part (cancel the waiters that did not fire, and await them so nothing is left
pending at shutdown); written once, the loops say what they wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_of(*awaitables: Awaitable[Any], timeout: float | None = None) -> None:
    """Return once the first of ``awaitables`` completes, or after ``timeout`` seconds
    (``None``: no timer). The others are cancelled and awaited before this returns, so no
    waiter outlives the call; what the one that finished returned or raised is dropped
    (the caller looks at its own state afterwards: an event is set, a queue is non-empty)."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def settle(tasks: list[asyncio.Future[Any]]) -> list[Any]:
    """The outcomes of ``tasks`` (results or exceptions), awaited to the end even if the
    caller is cancelled meanwhile; then the cancellation goes on. For tasks that were
    already told to stop and end within one step: nothing is left running."""
    gathered = asyncio.gather(*tasks, return_exceptions=True)
    try:
        return await asyncio.shield(gathered)
    except asyncio.CancelledError:
        await gathered
        raise
