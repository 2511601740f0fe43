"""The MCP tools of ``mailslot mcp``: each tool's arguments as a pydantic model (the JSON
Schema the client sees is generated from it), the work behind it (``Tools``) and the
table that joins them (``TOOLS``).

Rules this module keeps:

* Tools are data: ``TOOLS`` maps each name to a model of its arguments and a method of
  ``Tools``. ``Tools`` does the work with the same domain modules the CLI uses
  (``edge.intents.file``, ``edge.store.inbox``, ``edge.status``, ``edge.watches.sleeps``…),
  opening and closing its files on every call, in a worker thread: nothing is cached
  between calls, so a tool always sees what the daemon and the CLI wrote.
* Every refusal is an ``EdgeError``/``RemoteProtocolError`` carrying the code the CLI
  prints (``invalid_intent``, ``claimed_by_other``…); bad arguments are
  ``invalid_arguments``. ``edge.mcp.server`` turns them into tool errors.
* No MCP SDK here: the server (``edge.mcp.server``) is the one module that imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
)

from edge.approvals.desk import open_desk
from edge.approvals.dial import read_permissions
from edge.config import EdgePaths
from edge.delivery.manage import (
    drop_delivery,
    list_deliveries,
    retry_delivery,
    show_delivery,
)
from edge.engine.activity import report_activity
from edge.engine.audit import open_log
from edge.engine.explain import explain
from edge.errors import (
    InvalidArguments,
    InvalidIntent,
    InvalidWatch,
    NoRecord,
    NotInitialized,
    NotPending,
    UnknownIntent,
    UnknownWatch,
)
from edge.intents.declarations import Declarations, Watch
from edge.intents.edit import (
    add_intent,
    add_watch,
    remove_intent,
    remove_watch,
    set_paused,
    set_watch_paused,
)
from edge.intents.file import dotted, load_intents, validation_problems
from edge.intents.model import Duration, Intent, Strict, StrictBool
from edge.intents.resume import resume_intent
from edge.intents.summary import intent_rows
from edge.status import edge_status, watch_runtime
from edge.store.claims import DEFAULT_LEASE, check_lease, check_owner
from edge.store.inbox import Inbox
from edge.watches.folders import check_folders
from edge.watches.sleeps import start_sleep
from shared.encoding import iso_time
from shared.tokens import check_opaque, check_session

# -- errors ---------------------------------------------------------------------------


# -- tool arguments: the schemas the client sees --------------------------------------

Lease = Annotated[Duration, AfterValidator(check_lease)]
Owner = Annotated[str, AfterValidator(check_owner),
                  Field(description="claim owner name (letters, digits, '_.:@-'); default:"
                                    " this MCP server's own")]
InterruptId = Annotated[str, AfterValidator(lambda v: check_opaque(v, "interrupt id")),
                        Field(description="interrupt id (a ULID)")]
Session = Annotated[str, AfterValidator(check_session), Field(description="agent session")]
ItemId = Annotated[str, Field(min_length=1)]


class NoArgs(Strict):
    pass


class IntentIdArgs(Strict):
    id: ItemId = Field(description="intent id")


class WatchIdArgs(Strict):
    id: ItemId = Field(description="watch id")


class IntentAddArgs(Strict):
    intent: dict[str, Any]


class WatchAddArgs(Strict):
    watch: dict[str, Any]


class InboxNextArgs(Strict):
    claim: StrictBool = Field(default=False, description="lease the item to owner, so that"
                              " no other puller gets it; ack or nack it before the lease ends")
    lease: Lease | None = Field(default=None, description="with claim: 1 s to 24 h"
                                f" (default {DEFAULT_LEASE:g} s)")
    owner: Owner | None = None


class InboxAckArgs(Strict):
    id: InterruptId
    owner: Owner | None = None


class InboxNackArgs(Strict):
    id: InterruptId
    delay: Duration = Field(default=0.0, description="hide it from inbox_next this long")
    owner: Owner | None = None


class SleepArgs(Strict):
    duration: Duration = Field(description="clamped to 60 s .. 24 h")
    reason: str = Field(min_length=1, description="shown in the tick when the sleep ends")
    session: Session | None = None
    cache_aware: StrictBool = Field(default=False, description="snap the duration to"
                                    " prompt-cache lifetimes (270 s / 1200 s)")


class ActivityArgs(Strict):
    session: Session | None = Field(default=None, description="only this session"
                                    " (default: everywhere)")


class ApproveRequestArgs(Strict):
    action: str = Field(description="the action beyond your envelope, e.g. deploy:staging")
    summary: str = Field(description="what you want to do and why, for the user")
    session: str | None = None
    intent: str | None = None


class ApprovalIdArgs(Strict):
    id: str


class ExplainArgs(Strict):
    id: InterruptId


class DeliveriesListArgs(Strict):
    which: Literal["failed", "pending"] | None = Field(
        default=None, description="failed: gave up or ended in error (retry or drop them);"
        " pending: on their way; default: all")
    limit: int = Field(default=50, ge=0, le=10_000, description="newest N (0: all)")


class DeliveryIdArgs(Strict):
    id: str = Field(min_length=1, max_length=64,
                    description="the delivery's key (msg_…) or number")


# -- the tools --------------------------------------------------------------------------


class Tools:
    """The work behind each tool, synchronous (the server runs it in a worker thread).
    Each method takes its validated arguments and returns a JSON-able dict, or raises an
    ``EdgeError``/``RemoteProtocolError`` whose ``code`` the caller reports."""

    def __init__(self, paths: EdgePaths, owner: str) -> None:
        self.paths = paths
        self.owner = owner

    def status(self, _: NoArgs) -> dict[str, Any]:
        return edge_status(self.paths)

    # -- intents ------------------------------------------------------------------------

    def intents_list(self, _: NoArgs) -> dict[str, Any]:
        return {"intents": intent_rows(load_intents(self.paths.intents_file).intents)}

    def intent_add(self, args: IntentAddArgs) -> dict[str, Any]:
        try:
            intent = Intent.model_validate(args.intent)
        except ValidationError as exc:
            raise InvalidIntent(_problems(exc, Intent)) from None
        add_intent(self.paths.intents_file, intent)
        return intent.model_dump(mode="json")

    def intent_pause(self, args: IntentIdArgs) -> dict[str, Any]:
        if not set_paused(self.paths.intents_file, args.id, True):
            raise UnknownIntent(f"no intent {args.id!r} in {self.paths.intents_file}")
        return {"id": args.id, "paused": True}

    def intent_resume(self, args: IntentIdArgs) -> dict[str, Any]:
        """Resuming also lifts a route a runtime had turned away (HTTP 410), as
        ``mailslot intent resume`` does."""
        return {"id": args.id, "paused": False,
                "route_enabled": resume_intent(self.paths, args.id)}

    def intent_remove(self, args: IntentIdArgs) -> dict[str, Any]:
        if not remove_intent(self.paths.intents_file, args.id):
            raise UnknownIntent(f"no intent {args.id!r} in {self.paths.intents_file}")
        return {"removed": args.id}

    # -- watches ------------------------------------------------------------------------

    def watches_list(self, _: NoArgs) -> dict[str, Any]:
        watches = load_intents(self.paths.intents_file).watches
        runtime = watch_runtime(self.paths)
        rows = []
        for watch in watches:
            row = runtime.get(watch.id)
            rows.append({
                "id": watch.id, "kind": watch.kind, "description": watch.description,
                "state": "paused" if watch.paused else (row.state if row else "active"),
                "last_run": iso_time(row.last_run if row else None),
                "next_run": iso_time(row.next_run if row else None),
                "last_result": row.last_result if row else None,
            })
        return {"watches": rows}

    def watch_add(self, args: WatchAddArgs) -> dict[str, Any]:
        # Validated as the one watch of a file, so that errors are worded as for a file
        # (``schedule.every: …``), without the union's tags pydantic puts in locations.
        try:
            watch = Declarations.model_validate({"watches": [args.watch]}).watches[0]
        except ValidationError as exc:
            raise InvalidWatch(_problems(exc, Declarations, skip=2)) from None
        check_folders(watch)
        add_watch(self.paths.intents_file, watch)
        return watch.model_dump(mode="json")

    def watch_pause(self, args: WatchIdArgs) -> dict[str, Any]:
        if not set_watch_paused(self.paths.intents_file, args.id, True):
            raise UnknownWatch(f"no watch {args.id!r} in {self.paths.intents_file}")
        return {"id": args.id, "paused": True}

    def watch_resume(self, args: WatchIdArgs) -> dict[str, Any]:
        if not set_watch_paused(self.paths.intents_file, args.id, False):
            raise UnknownWatch(f"no watch {args.id!r} in {self.paths.intents_file}")
        return {"id": args.id, "paused": False}

    def watch_remove(self, args: WatchIdArgs) -> dict[str, Any]:
        if not remove_watch(self.paths.intents_file, args.id):
            raise UnknownWatch(f"no watch {args.id!r} in {self.paths.intents_file}")
        return {"removed": args.id}

    # -- inbox --------------------------------------------------------------------------

    def _inbox(self) -> Inbox:
        if not self.paths.inbox_file.exists():
            raise NotInitialized(f"no inbox at {self.paths.inbox_file}; run `mailslot edge init`")
        return Inbox.open(self.paths.inbox_file)

    def inbox_next(self, args: InboxNextArgs) -> dict[str, Any]:
        if not args.claim and (args.lease is not None or args.owner is not None):
            raise InvalidArguments("lease and owner apply only with claim")
        with self._inbox() as inbox:
            if args.claim:
                lease = DEFAULT_LEASE if args.lease is None else args.lease
                item = inbox.claim(args.owner or self.owner, lease)
            else:
                item = inbox.next()
        return {"item": None if item is None else item.to_dict()}

    def inbox_ack(self, args: InboxAckArgs) -> dict[str, Any]:
        with self._inbox() as inbox:
            if not inbox.ack(args.id, args.owner or self.owner):
                raise NotPending(args.id)
        return {"id": args.id, "acked": True}

    def inbox_nack(self, args: InboxNackArgs) -> dict[str, Any]:
        with self._inbox() as inbox:
            if not inbox.nack(args.id, args.delay, args.owner or self.owner):
                raise NotPending(args.id)
        return {"id": args.id, "nacked": True, "delay": args.delay}

    # -- time, activity, the log --------------------------------------------------------

    def sleep(self, args: SleepArgs) -> dict[str, Any]:
        return start_sleep(self.paths, args.duration, args.reason, args.session,
                           cache_aware_snap=args.cache_aware)

    def activity(self, args: ActivityArgs) -> dict[str, Any]:
        return report_activity(self.paths, args.session)

    def approve_request(self, args: ApproveRequestArgs) -> dict[str, Any]:
        self.paths.require_initialized()
        with open_desk(self.paths) as desk:
            approval = desk.request(args.action, args.summary, session=args.session,
                                    intent=args.intent, held=read_permissions(os.environ))
        return approval.to_dict()

    def approval_get(self, args: ApprovalIdArgs) -> dict[str, Any]:
        self.paths.require_initialized()
        with open_desk(self.paths) as desk:
            return desk.get(args.id).to_dict()

    # -- deliveries -----------------------------------------------------------------------

    def deliveries_list(self, args: DeliveriesListArgs) -> dict[str, Any]:
        return {"deliveries": list_deliveries(self.paths, args.which, args.limit)}

    def deliveries_show(self, args: DeliveryIdArgs) -> dict[str, Any]:
        return show_delivery(self.paths, args.id)

    def deliveries_retry(self, args: DeliveryIdArgs) -> dict[str, Any]:
        return retry_delivery(self.paths, args.id)

    def deliveries_drop(self, args: DeliveryIdArgs) -> dict[str, Any]:
        return drop_delivery(self.paths, args.id)

    def explain(self, args: ExplainArgs) -> dict[str, Any]:
        entries = []
        log = open_log(self.paths)  # None if there is none: nothing is created
        if log is not None:
            with log:
                entries = log.trace(args.id)
        if not entries:
            raise NoRecord(f"no record of interrupt {args.id} in the activity log")
        zone = datetime.now().astimezone().tzinfo or UTC
        return {"interrupt": args.id, "trace": explain(args.id, entries, tz=zone),
                "entries": [e.to_dict() for e in entries]}


_WATCH: TypeAdapter[Watch] = TypeAdapter(Watch)


def _problems(exc: ValidationError, root: type[BaseModel], skip: int = 0) -> str:
    """pydantic's errors in words, each named by its field (``policy.cooldown: …``);
    ``skip`` drops that many leading parts of each location."""
    return "; ".join(f"{dotted(loc[skip:])}: {why}" if loc[skip:] else why
                     for loc, why in validation_problems(exc, root))


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it is for, its arguments and the work."""

    name: str
    description: str
    args: type[Strict]
    run: Callable[[Tools, Any], dict[str, Any]]
    #: The key of the result whose text is the tool's text content (default: all, JSON).
    text_key: str | None = None
    #: A model whose JSON Schema is embedded as the one argument ``arg`` (intent, watch).
    embed: tuple[str, Mapping[str, Any]] | None = field(default=None)

    def parse(self, arguments: Mapping[str, Any] | None) -> Any:
        """The arguments as the tool's model; ``InvalidArguments`` naming each field that
        does not fit."""
        try:
            return self.args.model_validate(arguments or {})
        except ValidationError as exc:
            raise InvalidArguments(_problems(exc, self.args)) from None

    def input_schema(self) -> dict[str, Any]:
        """The tool's JSON Schema, in the shape generic clients (the MCP Inspector, form
        builders) handle: an object with ``properties`` at the top, every embedded model
        typed ``object`` even when it is a union (a ``oneOf`` alone makes them send a
        string), and no OpenAPI-only ``discriminator`` keyword (strict validators refuse
        unknown keywords; each ``oneOf`` branch pins its ``kind`` with ``const`` anyway)."""
        if self.embed is not None:
            arg, schema = self.embed
            body = {k: v for k, v in schema.items() if k != "$defs"}
            body.setdefault("type", "object")
            schema = {"type": "object", "properties": {arg: body}, "required": [arg],
                      "additionalProperties": False, "$defs": schema.get("$defs", {})}
        else:
            schema = self.args.model_json_schema()
            schema.pop("title", None)
        schema.setdefault("properties", {})
        portable: dict[str, Any] = _portable(schema)
        return portable


