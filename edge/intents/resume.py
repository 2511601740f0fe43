"""Resuming an intent: ``mailslot intent resume`` and the MCP ``intent_resume`` tool.

Resuming also lifts a route a runtime had turned away (HTTP 410, recorded in the
delivery queue), so that the intent's next wake is delivered again.
"""

from __future__ import annotations

from edge.config import EdgePaths
from edge.errors import UnknownIntent
from edge.intents.edit import set_paused
from edge.store.deliveries import DeliveryQueue


def resume_intent(paths: EdgePaths, intent_id: str) -> bool:
    """Un-pause ``intent_id`` in ``intents.toml`` and enable its route again; return
    whether a disabled route was enabled. ``UnknownIntent`` if the file has no such
    intent."""
    if not set_paused(paths.intents_file, intent_id, False):
        raise UnknownIntent(f"no intent {intent_id!r} in {paths.intents_file}")
    if not paths.engine_file.exists():
        return False  # DeliveryQueue.open would create it
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        return queue.enable_route(intent_id)
    finally:
        queue.close()
