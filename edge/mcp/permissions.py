"""Claude Code's permission relay in ``mailslot mcp --channel``: permission prompts
answered by the autonomy dial, or by the user through ``mailslot approvals``.

Claude Code sends ``notifications/claude/channel/permission_request`` ``{request_id,
tool_name, description, input_preview}`` to a channel that declares
``experimental["claude/channel/permission"]`` when it is about to ask the user for a tool
permission, and applies the first answer, ``notifications/claude/channel/permission``
``{request_id, behavior: "allow"|"deny"}``, from the channel or from its own terminal
dialog (https://code.claude.com/docs/en/channels-reference#relay-permission-prompts).

Rules this module keeps:

* Each request becomes an approval request (``edge.approvals.desk``) for the action
  ``edge.approvals.claude.claude_action`` names, in this channel's session. The dial
  allows or denies at once where it can, and the answer is sent at once; otherwise the
  request is ``pending`` (``approval.pending`` raised, routed by intents), and answered
  when it is decided: ``allow`` once approved, ``deny`` once rejected or expired. The
  channel loop (``edge.mcp.channel``) calls ``settle`` on every change of
  ``engine.sqlite3`` and at the next expiry: no polling.
* The fields are data from the session: stored and shown as data, cut to a size, never
  put into a command line. Params that cannot be read are refused (logged, nothing to
  answer) when they carry no usable ``request_id``, and denied when they do.
* If the request cannot be recorded (no edge here, a broken store), nothing is answered:
  the decision stays with the terminal's dialog. The channel never raises out of here.
* A look changes nothing on disk unless something expires: it reads through one
  connection kept open (opening a store tightens its file's mode, which inotify reports as
  a change, which would wake the loop again), and opens a desk only to expire.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.approvals.claude import (
    CLAUDE_PREFIX,
    PermissionRequest,
    claude_action,
    parse_permission_request,
    summary,
)
from edge.approvals.desk import open_desk, permission_answer
from edge.config import EdgePaths
from edge.errors import InvalidPermissionRequest
from edge.mcp.channel import Notify
from edge.store.approvals import Approval, ApprovalStore

log = logging.getLogger("mailslot.edge.mcp")

#: The experimental capability that makes Claude Code relay its permission prompts.
PERMISSION_CAPABILITY = "claude/channel/permission"
#: Claude Code → channel: a permission prompt is open.
PERMISSION_REQUEST_METHOD = "notifications/claude/channel/permission_request"
#: Channel → Claude Code: the answer.
PERMISSION_METHOD = "notifications/claude/channel/permission"
#: After a failed look at the pending requests, look again this much later.
RETRY = 5.0


class PermissionRelay:
    """The permission prompts of one MCP session. Build with the edge's paths, the
    session's name (``--session``; ``None``: none) and the session's ``notify``; hand it
    every ``permission_request``'s params (``receive``) and let the channel loop call
    ``settle``. ``changed`` is set when a request was left pending (the loop re-arms its
    timer for that request's expiry)."""

    def __init__(self, paths: EdgePaths, session: str | None, notify: Notify) -> None:
        self.paths = paths
        self.session = session
        self.notify = notify
        self.changed = asyncio.Event()
        #: approval id → Claude Code's request_id, for the requests still to be answered
        self._waiting: dict[str, str] = {}
        self._store: ApprovalStore | None = None  # for looks only (``settle``)

    def close(self) -> None:
        """Close the connection looks use (once the channel loop has ended)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    async def receive(self, params: object) -> None:
        """Handle one ``permission_request``: record it, answer it if the dial decided.
        Never raises."""
        try:
            request = parse_permission_request(params)
        except InvalidPermissionRequest as exc:
            await self._refuse(exc)
            return
        try:
            approval = await asyncio.to_thread(self._request, request)
        except Exception as exc:  # no record, so no answer: the terminal's dialog decides
            log.warning("permission request %s not recorded (%s: %s); left to the terminal",
                        request.request_id, type(exc).__name__, exc)
            return
        await self._answered(approval, request.request_id)

    async def settle(self) -> datetime | None:
        """Answer the pending requests of this session that were decided (or expired:
        expiring what is due on the way); return when the next one still pending
        expires (``None``: none is). Never raises."""
        if not self._waiting:
            return None
        log.debug("permission requests: looking at %d pending", len(self._waiting))
        try:
            rows = await asyncio.to_thread(self._look, list(self._waiting))
        except Exception as exc:
            log.warning("permission requests: cannot look (%s: %s); again in %gs",
                        type(exc).__name__, exc, RETRY)
            return datetime.now(UTC) + timedelta(seconds=RETRY)
        found = {a.id for a in rows}
        for gone in [i for i in self._waiting if i not in found]:
            del self._waiting[gone]  # its row is gone: nothing to answer from
        due: datetime | None = None
        for approval in rows:
            if approval.status == "pending":
                due = approval.expires if due is None else min(due, approval.expires)
                continue
            await self._answered(approval, self._waiting[approval.id])
        return due

    @property
    def waiting(self) -> int:
        """How many requests wait for the user's decision."""
        return len(self._waiting)

    # -- the desk, in a worker thread ---------------------------------------------------

    def _request(self, request: PermissionRequest) -> Approval:
        self.paths.require_initialized()
        with open_desk(self.paths) as desk:
            action = claude_action(desk.settings.claude, request.tool_name,
                                   request.input_preview)
            return desk.request(action, summary(request), session=self.session,
                                permission=request.to_dict())

    def _refused(self, request_id: str, reason: str) -> Approval:
        """Record a request that could not be read, denied (``by: invalid``)."""
        self.paths.require_initialized()
        with open_desk(self.paths) as desk:
            return desk.request(f"{CLAUDE_PREFIX}invalid",
                                "Claude Code sent a permission request that cannot be read",
                                session=self.session,
                                permission={"request_id": request_id, "error": reason},
                                refused=reason)

    def _look(self, ids: list[str]) -> list[Approval]:
        if self._store is None:
            self._store = ApprovalStore.open(self.paths.engine_file)
        if self._store.overdue(datetime.now(UTC)):
            with open_desk(self.paths) as desk:
                desk.expire()
        return [a for i in ids if (a := self._store.get(i)) is not None]

    # -- answers ------------------------------------------------------------------------

    async def _answered(self, approval: Approval, request_id: str) -> None:
        answer = permission_answer(approval)
        if answer is None:  # pending: answered once decided
            self._waiting[approval.id] = request_id
            self.changed.set()
            log.info("permission request %s: %s pending as approval %s", request_id,
                     approval.action, approval.id)
            return
        self._waiting.pop(approval.id, None)
        await self._send(request_id, answer["behavior"],
                         f"{approval.status} ({approval.action}, approval {approval.id})")

    async def _refuse(self, exc: InvalidPermissionRequest) -> None:
        if exc.request_id is None:
            log.warning("permission request refused: %s", exc.message)
            return
        try:
            approval = await asyncio.to_thread(self._refused, exc.request_id, exc.message)
            what = f"refused as approval {approval.id}"
        except Exception as failure:  # denied all the same: it could not be read
            what = f"refused, not recorded ({type(failure).__name__}: {failure})"
        await self._send(exc.request_id, "deny", f"{what}: {exc.message}")

    async def _send(self, request_id: str, behavior: str, why: str) -> None:
        params: dict[str, Any] = {"request_id": request_id, "behavior": behavior}
        try:
            await self.notify(PERMISSION_METHOD, params)
        except Exception as exc:  # the session is closing: Claude Code's dialog remains
            log.warning("permission request %s: %s not sent (%s)", request_id, behavior, exc)
            return
        log.info("permission request %s: %s, %s", request_id, behavior, why)