def _portable(schema: Any) -> Any:
    """``schema`` without pydantic's ``discriminator`` (OpenAPI, not JSON Schema)."""
    if isinstance(schema, dict):
        return {k: _portable(v) for k, v in schema.items()
                if not (k == "discriminator" and isinstance(v, dict) and "propertyName" in v)}
    if isinstance(schema, list):
        return [_portable(v) for v in schema]
    return schema


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("status", "This edge: identity, relay, daemon running and connected, pending"
             " interrupts per priority, last delivery, rejected count, watch counters.",
             NoArgs, Tools.status),
    ToolSpec("intents_list", "The intents in intents.toml: id, paused, critical, route and"
             " a summary of what they match.", NoArgs, Tools.intents_list),
    ToolSpec("intent_add", "Append an intent to intents.toml (comments and layout are kept;"
             " the daemon reloads it). The intent is a JSON object with the fields of an"
             " [[intent]] table: id, match, policy, judge, route, grant, critical, paused."
             " Durations are seconds or strings like '30m'.",
             IntentAddArgs, Tools.intent_add,
             embed=("intent", Intent.model_json_schema())),
    ToolSpec("intent_pause", "Pause an intent: it matches nothing until resumed.",
             IntentIdArgs, Tools.intent_pause),
    ToolSpec("intent_resume", "Resume a paused intent (and re-enable a route a runtime had"
             " turned away).", IntentIdArgs, Tools.intent_resume),
    ToolSpec("intent_remove", "Remove an intent from intents.toml.",
             IntentIdArgs, Tools.intent_remove),
    ToolSpec("watches_list", "The watches (file, command, timer, absence, tick): state, last"
             " and next run, last result.", NoArgs, Tools.watches_list),
    ToolSpec("watch_add", "Add a watch to intents.toml: a JSON object with the fields of a"
             " [[watch]] table, 'kind' one of file, command, timer, absence, tick. A file"
             " watch's folder must exist.", WatchAddArgs, Tools.watch_add,
             embed=("watch", _WATCH.json_schema())),
    ToolSpec("watch_pause", "Pause a watch.", WatchIdArgs, Tools.watch_pause),
    ToolSpec("watch_resume", "Resume a paused watch.", WatchIdArgs, Tools.watch_resume),
    ToolSpec("watch_remove", "Remove a watch from intents.toml.", WatchIdArgs,
             Tools.watch_remove),
    ToolSpec("inbox_next", "The next pending interrupt (most urgent, oldest first), or null."
             " With claim=true it is leased to owner: no other puller gets it until you ack"
             " or nack it or the lease ends.", InboxNextArgs, Tools.inbox_next),
    ToolSpec("inbox_ack", "Mark a pending interrupt handled. An interrupt claimed by another"
             " owner is refused (claimed_by_other).", InboxAckArgs, Tools.inbox_ack),
    ToolSpec("inbox_nack", "Put a pending interrupt back, optionally hidden for a delay; it"
             " loses its claim.", InboxNackArgs, Tools.inbox_nack),
    ToolSpec("sleep", "Do not wake this session for a while (60 s to 24 h), then tick it;"
             " a new sleep replaces the session's previous one, a real wake ends it early.",
             SleepArgs, Tools.sleep),
    ToolSpec("activity", "Report that the user is active (in a session, or everywhere):"
             " suppresses wakes of intents with suppress_when_active and resets reminder"
             " counts.", ActivityArgs, Tools.activity),
    ToolSpec("approve_request", "Ask to act beyond your permission envelope. The autonomy"
             " dial answers at once (allowed / denied) or leaves it pending for the user;"
             " the decision then arrives as an approval.* interrupt (and on the channel).",
             ApproveRequestArgs, Tools.approve_request),
    ToolSpec("approval_get", "One approval request: its status (pending, approved,"
             " rejected, expired, allowed, denied), action and note.",
             ApprovalIdArgs, Tools.approval_get),
    ToolSpec("deliveries_list", "Wakes on their way to a runtime (exec, webhook, mcp), newest"
             " first: status, attempts, last error. which=failed: those that gave up or"
             " ended in error.", DeliveriesListArgs, Tools.deliveries_list),
    ToolSpec("deliveries_show", "One delivery: its route, last attempt, the wake it carries.",
             DeliveryIdArgs, Tools.deliveries_show),
    ToolSpec("deliveries_retry", "Send a delivery that gave up (or ended in error) again,"
             " once, with the same key; not_retryable if it is pending, running or"
             " delivered, route_disabled while its route is disabled.",
             DeliveryIdArgs, Tools.deliveries_retry),
    ToolSpec("deliveries_drop", "Remove a delivery that is not running and was not"
             " delivered: it is never sent.", DeliveryIdArgs, Tools.deliveries_drop),
    ToolSpec("explain", "Why an interrupt did or did not wake an agent: its decision trace"
             " from the activity log, in plain words.", ExplainArgs, Tools.explain,
             text_key="trace"),
)
