"""``mailslot send``: one interrupt to the relay, either as a draft under a producer token
(the relay signs and attests it) or as an envelope signed with this edge's own key.

With ``seal`` the payload is encrypted to the recipient's box key, fetched from the relay,
before anything is sent. The envelope id is the caller's (reuse it to retry idempotently)
or a new ULID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ulid import ULID

from edge.link.keystore import load_identity
from edge.link.relayclient import RelayClient
from shared.envelope import Envelope, Source
from shared.sealing import seal as seal_payload
from shared.signing import sign_envelope


@dataclass(frozen=True)
class Outgoing:
    """One interrupt to send, as ``mailslot send``'s options give it (``to`` checked)."""

    to: str
    type: str
    priority: str = "next"
    payload: dict[str, Any] | None = None
    session: str | None = None
    expires_in: float | None = None
    dedupe_key: str | None = None
    id: str | None = None
    seal: bool = False


def send_interrupt(client: RelayClient, outgoing: Outgoing, *, token: str | None,
                   key_file: Path) -> dict[str, Any]:
    """Send ``outgoing`` through ``client``: as a draft with ``token``, else signed with the
    identity in ``key_file``; return the relay's answer (``id``, ``duplicate``…)."""
    envelope_id = outgoing.id or str(ULID())
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=outgoing.expires_in) if outgoing.expires_in else None
    payload = outgoing.payload
    sealed = None
    if outgoing.seal:
        sealed = seal_payload(payload or {}, client.identity(outgoing.to).box_key, envelope_id)
        payload = None
    if token:
        draft: dict[str, Any] = {
            "id": envelope_id,
            "to": outgoing.to,
            "type": outgoing.type,
            "priority": outgoing.priority,
        }
        for key, value in (
            ("session", outgoing.session),
            ("dedupe_key", outgoing.dedupe_key),
            ("payload", payload),
        ):
            if value is not None:
                draft[key] = value
        if expires_at is not None:
            draft["expires_at"] = expires_at.isoformat()
        if sealed is not None:
            draft["sealed"] = sealed.model_dump()
        return client.post_draft(draft, token)
    identity = load_identity(key_file)
    envelope = Envelope.model_validate(
        {
            "id": envelope_id,
            "to": outgoing.to,
            "type": outgoing.type,
            "priority": outgoing.priority,
            "session": outgoing.session,
            "dedupe_key": outgoing.dedupe_key,
            "payload": payload,
            "sealed": sealed,
            "source": Source(kind="signed", name="cli"),  # not "producer": the relay's
            "created_at": now,
            "expires_at": expires_at,
            "signer": identity.id,
        }
    )
    return client.post_signed(sign_envelope(envelope, identity))
