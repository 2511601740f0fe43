"""Deliveries signed the way each provider documents it, for the hook tests (unit and
fuzz). Each signer is written from the provider's documentation, not from
``relay.hooks.verify``: a verifier that drifted from the documented scheme fails them.

* GitHub: ``X-Hub-Signature-256: sha256=`` + hex HMAC-SHA256 of the body ("Validating
  webhook deliveries"; its example: secret ``It's a Secret to Everybody``, payload
  ``Hello, World!``).
* Stripe: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">`` with the
  endpoint secret (the whole ``whsec_…`` string) as key ("Verify signatures manually").
* Slack: ``X-Slack-Signature: v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``
  with the signing secret, ``X-Slack-Request-Timestamp`` ("Verifying requests").
* Standard Webhooks: the reference library's own ``Webhook.sign``.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from relay.hooks.model import Hook, new_hook

ALICE = "a" * 32
NOW = 1_760_000_000
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
STRIPE_SECRET = "whsec_test_0123456789abcdef"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "generic-hmac-secret"


def hex_hmac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def github_headers(body: bytes, secret: str = GITHUB_SECRET, event: str = "push",
                   delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958") -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hex_hmac(secret, body),
            "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json"}


def stripe_headers(body: bytes, *secrets: str, t: int = NOW) -> dict[str, str]:
    signatures = ",".join(f"v1={hex_hmac(s, f'{t}.'.encode() + body)}"
                          for s in secrets or (STRIPE_SECRET,))
    return {"Stripe-Signature": f"t={t},{signatures},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"}


def slack_headers(body: bytes, secret: str = SLACK_SECRET, t: int = NOW) -> dict[str, str]:
    return {"X-Slack-Request-Timestamp": str(t),
            "X-Slack-Signature": "v0=" + hex_hmac(secret, f"v0:{t}:".encode() + body)}


def standard_headers(body: bytes, *secrets: str, t: int = NOW,
                     msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W") -> dict[str, str]:
    when = datetime.fromtimestamp(t, UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, when, body.decode())
                          for s in secrets or (STANDARD_SECRET,))
    return {"webhook-id": msg_id, "webhook-timestamp": str(t), "webhook-signature": signatures}


def hook(kind: str, secret: str | None = None, **options: object) -> Hook:
    """A hook of ``kind`` for Alice with the secret its signer above uses."""
    default = {"github": GITHUB_SECRET, "stripe": STRIPE_SECRET, "slack": SLACK_SECRET,
               "standard-webhooks": STANDARD_SECRET, "hmac": HMAC_SECRET}.get(kind)
    source = options.pop("source", None) or {"kind": kind}
    if kind == "none":
        source = {"kind": "none", "accept_unsigned": True}
    made, _ = new_hook(kind.replace("standard-webhooks", "std"), ALICE, source,  # type: ignore[arg-type]
                       secret=secret or default, **options)
    return made
