"""A hook: what the relay does with the webhooks one provider posts to
``/v1/hooks/<hook id>`` for one identity. Data, frozen and strict (unknown fields are
refused), validated field by field with a reason a person can act on.

* ``id`` is the URL's secret part: ``h`` and ``secrets.token_urlsafe(24)``, 33 characters.
* ``source`` says how a delivery is verified (``relay.hooks.verify``): ``github``,
  ``stripe``, ``slack``, ``standard-webhooks``, ``hmac`` (header, algorithm, encoding,
  prefix, timestamp: for services that do their own thing) or ``none`` (nothing is
  checked: the URL alone is the secret; only with ``accept_unsigned = true``).
* ``secrets``: the current secret first, then at most one previous one that verifies
  until ``until`` (unix seconds; the rotation's grace period). A secret never appears in
  ``shown()``, in a ``repr`` or in a log line: only ``stored()`` reveals it.
* ``filter``, ``type``, ``priority``, ``keep``, ``store_body``: what becomes of a verified
  delivery (``relay.hooks.project``).
* ``rate``/``burst``: the hook's own token bucket (deliveries per second), on top of the
  account's quotas.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from relay.hooks.stdwebhooks import check_secret
from shared.envelope import IdentityId, Name, Priority
from shared.limits import PAYLOAD_MAX_BYTES
from shared.match import Predicate

#: What the route answers to a delivery larger than this (413), before verifying it.
BODY_MAX_BYTES = 256 * 1024
#: Every source but ``hmac`` has its provider's documented tolerance.
TOLERANCE_SECONDS = 300
#: The most a hook's projection and stored body may take together: the rest of the
#: payload cap is for the keys and the list of what was left out.
PAYLOAD_BUDGET = PAYLOAD_MAX_BYTES - 4 * 1024

HOOK_ID_RE = r"^[A-Za-z0-9_-]{32,64}$"
HEADER_RE = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"
#: A path into the body: keys separated by dots (``pull_request.html_url``).
PATH_RE = r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,15}$"

Kind = Literal["github", "stripe", "slack", "standard-webhooks", "hmac", "none"]
KINDS: tuple[str, ...] = ("github", "stripe", "slack", "standard-webhooks", "hmac", "none")
Header = Annotated[str, Field(pattern=HEADER_RE), BeforeValidator(
    lambda v: v.lower() if isinstance(v, str) else v)]
Path = Annotated[str, Field(pattern=PATH_RE, max_length=100)]
Strings = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GithubSource(_Frozen):
    """``X-Hub-Signature-256: sha256=<hex>``; ``X-GitHub-Event``; ``X-GitHub-Delivery``."""

    kind: Literal["github"] = "github"


class StripeSource(_Frozen):
    """``Stripe-Signature: t=…,v1=…`` over ``{t}.{body}``; the event's ``id`` and ``type``."""

    kind: Literal["stripe"] = "stripe"


class SlackSource(_Frozen):
    """``X-Slack-Signature: v0=<hex>`` over ``v0:{X-Slack-Request-Timestamp}:{body}``."""

    kind: Literal["slack"] = "slack"


class StandardSource(_Frozen):
    """``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64> …``."""

    kind: Literal["standard-webhooks"] = "standard-webhooks"


_SIGNED_PART = re.compile(r"\{(body|timestamp|id)\}")


