"""The daemon's delivery loop: hands queued wakes to ``exec`` and ``webhook`` runtimes.

It claims one due delivery at a time (``edge.store.deliveries``), just before running it,
with a lease sized to the route's timeout that a timer renews while the runtime runs, so a
live delivery is never taken over however long it takes. It runs the channel
(``edge.delivery.exec`` or ``edge.delivery.webhook``, each answering a ``ChannelResult``),
records ``delivered`` and ``outcome`` for every interrupt of the wake, charges the tokens
a runtime reports to the daily budget, and on a transient failure puts the delivery back
with exponential backoff until the route's ``max_attempts``. A 410 from a webhook
disables the route and says why.

Recovery: the deliverer is an ``edge.store.instances.Instance``. On start and before every
round it releases the claims of instances that are no longer alive (this daemon's previous
life after a ``kill -9``, a closed ``mailslot mcp --channel``) and stops the exec runtimes
they left running, so their deliveries run again within seconds, once, with the same
delivery key. Stopping (cancelled) kills the runtime and gives its claim back at once. It
sleeps on an event (a wake was queued) and a timer (the next retry, or the next look at
other instances' claims), never in a busy loop. MCP deliveries are left to ``mailslot mcp
--channel``. Other processes wake it through the daemon's poke file (``poke_file``,
inotify): ``mailslot deliveries retry`` puts a delivery back and touches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.delivery.exec import deliver_exec
from edge.delivery.outcome import ChannelResult
from edge.delivery.webhook import deliver_webhook
from edge.engine.decide import Recorder
from edge.errors import FsWatchError
from edge.fswatch import FsWatch, FsWatchService
from edge.intents.model import ExecRoute, WebhookRoute
from edge.store.activity import Event
from edge.store.deliveries import Delivery, DeliveryQueue, Holder, lease_for, write_envelope_file
from edge.store.instances import runner_mark
from shared.host.waiting import first_of, settle

log = logging.getLogger("mailslot.edge.delivery")

DAEMON_KINDS = ("exec", "webhook")
#: A running delivery's claim is pushed forward this often (or every third of its lease,
#: if that is shorter).
RENEW_EVERY = 10.0


class Deliverer:
    """Delivers for ``instance`` (which must be started, and stay so while this runs)."""

    def __init__(
        self,
        queue: DeliveryQueue,
        record: Recorder,
        permissions_dir: Path,
        instance: Holder,
        *,
        spend_tokens: Callable[[int, datetime], None] = lambda _tokens, _at: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        environ: Mapping[str, str] = os.environ,
        lease: Callable[[dict[str, Any]], float] = lease_for,
        renew_every: float = RENEW_EVERY,
        poke_file: Path | None = None,
        fs: FsWatchService | None = None,
    ) -> None:
        self.queue = queue
        self.record = record
        self.permissions_dir = permissions_dir
        self.instance = instance
        self.spend_tokens = spend_tokens
        self.clock = clock
        self.environ = environ
        self.lease = lease
        self.renew_every = renew_every
        self.poke_file = poke_file
        #: The daemon's one file-system watcher, shared (None: a watch of its own).
        self.fs = fs

    async def run(self, queued: asyncio.Event, stop: asyncio.Event) -> None:
        """Run due deliveries, then sleep until one is queued or due. ``stop`` cuts a
        running delivery short at once: its runtime is killed and its claim given back
        (``_deliver``), so a clean stop never waits for a runtime to finish. A touch of
        ``poke_file`` (another process queued something) sets ``queued``."""
        pokes: list[asyncio.Future[Any]] = ([] if self.poke_file is None else
                 [asyncio.create_task(self._watch_pokes(self.poke_file, queued, stop),
                                      name="delivery-pokes")])
        try:
            while not stop.is_set():
                queued.clear()
                running = asyncio.ensure_future(self.run_due(self.clock(), stop))
                await first_of(running, stop.wait())
                if not running.cancelled():
                    running.result()  # the queue itself failing stops the daemon
                timeout = self._sleep_for()
                await first_of(queued.wait(), stop.wait(), timeout=timeout)
        finally:
            for task in pokes:
                task.cancel()
            await settle(pokes)

    async def _watch_pokes(self, poke_file: Path, queued: asyncio.Event,
                           stop: asyncio.Event) -> None:
        name = poke_file.name
        try:
            async with FsWatch(poke_file.parent, recursive=False, step_ms=50, debounce_ms=100,
                               stop=stop, accept=lambda _change, path: Path(path).name == name,
                               service=self.fs) as pokes:
                while await pokes.next() is not None:
                    queued.set()
        except FsWatchError as exc:  # deliveries go on; only other processes' pokes are lost
            log.warning("not watching %s (%s): a delivery put back by `mailslot"
                        " deliveries retry` waits for the next round", poke_file, exc)

    async def run_due(self, now: datetime, stop: asyncio.Event | None = None) -> int:
        """Release dead instances' claims, then claim and run due deliveries one by one
        until none is due (or ``stop``); returns how many ran."""
        self.recover(now)
        ran = 0
        while stop is None or not stop.is_set():
            claimed = self.queue.claim(DAEMON_KINDS, self.instance, self.lease,
                                       now if ran == 0 else self.clock())
            if not claimed:
                break
            await self._deliver(claimed[0])
            ran += 1
        return ran

    def recover(self, now: datetime) -> list[Delivery]:
        """Put back, due now, every delivery claimed by an instance that is gone."""
        released = self.queue.release_dead(self.instance, now)
        for delivery in released:
            log.warning("delivery %s (%s, intent %s, attempt %d) was interrupted: its"
                        " deliverer is gone; it runs again", delivery.key, delivery.kind,
                        delivery.intent, delivery.attempts)
        return released

    def _sleep_for(self) -> float | None:
        now = self.clock()
        due = self.queue.next_look(DAEMON_KINDS, self.instance, now)
        return None if due is None else max(0.05, (due - now).total_seconds())

    async def _deliver(self, delivery: Delivery) -> None:
        renewing = asyncio.create_task(self._renew(delivery), name=f"renew-{delivery.seq}")
        try:
            result = await self._channel(delivery)
        except asyncio.CancelledError:
            # Stopping: the channel killed the runtime. Give the claim back, so the next
            # deliverer runs it at once rather than after the lease.
            self.queue.release(delivery, self.clock())
            raise
        except Exception as exc:  # a broken runtime must not stop the others
            log.exception("delivery %s failed", delivery.key)
            result = ChannelResult(outcome="error", detail={"error": f"{type(exc).__name__}: {exc}"})
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        now = self.clock()
        route = delivery.route
        events: list[Event] = []
        about = {"route": delivery.kind, "delivery": delivery.key, "attempt": delivery.attempts}
        if result.retry and delivery.attempts < int(route.get("max_attempts", 1)):
            when = self.queue.retry(delivery, result.detail, now)
            for interrupt in delivery.interrupts:
                events.append(Event("delivered", now, interrupt, delivery.intent, None, {
                    **about, "status": "retrying", "retry_at": when.isoformat(),
                    **_safe(result.detail)}))
        else:
            if result.retry:  # out of attempts
                held = self.queue.fail(delivery, result.detail, now)
                outcome = "error"
                reason = f"gave up after {delivery.attempts} attempts"
            else:
                held = self.queue.finish(delivery, result.outcome, result.detail, now)
                outcome, reason = result.outcome, ""
            if not held:
                # Our lease ran out and another deliverer took the delivery over: it
                # records the outcome of its own attempt.
                log.warning("delivery %s: claim lost while it ran; outcome not recorded",
                            delivery.key)
                return
            if result.disable:
                why = f"the runtime answered 410 Gone at {now.isoformat()}"
                self.queue.disable_route(delivery.intent, why, now)
                reason = f"route disabled: {why}"
            if result.tokens:
                self.spend_tokens(result.tokens, now)
            for interrupt in delivery.interrupts:
                events.append(Event("delivered", now, interrupt, delivery.intent, None, {
                    **about, **_safe(result.detail)}))
                events.append(Event("outcome", now, interrupt, delivery.intent, None, {
                    "outcome": outcome, "tokens": result.tokens,
                    **({"reason": reason} if reason else {})}))
        self.record(events)

    def _started(self, delivery: Delivery, pid: int) -> None:
        """Note which process runs the delivery: if this daemon dies, whoever takes the
        delivery back stops it first (``edge.store.instances.stop_runner``). Best effort: a note
        that cannot be written must not stop a runtime that already runs."""
        try:
            self.queue.set_runner(delivery, runner_mark(pid))
        except Exception:
            log.exception("delivery %s: could not note its runtime's pid %d", delivery.key, pid)

    async def _renew(self, delivery: Delivery) -> None:
        """Until cancelled: keep the claim ``lease`` ahead of now. A renewal that fails
        (the database busy past its timeout) is tried again at the next tick: the lease
        has room for a few misses."""
        lease = self.lease(delivery.route)
        every = min(self.renew_every, lease / 3)
        while True:
            await asyncio.sleep(every)
            try:
                held = self.queue.renew(delivery, self.clock() + timedelta(seconds=lease))
            except Exception:
                log.exception("delivery %s: renewing its claim failed", delivery.key)
                continue
            if not held:
                log.warning("delivery %s: claim lost (lease ran out and was taken over)",
                            delivery.key)
                return

    async def _channel(self, delivery: Delivery) -> ChannelResult:
        if delivery.kind == "exec":
            path = write_envelope_file(self.permissions_dir, delivery.seq, delivery.permissions)
            first = (delivery.wake_doc.get("interrupts") or [{}])[0]
            env = {
                "MAILSLOT_ID": ",".join(delivery.interrupts),
                "MAILSLOT_TYPE": str(first.get("type", "")),
                "MAILSLOT_INTENT": delivery.intent,
                "MAILSLOT_SESSION": delivery.session,
                "MAILSLOT_PERMISSIONS": str(path),
                # the idempotency key: the same on every run of this delivery
                "MAILSLOT_DELIVERY": delivery.key,
            }
            return await deliver_exec(
                ExecRoute.model_validate(delivery.route), delivery.wake_doc, env,
                on_start=lambda pid: self._started(delivery, pid))
        return await deliver_webhook(WebhookRoute.model_validate(delivery.route),
                                     delivery.wake_doc, delivery.key,
                                     self.environ)


def _safe(detail: dict[str, Any]) -> dict[str, Any]:
    """Channel details are already free of secrets; keep the record small."""
    return {k: v for k, v in detail.items() if k in
            ("status", "exit_code", "error", "duration_ms", "stdout_ignored", "stdout_bytes",
             "timeout_s", "body_ignored", "retry_after_s")}
