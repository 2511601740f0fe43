"""Who may claim which ``source.kind``: the one table the relay and the edge both apply.

Users route on ``source.kind`` (``[intent.match] source_kind = "approval"``), so a kind is
a claim about who raised the interrupt, and a claim is only worth what its signature
proves. Two families of kinds are reserved:

* ``RELAY_KINDS`` (``producer``, ``webhook``): the relay attests these. It signs a draft
  posted with a producer token as kind ``producer`` and the token's name; nobody else
  may sign an envelope claiming them, so the edge accepts them only under the relay key
  it pinned at ``edge init``.
* ``LOCAL_KINDS`` (``file``, ``command``, ``timer``, ``absence``, ``sleep``, ``tick``,
  ``approval``): the edge's own watches, timers and approvals raise these, signed with
  the edge's own key and committed straight to its inbox. An envelope claiming one is
  accepted only when signed by its recipient's own key: not by the relay, not by a
  granted producer key.

Every other kind is free: a producer that signs with its own (granted) key names its
own kind, e.g. ``{"kind": "vault", "name": "prod"}``.
"""

from __future__ import annotations

#: Kinds only the relay attests (signs): a draft sent with a producer token, a webhook
#: delivery a hook verified (``relay.hooks``).
RELAY_KINDS: frozenset[str] = frozenset({"producer", "webhook"})
#: Kinds only the edge raises for itself, signed with its own key.
LOCAL_KINDS: frozenset[str] = frozenset(
    {"file", "command", "timer", "absence", "sleep", "tick", "approval"}
)
#: Every kind a producer-signed envelope may not claim.
RESERVED_KINDS: frozenset[str] = RELAY_KINDS | LOCAL_KINDS


def source_claim_refusal(kind: str, signer: str, *, relay: str, recipient: str) -> str | None:
    """Why ``signer`` may not claim ``kind`` for an envelope to ``recipient`` (``relay``
    being the relay identity trusted for attestations), or None if it may.

    Pure on purpose: the relay turns a reason into ``source_not_allowed`` before storing
    anything, the edge into ``forged_source`` before committing anything."""
    if kind in RELAY_KINDS and signer != relay:
        return (
            f"source kind {kind!r} is attested by the relay only; this envelope is "
            f"signed by {signer}"
        )
    if kind in LOCAL_KINDS and signer != recipient:
        return (
            f"source kind {kind!r} is raised by the edge itself only; this envelope "
            f"is signed by {signer}, not by its recipient's own key"
        )
    return None
