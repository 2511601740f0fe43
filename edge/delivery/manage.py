"""What a user sees of the delivery queue and fixes in it: ``mailslot deliveries
list|show|retry|drop`` and the MCP tools of the same names (``edge.mcp.tools``).

Rules this module keeps:

* A delivery is named by its key (``msg_…``, what the activity log and the runtime see)
  or by its number (``seq``). An unknown one is ``unknown_delivery``.
* ``retry`` takes a delivery that gave up (``failed``: out of attempts, or skipped while
  its route was disabled) or ended in ``error``, and puts it back to pending, due now,
  its attempts counted from zero, with the same key; the running daemon is woken through
  its poke file (``mailslot mcp --channel`` sees the database change by itself). It is
  sent with the intent's current route when the intent still has a runtime route (the
  user fixed the URL, the secret…), else with the one it was queued with. A pending,
  running or delivered one is ``not_retryable``; one whose intent's route is disabled
  (its runtime answered 410) is ``route_disabled`` until ``mailslot intent resume``.
* ``drop`` removes one nobody holds and no runtime took (pending, given up, or ended in
  ``error``); a running or delivered one is ``not_droppable``.
* Both write what they did to the activity log (``delivered`` with status
  ``requeued``; ``outcome`` ``skipped``, rule ``dropped``), and each is one guarded write:
  a delivery that changed meanwhile (the daemon claimed it) is refused, never clobbered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from edge.config import EdgePaths
from edge.errors import (
    IntentFileError,
    NotDroppable,
    NotRetryable,
    RouteDisabled,
    UnknownDelivery,
)
from edge.intents.file import load_intents
from edge.store.activity import ActivityLog, Event
from edge.store.deliveries import Delivery, DeliveryQueue
from shared.encoding import iso_time


@contextlib.contextmanager
def _queue(paths: EdgePaths) -> Iterator[DeliveryQueue | None]:
    """The queue, or None when the engine never ran here (nothing is created)."""
    if not paths.engine_file.exists():
        yield None
        return
    queue = DeliveryQueue.open(paths.engine_file)
    try:
        yield queue
    finally:
        queue.close()


def summary(delivery: Delivery) -> dict[str, Any]:
    """One delivery in a line's worth of fields (``list``)."""
    route = delivery.route
    return {
        "key": delivery.key, "seq": delivery.seq, "intent": delivery.intent,
        "kind": delivery.kind, "status": delivery.status, "outcome": delivery.outcome,
        "attempts": delivery.attempts, "max_attempts": route.get("max_attempts"),
        "session": delivery.session or None, "interrupts": delivery.interrupts,
        "created": iso_time(delivery.created), "finished": iso_time(delivery.finished),
        "next_attempt": delivery.next_attempt.isoformat()
        if delivery.status in ("pending", "claimed") else None,
        "target": _target(route), "error": (delivery.detail or {}).get("error"),
        "retryable": delivery.retryable,
    }


def list_deliveries(paths: EdgePaths, which: str | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` deliveries (0: all), newest first; ``which`` as in
    ``DeliveryQueue.listing``."""
    with _queue(paths) as queue:
        return [] if queue is None else [summary(d) for d in queue.listing(which, limit)]


def show_delivery(paths: EdgePaths, ref: str) -> dict[str, Any]:
    """Everything about one delivery: the summary, its route, its last detail, the wake
    document it carries and the permission envelope."""
    with _queue(paths) as queue:
        delivery = _find(queue, ref)
    return {**summary(delivery), "route": delivery.route, "detail": delivery.detail,
            "wake_doc": delivery.wake_doc, "permissions": delivery.permissions,
            "claimed_until": iso_time(delivery.claim_until)}


def retry_delivery(paths: EdgePaths, ref: str, now: datetime | None = None) -> dict[str, Any]:
    """Put a delivery that gave up back on the queue and wake the daemon; see the module
    rules. Returns its summary as it is now."""
    now = now or datetime.now(UTC)
    with _queue(paths) as queue:
        delivery = _find(queue, ref)
        assert queue is not None
        if not delivery.retryable:
            raise NotRetryable(f"delivery {delivery.key} is {_state(delivery)}: only one"
                               " that gave up (failed) or ended in error can be retried")
        if (why := queue.disabled(delivery.intent)) is not None:
            raise RouteDisabled(f"the route of intent {delivery.intent} is disabled ({why});"
                                f" run `mailslot intent resume {delivery.intent}` first")
        kind, route = _current_route(paths, delivery)
        if not queue.requeue(delivery, now, kind, route):
            raise NotRetryable(f"delivery {delivery.key} changed meanwhile; look again")
        again = queue.find(str(delivery.seq))
    assert again is not None
    _record(paths, [Event("delivered", now, interrupt, delivery.intent, None, {
        "route": kind, "delivery": delivery.key, "status": "requeued",
        "reason": "queued again by the user (`mailslot deliveries retry`)"})
        for interrupt in delivery.interrupts])
    paths.poke_file.write_text(now.isoformat())  # the daemon's deliverer wakes on it
    return summary(again)


def drop_delivery(paths: EdgePaths, ref: str, now: datetime | None = None) -> dict[str, Any]:
    """Remove a delivery nobody holds and no runtime took; see the module rules."""
    now = now or datetime.now(UTC)
    with _queue(paths) as queue:
        delivery = _find(queue, ref)
        assert queue is not None
        delivered = delivery.status == "done" and delivery.outcome != "error"
        if delivery.status == "claimed" or delivered:
            raise NotDroppable(f"delivery {delivery.key} is {_state(delivery)}: only a"
                               " pending one, or one that gave up or ended in error, can be"
                               " dropped")
        if not queue.drop(delivery):
            raise NotDroppable(f"delivery {delivery.key} changed meanwhile; look again")
    if delivery.status == "pending":  # its wake never got an outcome: say what became of it
        _record(paths, [Event("outcome", now, interrupt, delivery.intent, None, {
            "outcome": "skipped", "rule": "dropped", "delivery": delivery.key,
            "reason": "dropped by the user (`mailslot deliveries drop`)"})
            for interrupt in delivery.interrupts])
    return {**summary(delivery), "dropped": True}


def _find(queue: DeliveryQueue | None, ref: str) -> Delivery:
    delivery = None if queue is None else queue.find(ref)
    if delivery is None:
        raise UnknownDelivery(f"no delivery {ref!r} (a key msg_… or a number, as"
                              " `mailslot deliveries list` shows)")
    return delivery


def _current_route(paths: EdgePaths, delivery: Delivery) -> tuple[str, dict[str, Any]]:
    """The intent's route now, if it still is a runtime's; else the recorded one. A file
    that does not load (being edited) keeps the recorded route too."""
    try:
        intent = load_intents(paths.intents_file).get(delivery.intent)
    except IntentFileError:
        intent = None
    if intent is None or intent.route.kind == "record":
        return delivery.kind, delivery.route
    return intent.route.kind, intent.route.model_dump(mode="json")


def _record(paths: EdgePaths, events: list[Event]) -> None:
    if events:
        with ActivityLog.open(paths.activity_file, paths.activity_key_file) as log:
            log.append(events)


def _state(delivery: Delivery) -> str:
    if delivery.status == "claimed":
        return "running now"
    if delivery.status == "pending":
        return "pending (on its way)"
    if delivery.status == "done":
        return f"delivered (outcome {delivery.outcome})"
    return delivery.status


def _target(route: dict[str, Any]) -> str | None:
    if route.get("kind") == "webhook":
        return str(route.get("url"))
    if route.get("kind") == "exec":
        argv = route.get("argv") or []
        return str(argv[0]) if argv else None
    return None