class HmacSource(_Frozen):
    """An HMAC of the body (and, if ``signed`` says so, a timestamp and an id) in one
    header: ``{prefix}{hex or base64 digest}``."""

    kind: Literal["hmac"] = "hmac"
    header: Header
    algorithm: Literal["sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    #: Text before the digest in the header, e.g. ``sha256=``.
    prefix: Annotated[str, Field(pattern=r"^[\x21-\x7e]{0,32}$")] = ""
    #: A header with the signing time in unix seconds; then ``signed`` must hold it.
    timestamp_header: Header | None = None
    tolerance: Annotated[int, Field(strict=True, ge=1, le=86400)] = TOLERANCE_SECONDS
    #: What is signed: ``{body}`` (the exact bytes received), with ``{timestamp}`` and
    #: ``{id}`` (the headers' values) and literal text around them.
    signed: Annotated[str, Field(pattern=r"^[\x20-\x7e]{6,128}$")] = "{body}"
    #: A header with the delivery's id (deduplication) and one with its event name.
    id_header: Header | None = None
    event_header: Header | None = None

    @model_validator(mode="after")
    def _signed_fits(self) -> HmacSource:
        parts = _SIGNED_PART.findall(self.signed)
        if parts.count("body") != 1:
            raise ValueError("signed must hold {body} exactly once")
        if len(parts) != len(set(parts)):
            raise ValueError("signed holds each of {timestamp} and {id} at most once")
        if "{" in _SIGNED_PART.sub("", self.signed) or "}" in _SIGNED_PART.sub("", self.signed):
            raise ValueError("signed knows {body}, {timestamp} and {id} only")
        if ("timestamp" in parts) != (self.timestamp_header is not None):
            raise ValueError("a timestamp_header must be signed ({timestamp} in signed), and "
                             "{timestamp} needs a timestamp_header: an unsigned timestamp "
                             "proves nothing")
        if "id" in parts and self.id_header is None:
            raise ValueError("{id} in signed needs an id_header")
        return self


class UnsignedSource(_Frozen):
    """Nothing is verified: whoever knows the URL can post. Only on purpose."""

    kind: Literal["none"] = "none"
    accept_unsigned: Literal[True] = Field(
        description="must be true: the URL alone is the secret")
    id_header: Header | None = None
    event_header: Header | None = None


HookSource = Annotated[
    GithubSource | StripeSource | SlackSource | StandardSource | HmacSource | UnsignedSource,
    Field(discriminator="kind"),
]


class HookSecret(_Frozen):
    """One signing secret; ``until`` (unix seconds) ends a previous one's grace period."""

    value: SecretStr
    until: Annotated[int, Field(strict=True, ge=0)] | None = None

    @field_validator("value")
    @classmethod
    def _printable(cls, value: SecretStr) -> SecretStr:
        if not re.fullmatch(r"[\x20-\x7e]{8,512}", value.get_secret_value()):
            raise ValueError("a secret is 8 to 512 printable ASCII characters")
        return value

    @field_serializer("value")
    def _reveal_only_when_asked(self, value: SecretStr, info: SerializationInfo) -> str:
        context = info.context if isinstance(info.context, dict) else {}
        return value.get_secret_value() if context.get("secrets") == "reveal" else "**********"


#: Sources whose provider makes the secret, for an endpoint that exists: such a hook may
#: be created without one (every delivery is then 401 ``bad_signature``) and get it with
#: ``rotated`` once the provider shows it (Stripe: after the endpoint is registered).
PROVIDER_SECRET = ("stripe", "slack")

#: The fields a hook's filter and priority rules may test.
DOC_ROOTS = ("event", "payload", "headers")


class HookFilter(_Frozen):
    """All given criteria must hold: ``event`` globs over the event name (``push``,
    ``invoice.*``); ``all`` predicates must all hold and, if ``any`` is given, one of
    them; over ``{"event": …, "payload": <the body>, "headers": {lowercase name: value}}``."""

    event: Strings | None = None
    all: list[Predicate] = Field(default=[], max_length=32)
    any: list[Predicate] = Field(default=[], max_length=32)

    @model_validator(mode="after")
    def _fields_exist(self) -> HookFilter:
        for predicate in [*self.all, *self.any]:
            if predicate.field.split(".")[0] not in DOC_ROOTS:
                raise ValueError(
                    f"{predicate.field!r}: a hook tests event, payload.<path> or "
                    f"headers.<name> (e.g. payload.{predicate.field})")
        return self


class PriorityRule(_Frozen):
    when: HookFilter
    priority: Priority


#: ``{event}``, ``{payload.a.b}`` or ``{headers.name}`` in a type template.
PLACEHOLDER = re.compile(
    r"\{(event|payload(?:\.[A-Za-z0-9_-]{1,64}){1,16}|headers\.[A-Za-z0-9-]{1,64})\}")
_LITERAL = re.compile(r"[A-Za-z0-9:/-]+")

#: A piece of a template segment: ``(False, literal text)`` or ``(True, field path)``.
Piece = tuple[bool, str]


def template_segments(template: str) -> list[list[Piece]]:
    """The template cut at its dots (outside placeholders) into segments of pieces."""
    segments: list[list[Piece]] = [[]]

    def literal(text: str) -> None:
        first, *rest = text.split(".")
        if first:
            segments[-1].append((False, first))
        for part in rest:
            segments.append([(False, part)] if part else [])

    position = 0
    for found in PLACEHOLDER.finditer(template):
        literal(template[position:found.start()])
        segments[-1].append((True, found.group(1)))
        position = found.end()
    literal(template[position:])
    return segments


def check_template(value: str) -> str:
    """A type template: dot-separated segments, each literal text of the type alphabet
    mixed with placeholders; the first segment literal (the type's fixed prefix)."""
    if not 1 <= len(value) <= 128:
        raise ValueError("a type template is 1 to 128 characters")
    segments = template_segments(value)
    if not all(segments):
        raise ValueError("a type template has no empty segment (no '..', no dot at an end)")
    first = segments[0]
    if len(first) != 1 or first[0][0] or not first[0][1][0].isalnum():
        raise ValueError("a type template starts with a literal word (e.g. github.{event})")
    for segment in segments:
        for is_field, text in segment:
            if not is_field and not _LITERAL.fullmatch(text):
                raise ValueError(
                    f"{text!r}: literal text is letters, digits, ':', '/', '-'; "
                    "placeholders are {event}, {payload.<path>}, {headers.<name>}")
    return value


Template = Annotated[str, BeforeValidator(lambda v: check_template(v) if isinstance(v, str) else v)]

#: The type a hook's interrupts get unless it says otherwise.
DEFAULT_TYPE: dict[str, str] = {
    "github": "github.{event}.{payload.action}",
    "stripe": "stripe.{event}",
    "slack": "slack.{event}",
    "standard-webhooks": "webhook.{event}",
    "hmac": "webhook.{event}",
    "none": "webhook.{event}",
}

#: What a hook keeps of the body unless it lists its own paths: enough to decide
#: whether to look, with a link to the thing itself.
DEFAULT_KEEP: dict[str, tuple[str, ...]] = {
    "github": ("action", "repository.full_name", "sender.login", "ref",
               "pull_request.number", "pull_request.title", "pull_request.html_url",
               "issue.number", "issue.title", "issue.html_url", "workflow_run.conclusion",
               "workflow_run.html_url", "check_run.conclusion", "comment.html_url"),
    "stripe": ("id", "type", "livemode", "data.object.id", "data.object.object",
               "data.object.status", "data.object.amount", "data.object.currency"),
    "slack": ("team_id", "event_id", "event.type", "event.channel", "event.user",
              "event.text", "event.ts"),
    "standard-webhooks": ("type", "timestamp"),
    "hmac": (),
    "none": (),
}


class Hook(_Frozen):
    """One hook. Build it with ``new_hook`` (id and secret generated), change it with
    ``rotated``/``model_copy``, store ``stored()``, show ``shown()``."""

    name: Name
    id: Annotated[str, Field(pattern=HOOK_ID_RE)]
    to: IdentityId
    source: HookSource
    secrets: Annotated[list[HookSecret], Field(max_length=2)] = []
    paused: Annotated[bool, Field(strict=True)] = False
    filter: HookFilter = HookFilter()
    #: The interrupt's type (``relay.hooks.project.render_type``); default per source.
    type: Template | None = None
    #: The first rule that matches sets the priority; else ``default_priority``.
    priority: Annotated[list[PriorityRule], Field(max_length=32)] = []
    default_priority: Priority = Priority.next
    #: Paths of the body the interrupt keeps; default per source (``DEFAULT_KEEP``).
    keep: Annotated[list[Path], Field(max_length=32)] | None = None
    keep_max_bytes: Annotated[int, Field(strict=True, ge=64, le=PAYLOAD_BUDGET)] = 2048
    #: Keep the whole body too (``payload.body``), if it fits ``body_max_bytes``.
    store_body: Annotated[bool, Field(strict=True)] = False
    body_max_bytes: Annotated[int, Field(strict=True, ge=64, le=PAYLOAD_BUDGET)] = 8192
    #: Deliveries per second this hook takes (a token bucket of ``burst``); None: no
    #: limit of its own.
    rate: Annotated[float, Field(gt=0, le=10_000)] | None = None
    burst: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 20

    @model_validator(mode="after")
    def _consistent(self) -> Hook:
        kind = self.source.kind
        if kind == "none" and self.secrets:
            raise ValueError("a hook with source none has no secrets")
        if kind not in PROVIDER_SECRET and kind != "none" and not self.secrets:
            raise ValueError(f"a {kind} hook needs its signing secret")
        if self.secrets and self.secrets[0].until is not None:
            raise ValueError("the current secret (the first) has no end")
        if len(self.secrets) == 2 and self.secrets[1].until is None:
            raise ValueError("the previous secret (the second) needs its grace end, until")
        for secret in self.secrets:
            check_secret_for(kind, secret.value.get_secret_value())
        if self.store_body and self.keep_max_bytes + self.body_max_bytes > PAYLOAD_BUDGET:
            raise ValueError(f"keep_max_bytes + body_max_bytes must be at most "
                             f"{PAYLOAD_BUDGET} (the payload cap, less room for keys)")
        return self

    def type_template(self) -> str:
        return self.type or DEFAULT_TYPE[self.source.kind]

    def keep_paths(self) -> tuple[str, ...]:
        return tuple(self.keep) if self.keep is not None else DEFAULT_KEEP[self.source.kind]

    def valid_secrets(self, now: float) -> list[str]:
        """The secrets that verify at ``now``: the current one, and the previous one
        until its grace period ends."""
        return [s.value.get_secret_value() for s in self.secrets
                if s.until is None or now < s.until]

    def rotated(self, new_secret: str, now: float, grace: float) -> Hook:
        """This hook with ``new_secret`` current and the current one valid ``grace``
        more seconds (a previous one before it is dropped)."""
        if self.source.kind == "none":
            raise ValueError("a hook with source none has no secret to rotate")
        kept = [HookSecret(value=SecretStr(new_secret))]
        if grace > 0 and self.secrets:
            kept.append(HookSecret(value=self.secrets[0].value, until=int(now + grace)))
        return Hook.model_validate({**self.stored(), "secrets": [
            {"value": s.value.get_secret_value(), "until": s.until} for s in kept]})

    def stored(self) -> dict[str, Any]:
        """The hook as JSON, secrets included: for the relay's store only."""
        return self.model_dump(mode="json", exclude_none=True, context={"secrets": "reveal"})

    def shown(self) -> dict[str, Any]:
        """The hook as JSON with every secret masked: for ``hook show``, logs, answers."""
        return self.model_dump(mode="json", exclude_none=True)


def check_secret_for(kind: str, secret: str) -> str:
    """``secret`` if a ``kind`` hook can verify with it, else ``ValueError``."""
    if kind == "standard-webhooks":
        if not re.fullmatch(r"(whsec_)?[A-Za-z0-9+/]+={0,2}", secret):
            raise ValueError("a Standard Webhooks secret is whsec_ followed by base64")
        check_secret(secret)
    return secret


def new_secret(kind: str) -> str | None:
    """A fresh signing secret for a ``kind`` hook, where mailslot makes it (GitHub lets
    the user choose one, Standard Webhooks and generic HMAC senders take one); ``None``
    where the provider makes it (``PROVIDER_SECRET``: paste theirs) or there is none."""
    if kind in ("github", "hmac"):
        return secrets.token_urlsafe(32)
    if kind == "standard-webhooks":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    return None


def new_hook_id() -> str:
    """An unguessable hook id: 24 random bytes, URL-safe (the URL is the address, the
    secret verifies; for ``none`` the URL is all there is), after an ``h``: an id that
    began with ``-`` (one in 64 did) was taken for an option by ``mailslot relay hook
    show ID`` and every other command that takes it."""
    return "h" + secrets.token_urlsafe(24)


def new_hook(name: str, to: str, source: dict[str, Any], *, secret: str | None = None,
             **options: Any) -> tuple[Hook, str | None]:
    """A new hook and, when mailslot generated its secret, that secret (show it once).
    ``secret``: the provider's (Stripe, Slack) or the user's own. Raises pydantic's
    ``ValidationError`` naming the field that is wrong."""
    kind = source.get("kind") if isinstance(source, dict) else None
    generated = None
    if secret is None and isinstance(kind, str):
        secret = generated = new_secret(kind)
    hook = Hook.model_validate({
        "name": name, "id": new_hook_id(), "to": to, "source": source,
        "secrets": [] if secret is None else [{"value": secret}], **options})
    return hook, generated


def describe_error(exc: ValidationError) -> str:
    """A hook's validation errors in words, one ``field: reason`` per line, never with
    the input (which may hold a secret)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "hook"
        lines.append(f"{where}: {error['msg']}")
    return "\n".join(lines)
