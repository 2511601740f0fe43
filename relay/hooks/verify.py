"""Verifying a webhook delivery at the door: one verifier per source, on the exact bytes
received (never re-serialised), with the ``now`` the caller passes (pure, testable).

What the route (``POST /v1/hooks/<hook id>``) does, in this order, and answers:

1. Look the hook up: unknown 404 ``unknown_hook``, deleted 410 ``hook_deleted``
   (``HookGone``), paused 503 ``hook_paused`` with ``Retry-After``, nothing stored (so
   that the provider delivers it again after ``resume``).
2. Cap the body before reading more of it (``model.BODY_MAX_BYTES``: 413) and require
   JSON where the source sends JSON (415).
3. ``verify`` (this module): 400 ``missing_header``/``malformed_header`` for what the
   source always sends and did not, 401 ``bad_signature`` when no secret of the hook
   (``Hook.valid_secrets(now)``: the current one, and the previous one in its grace
   period) verifies, 401 ``stale_timestamp`` when one does but the signed time is more
   than the tolerance (300 s; ``hmac``: its own) away from ``now``. Nothing is parsed
   before this; nothing is stored on a refusal.
4. The hook's rate (429 ``rate_limited`` with ``Retry-After``) and the account's quotas.
5. ``project.process``: parse the body, answer a handshake (GitHub ``ping``, Slack
   ``url_verification``) with 200 and store nothing, apply the filter (a refused event
   is counted per hook and answered 200 ``filtered``: the provider must not retry it),
   render the type, pick the priority, project the payload.
6. Publish the interrupt, attested by the relay (source kind ``webhook``, name = the
   hook's name, ``event_id`` = the delivery id), with a ``Nats-Msg-Id`` made of the
   identity, the hook id and the delivery id (a provider's ids are unique only within
   that provider): a redelivery is stored once and answered 200. JetStream's duplicate
   window is the stream's ``duplicate_window`` (600 s by default), shorter than what
   providers retry over (Stripe: days; GitHub: a manual redelivery, any time), so the
   route also keeps the ids per hook for 7 days (``relay.hooks.registry``
   ``HookRegistry.claim``). No delivery id (``hmac``/``none`` without an id header):
   no deduplication. 2xx only after JetStream acknowledged; 503 when the store is down,
   so that the provider retries.

Per source, what is checked (all comparisons with ``hmac.compare_digest``):

==================  ===================================================================
github              ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``;
                    ``X-GitHub-Event`` (the event) and ``X-GitHub-Delivery`` (the id)
                    required. No timestamp: GitHub signs none.
stripe              ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=…][,v0=…]``: a ``v1`` is
                    HMAC-SHA256(secret, ``{t}.{body}``); any ``v1`` may match (Stripe
                    sends one per active secret); ``v0`` is ignored; ``t`` within 300 s.
slack               ``X-Slack-Signature: v0=<hex HMAC-SHA256(secret,
                    "v0:{X-Slack-Request-Timestamp}:{body}")>``; the timestamp within
                    300 s.
standard-webhooks  ``webhook-id``, ``webhook-timestamp`` (within 300 s),
                    ``webhook-signature: v1,<base64> [v1,<base64> …]`` (space-separated;
                    other versions ignored), signed with the ``whsec_`` secret by the
                    ``standardwebhooks`` library; ``webhook-id`` is the id.
hmac                the hook's header, ``{prefix}{hex|base64}`` of HMAC-SHA256/512 over
                    ``signed`` (``{body}``, and ``{timestamp}``/``{id}`` from the hook's
                    headers), the timestamp within the hook's tolerance.
none                nothing (``accept_unsigned``): the URL is the only secret.
==================  ===================================================================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relay.errors import HookRequestInvalid, HookUnverified
from relay.hooks import stdwebhooks
from relay.hooks.model import (
    TOLERANCE_SECONDS,
    GithubSource,
    HmacSource,
    HookSource,
    SlackSource,
    StandardSource,
    StripeSource,
    UnsignedSource,
)
from shared.tokens import OPAQUE_RE

#: Unix seconds as a source sends them: ASCII digits (``int()`` would also take
#: ``" 1_0 "`` or Arabic-Indic digits), at most 10 (until the year 2286).
_SECONDS = re.compile(r"[0-9]{1,10}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){1,128}")
#: ``HmacSource.signed`` cut at its placeholders (kept, as pieces of their own).
_SIGNED_PIECES = re.compile(r"(\{body\}|\{timestamp\}|\{id\})")
#: An event name from a header: what GitHub sends (``pull_request``), and similar.
_EVENT = re.compile(r"[A-Za-z0-9_.:/-]{1,100}")


@dataclass(frozen=True)
class Verified:
    """What the headers of a verified delivery say. ``delivery_id``: the provider's id
    for the delivery (the deduplication key) where it is a header; ``event``: the event
    name where it is a header; ``timestamp``: the signed time (unix seconds), for sources
    that sign one. Sources that put id and event in the body (Stripe, Slack, Standard
    Webhooks' ``type``) are read by ``project.read_delivery``."""

    delivery_id: str | None = None
    event: str | None = None
    timestamp: int | None = None


def verify(source: HookSource, secrets: Sequence[str], headers: Mapping[str, str],
           body: bytes, now: float) -> Verified:
    """Verify a delivery to a hook with ``source`` whose valid secrets are ``secrets``
    (``Hook.valid_secrets(now)``). ``headers``: names in any case; ``body``: the bytes
    exactly as received. Raises ``HookRequestInvalid`` (400) or ``HookUnverified`` (401)."""
    return verify_lowered(source, secrets, {str(name).lower(): str(value)
                                            for name, value in headers.items()}, body, now)


def verify_lowered(source: HookSource, secrets: Sequence[str], h: dict[str, str],
                   body: bytes, now: float) -> Verified:
    """``verify`` for headers whose names are lowercase already (the route's, from the
    ASGI scope): not copied again."""
    if not secrets and not isinstance(source, UnsignedSource):
        raise HookUnverified("the hook has no signing secret yet: give it the one the "
                             "provider shows (mailslot relay hook rotate-secret)",
                             code="bad_signature")
    if isinstance(source, GithubSource):
        return _github(secrets, h, body)
    if isinstance(source, StripeSource):
        return _stripe(secrets, h, body, now)
    if isinstance(source, SlackSource):
        return _slack(secrets, h, body, now)
    if isinstance(source, StandardSource):
        return _standard(secrets, h, body, now)
    if isinstance(source, HmacSource):
        return _hmac(source, secrets, h, body, now)
    assert isinstance(source, UnsignedSource)
    return Verified(delivery_id=_optional_id(h, source.id_header),
                    event=_optional_event(h, source.event_header))


# -- the sources -----------------------------------------------------------------------


def _github(secrets: Sequence[str], h: dict[str, str], body: bytes) -> Verified:
    given = _header(h, "x-hub-signature-256", "set a secret on the GitHub webhook")
    event = _event(_header(h, "x-github-event"), "x-github-event")
    delivery = _delivery_id(_header(h, "x-github-delivery"), "x-github-delivery")
    if not (given.startswith("sha256=") and _HEX64.fullmatch(given, 7)):
        raise _malformed("x-hub-signature-256", "sha256=<64 lowercase hex digits>")
    offered = given[7:]  # ASCII (just matched): compared as text, in constant time
    if not any(hmac.compare_digest(_hex(secret, body), offered) for secret in secrets):
        raise _bad_signature()
    return Verified(delivery_id=delivery, event=event)


def _stripe(secrets: Sequence[str], h: dict[str, str], body: bytes, now: float) -> Verified:
    header = _header(h, "stripe-signature")
    stamp: str | None = None
    v1: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and stamp is None:
            stamp = value
        elif key == "v1":
            v1.append(value)
    if stamp is None or not _SECONDS.fullmatch(stamp):
        raise _malformed("stripe-signature", "t=<unix seconds>,v1=<hex>")
    signed = stamp.encode() + b"." + body
    if not any(_same(_hex(secret, signed), sig) for secret in secrets for sig in v1):
        raise _bad_signature()
    return Verified(timestamp=_fresh(int(stamp), now, TOLERANCE_SECONDS))


def _slack(secrets: Sequence[str], h: dict[str, str], body: bytes, now: float) -> Verified:
    given = _header(h, "x-slack-signature")
    stamp = _header(h, "x-slack-request-timestamp")
    if not _SECONDS.fullmatch(stamp):
        raise _malformed("x-slack-request-timestamp", "unix seconds")
    if not given.startswith("v0="):
        raise _malformed("x-slack-signature", "v0=<hex>")
    signed = b"v0:" + stamp.encode() + b":" + body
    if not any(_same(_hex(secret, signed), given[3:]) for secret in secrets):
        raise _bad_signature()
    return Verified(timestamp=_fresh(int(stamp), now, TOLERANCE_SECONDS))


def _standard(secrets: Sequence[str], h: dict[str, str], body: bytes, now: float) -> Verified:
    msg_id = _delivery_id(_header(h, "webhook-id"), "webhook-id")
    stamp = _header(h, "webhook-timestamp")
    given = _header(h, "webhook-signature")
    if not _SECONDS.fullmatch(stamp):
        raise _malformed("webhook-timestamp", "unix seconds")
    try:
        text = body.decode("utf-8")  # the library signs text: exactly these bytes
    except UnicodeDecodeError:
        raise HookRequestInvalid("the body is not UTF-8 text", code="malformed_body") from None
    offered = [_b64(sig) for version, _, sig in (s.partition(",") for s in given.split(" "))
               if version == "v1"]
    for secret in secrets:
        expected = _b64(stdwebhooks.signature(secret, msg_id, int(stamp), text).partition(",")[2])
        if expected is not None and any(
                o is not None and hmac.compare_digest(expected, o) for o in offered):
            return Verified(delivery_id=msg_id, timestamp=_fresh(int(stamp), now,
                                                                 TOLERANCE_SECONDS))
    raise _bad_signature()


def _hmac(source: HmacSource, secrets: Sequence[str], h: dict[str, str], body: bytes,
          now: float) -> Verified:
    given = _header(h, source.header)
    values: dict[str, bytes] = {}
    stamp: str | None = None
    if source.timestamp_header is not None:
        stamp = _header(h, source.timestamp_header)
        if not _SECONDS.fullmatch(stamp):
            raise _malformed(source.timestamp_header, "unix seconds")
        values["timestamp"] = stamp.encode()
    delivery = _optional_id(h, source.id_header)
    if delivery is not None:
        values["id"] = delivery.encode()
    elif "{id}" in source.signed:
        assert source.id_header is not None  # the model requires it
        raise _missing(source.id_header)
    if not given.startswith(source.prefix):
        raise _malformed(source.header, f"{source.prefix}<{source.encoding} digest>")
    digest = given[len(source.prefix):]
    offered = _b64(digest) if source.encoding == "base64" else _unhex(digest)
    signed = b"".join(
        body if piece == "{body}" else values[piece[1:-1]] if piece in ("{timestamp}", "{id}")
        else piece.encode() for piece in _SIGNED_PIECES.split(source.signed))
    algorithm = hashlib.sha512 if source.algorithm == "sha512" else hashlib.sha256
    if offered is None or not any(
            hmac.compare_digest(hmac.new(s.encode(), signed, algorithm).digest(), offered)
            for s in secrets):
        raise _bad_signature()
    timestamp = None if stamp is None else _fresh(int(stamp), now, source.tolerance)
    return Verified(delivery_id=delivery, event=_optional_event(h, source.event_header),
                    timestamp=timestamp)


# -- pieces ----------------------------------------------------------------------------


def _hex(secret: str, message: bytes) -> str:
    return hmac.digest(secret.encode(), message, "sha256").hex()


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of an expected hex digest with any header text."""
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


def _unhex(text: str) -> bytes | None:
    return bytes.fromhex(text) if _HEX.fullmatch(text) else None


def _fresh(stamp: int, now: float, tolerance: int) -> int:
    if abs(now - stamp) > tolerance:
        raise HookUnverified(
            f"the signed timestamp {stamp} is {abs(now - stamp):.0f} s from the relay's "
            f"clock (tolerance {tolerance} s): an old delivery replayed, or a clock off",
            code="stale_timestamp")
    return stamp


def _header(h: dict[str, str], name: str, hint: str = "") -> str:
    value = h.get(name)
    if value is None or not value.strip():
        raise _missing(name, hint)
    return value.strip()


def _missing(name: str, hint: str = "") -> HookRequestInvalid:
    return HookRequestInvalid(f"header {name} is missing" + (f" ({hint})" if hint else ""),
                              code="missing_header")


def _malformed(name: str, form: str) -> HookRequestInvalid:
    return HookRequestInvalid(f"header {name} is not {form}", code="malformed_header")


def _bad_signature() -> HookUnverified:
    return HookUnverified("the signature does not verify with the hook's secret",
                          code="bad_signature")


def _delivery_id(value: str, header: str) -> str:
    if not OPAQUE_RE.fullmatch(value):
        raise _malformed(header, "1 to 200 printable ASCII characters")
    return value


def _event(value: str, header: str) -> str:
    if not _EVENT.fullmatch(value):
        raise _malformed(header, "an event name (letters, digits, _ . : / -)")
    return value


def _optional_id(h: dict[str, str], header: str | None) -> str | None:
    return None if header is None else _delivery_id(_header(h, header), header)


def _optional_event(h: dict[str, str], header: str | None) -> str | None:
    return None if header is None else _event(_header(h, header), header)
