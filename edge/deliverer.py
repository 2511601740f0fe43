"""The daemon's delivery loop: hands queued wakes to ``exec`` and ``webhook`` runtimes.

It claims due deliveries (``edge.deliveries``), runs the channel (``edge.channels``),
records ``delivered`` and ``outcome`` for every interrupt of the wake, charges the tokens
a runtime reports to the daily budget, and on a transient failure puts the delivery back
with exponential backoff until the route's ``max_attempts``. A 410 from a webhook disables
the route and says why. It sleeps on an event (a wake was queued) and a timer (the next
retry), never in a polling loop. MCP deliveries are left to ``mailslot mcp --channel``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.activity import Event
from edge.deliveries import Delivery, DeliveryQueue, write_envelope_file
from edge.engine import Recorder
from edge.intents import ExecRoute, WebhookRoute

if TYPE_CHECKING:
    from edge.channels import ChannelResult

log = logging.getLogger("mailslot.edge.delivery")

DAEMON_KINDS = ("exec", "webhook")
OWNER = "daemon"


class Deliverer:
    def __init__(
        self,
        queue: DeliveryQueue,
        record: Recorder,
        permissions_dir: Path,
        *,
        spend_tokens: Callable[[int, datetime], None] = lambda _tokens, _at: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.queue = queue
        self.record = record
        self.permissions_dir = permissions_dir
        self.spend_tokens = spend_tokens
        self.clock = clock
        self.environ = environ

    async def run(self, queued: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set():
            queued.clear()
            await self.run_due(self.clock())
            due = self.queue.next_due(DAEMON_KINDS)
            timeout = None if due is None else max(0.05, (due - self.clock()).total_seconds())
            waiters = [asyncio.create_task(queued.wait()), asyncio.create_task(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def run_due(self, now: datetime) -> int:
        claimed = self.queue.claim(DAEMON_KINDS, OWNER, lease=_lease(), now=now)
        for delivery in claimed:
            await self._deliver(delivery)
        return len(claimed)

    async def _deliver(self, delivery: Delivery) -> None:
        from edge.channels import ChannelResult

        try:
            result = await self._channel(delivery)
        except Exception as exc:  # a broken runtime must not stop the others
            log.exception("delivery %s failed", delivery.seq)
            result = ChannelResult(outcome="error", detail={"error": f"{type(exc).__name__}: {exc}"})
        now = self.clock()
        route = delivery.route
        events: list[Event] = []
        if result.retry and delivery.attempts < int(route.get("max_attempts", 1)):
            when = self.queue.retry(delivery, result.detail, now)
            for interrupt in delivery.interrupts:
                events.append(Event("delivered", now, interrupt, delivery.intent, None, {
                    "route": delivery.kind, "attempt": delivery.attempts, "status": "retrying",
                    "retry_at": when.isoformat(), **_safe(result.detail)}))
        else:
            if result.retry:  # out of attempts
                self.queue.fail(delivery.seq, result.detail, now)
                outcome = "error"
                reason = f"gave up after {delivery.attempts} attempts"
            else:
                self.queue.finish(delivery.seq, result.outcome, result.detail, now)
                outcome, reason = result.outcome, ""
            if result.disable:
                why = f"the runtime answered 410 Gone at {now.isoformat()}"
                self.queue.disable_route(delivery.intent, why, now)
                reason = f"route disabled: {why}"
            if result.tokens:
                self.spend_tokens(result.tokens, now)
            for interrupt in delivery.interrupts:
                events.append(Event("delivered", now, interrupt, delivery.intent, None, {
                    "route": delivery.kind, "attempt": delivery.attempts, **_safe(result.detail)}))
                events.append(Event("outcome", now, interrupt, delivery.intent, None, {
                    "outcome": outcome, "tokens": result.tokens,
                    **({"reason": reason} if reason else {})}))
        self.record(events)

    async def _channel(self, delivery: Delivery) -> ChannelResult:
        # imported here: httpx is only loaded once a runtime is actually delivered to
        from edge.channels import deliver_exec, deliver_webhook

        if delivery.kind == "exec":
            path = write_envelope_file(self.permissions_dir, delivery.seq, delivery.permissions)
            first = (delivery.wake_doc.get("interrupts") or [{}])[0]
            env = {
                "MAILSLOT_ID": ",".join(delivery.interrupts),
                "MAILSLOT_TYPE": str(first.get("type", "")),
                "MAILSLOT_INTENT": delivery.intent,
                "MAILSLOT_SESSION": delivery.session,
                "MAILSLOT_PERMISSIONS": str(path),
            }
            return await deliver_exec(ExecRoute.model_validate(delivery.route),
                                      delivery.wake_doc, env)
        return await deliver_webhook(WebhookRoute.model_validate(delivery.route),
                                     delivery.wake_doc, f"msg_mailslot_{delivery.seq}",
                                     self.environ)


def _lease() -> float:
    """Long enough for the slowest route (exec timeout defaults to 10 min)."""
    return 3600.0


def _safe(detail: dict[str, Any]) -> dict[str, Any]:
    """Channel details are already free of secrets; keep the record small."""
    return {k: v for k, v in detail.items() if k in
            ("status", "exit_code", "error", "duration_ms", "stdout_ignored", "stdout_bytes",
             "timeout_s", "body_ignored", "retry_after_s")}
