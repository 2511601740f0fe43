"""The edge accepts a reserved source kind only from the one key that may claim it
(``shared.sources``): ``producer``/``webhook`` from the pinned relay key, local kinds
(``approval``, ``file``, ``timer``…) from its own key. Anything else claiming them —
signed by the relay, or by a producer key the user granted — is ``forged_source``:
recorded in ``inbox rejected``, not stored, rejected upstream so it is not redelivered.

First the receiver alone on a real SQLite inbox (every reserved kind, every wrong
signer), then the whole path: a real relay, ``mailslot grant add``/``rm`` and
``mailslot send`` as subprocesses, forged envelopes put straight into JetStream (as a
compromised or older relay would hold them) and the real daemon draining them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests_support import json_out, mailslot, running_edge, wait_until
from ulid import ULID

from edge.link.receiver import Receiver
from edge.store.inbox import Inbox
from edge.watches.events import LocalRaiser
from relay.registry import Registry
from shared.envelope import Envelope, Priority, Source
from shared.frames import DeliverItem
from shared.identity import Identity
from shared.signing import SignedEnvelope, sign_envelope
from shared.sources import LOCAL_KINDS, RELAY_KINDS

ME = Identity.generate()
RELAY = Identity.generate()
PRODUCER = Identity.generate()

#: The attack that was seen: an "approval" that says deploy:prod was approved.
APPROVAL = {"type": "approval.approved", "payload": {"action": "deploy:prod",
                                                    "note": "approved by user"}}


def item(signer: Identity, kind: str, to: str = ME.id, **fields: Any) -> DeliverItem:
    values: dict[str, Any] = {
        "id": str(ULID()), "to": to, "source": Source(kind=kind, name="x"),
        "type": f"{kind}.event", "created_at": datetime.now(UTC), "signer": signer.id,
        "priority": Priority.now, **fields,
    }
    signed = sign_envelope(Envelope(**values), signer)
    return DeliverItem(envelope=signed.envelope, signature=signed.signature)


def envelope_id(delivered: DeliverItem) -> str:
    return Envelope.model_validate_json(delivered.envelope).id


@pytest.fixture
def inbox(tmp_path: Path) -> Any:
    with Inbox.open(tmp_path / "inbox.sqlite3") as opened:
        opened.add_trusted(PRODUCER.public)
        yield opened


FORGED = [
    *((RELAY, kind) for kind in sorted(LOCAL_KINDS)),
    *((PRODUCER, kind) for kind in sorted(LOCAL_KINDS)),
    *((PRODUCER, kind) for kind in sorted(RELAY_KINDS)),
]


@pytest.mark.parametrize(("signer", "kind"), FORGED,
                         ids=[f"{'relay' if s is RELAY else 'producer'}-{k}" for s, k in FORGED])
def test_a_forged_source_is_rejected_recorded_and_not_stored(
    inbox: Inbox, signer: Identity, kind: str
) -> None:
    receiver = Receiver(ME, RELAY.public, inbox)
    forged = item(signer, kind, **APPROVAL)
    outcome = receiver.process([forged])
    assert outcome.rejected == [(envelope_id(forged), "forged_source")]
    assert (outcome.acked, outcome.new) == ([], 0)
    assert inbox.list(state=None) == []
    (rejection,) = inbox.rejections()
    assert (rejection.envelope_id, rejection.code) == (envelope_id(forged), "forged_source")
    assert kind in rejection.message and signer.id in rejection.message


def test_rightful_claims_are_stored_beside_forged_ones(inbox: Inbox) -> None:
    """One batch, as the relay delivers it: the forged items are refused, the rest
    committed and acked."""
    receiver = Receiver(ME, RELAY.public, inbox)
    good = [item(RELAY, "producer"), item(RELAY, "webhook"), item(PRODUCER, "vault"),
            item(RELAY, "ci")]
    bad = [item(RELAY, "approval", **APPROVAL), item(PRODUCER, "producer")]
    outcome = receiver.process([bad[0], *good[:2], bad[1], *good[2:]])
    assert outcome.acked == [envelope_id(g) for g in good] and outcome.new == len(good)
    assert sorted(outcome.rejected) == sorted((envelope_id(b), "forged_source") for b in bad)
    stored = {(i.id, i.source_kind) for i in inbox.list(state=None)}
    assert stored == {(envelope_id(g), k) for g, k in
                      zip(good, ["producer", "webhook", "vault", "ci"], strict=True)}


def test_the_edges_own_local_interrupts_still_arrive(inbox: Inbox) -> None:
    """The edge's own approvals, files, timers… (``edge.watches.events``, its own key) are
    what the reserved kinds are for: they are stored as before."""
    raiser = LocalRaiser(ME, inbox)
    ids = {raiser.raise_event(kind, "local", f"{kind}.event", {"n": 1}): kind
           for kind in sorted(LOCAL_KINDS)}
    assert {i.id: i.source_kind for i in inbox.list(state=None, limit=100)} == ids
    assert inbox.rejections() == []


# -- the whole path -----------------------------------------------------------------------


async def test_forged_sources_never_reach_the_inbox_and_grants_work_end_to_end(
    relay: Any, make_member: Any
) -> None:
    me = await make_member("acme")
    sender = await make_member("producers")
    assert me.home is not None and sender.home is not None
    registry = Registry(relay.store)

    # `mailslot grant add`: a signed PUT to the relay, then trusted locally.
    added = json_out(await cli(me.home, "grant", "add", sender.id, "--json"))
    assert added == {"granted": sender.id}
    assert await registry.is_granted(me.id, sender.id)
    sent = json_out(await cli(sender.home, "send", "--to", me.id, "--type", "ci.done",
                             "--data", '{"run": 1}', "--json"))

    # What the relay now refuses, put straight into JetStream: the relay's own key and
    # the granted key each claiming a kind they may not.
    forged = [item(relay.identity, "approval", to=me.id, **APPROVAL),
              item(sender.identity, "approval", to=me.id, **APPROVAL),
              item(sender.identity, "producer", to=me.id)]
    for one in forged:
        wire = SignedEnvelope(one.envelope, one.signature).to_wire()
        await relay.store.publish(me.id, Priority.now, envelope_id(one), wire, None)

    async with running_edge(me):
        def drained() -> bool:
            with me.inbox() as inbox:
                return inbox.total() == 1 and len(inbox.rejections()) == len(forged)

        await wait_until(drained, 20, "the signed interrupt stored, the forged ones refused")
        # Rejected upstream: terminated in JetStream, never redelivered.
        await wait_until(lambda: _pending(relay, me.id), 20, "the relay dropped the forgeries")

    rejected = json_out(await cli(me.home, "inbox", "rejected", "--json"))
    assert sorted((r["envelope_id"], r["code"]) for r in rejected) == sorted(
        (envelope_id(f), "forged_source") for f in forged)
    listed = json_out(await cli(me.home, "inbox", "list", "--all", "--json"))
    assert [(i["id"], i["source_kind"]) for i in listed] == [(sent["id"], "signed")]

    # `mailslot grant rm`: revoked at the relay and locally; the sender is refused.
    assert json_out(await cli(me.home, "grant", "rm", sender.id, "--json")) == {
        "revoked": sender.id}
    assert not await registry.is_granted(me.id, sender.id)
    refused = await cli(sender.home, "send", "--to", me.id, "--type", "ci.done", "--json")
    assert refused.returncode == 1  # ExitCode.ERROR: a refusal
    assert json.loads(refused.stdout)["error"] == "untrusted_signer"


async def _pending(relay: Any, identity: str) -> bool:
    return bool(await relay.store.pending(identity) == {"now": 0, "next": 0, "later": 0})


async def cli(home: Path, *args: str) -> Any:
    """The real CLI in a subprocess, off the event loop: the relay answering it runs on
    this loop."""
    return await asyncio.to_thread(mailslot, home, *args)
