"""Who may claim which source kind: the table both the relay and the edge apply
(``shared.sources``). Pure: the relay and edge tests show each side refusing forgeries
end to end; here, the rule itself, for every reserved kind."""

from __future__ import annotations

import pytest

from shared.sources import LOCAL_KINDS, RELAY_KINDS, RESERVED_KINDS, source_claim_refusal

RELAY = "r" * 32
EDGE = "e" * 32
PRODUCER = "p" * 32


def test_the_reserved_kinds_are_documented_ones() -> None:
    assert {"producer", "webhook"} == RELAY_KINDS
    assert {"file", "command", "timer", "absence", "sleep", "tick", "approval"} == LOCAL_KINDS
    assert RESERVED_KINDS == RELAY_KINDS | LOCAL_KINDS and not RELAY_KINDS & LOCAL_KINDS


@pytest.mark.parametrize("kind", sorted(RELAY_KINDS))
def test_relay_kinds_only_under_the_relay_key(kind: str) -> None:
    assert source_claim_refusal(kind, RELAY, relay=RELAY, recipient=EDGE) is None
    for signer in (PRODUCER, EDGE):
        reason = source_claim_refusal(kind, signer, relay=RELAY, recipient=EDGE)
        assert reason is not None and kind in reason and signer in reason


@pytest.mark.parametrize("kind", sorted(LOCAL_KINDS))
def test_local_kinds_only_under_the_recipients_own_key(kind: str) -> None:
    assert source_claim_refusal(kind, EDGE, relay=RELAY, recipient=EDGE) is None
    for signer in (RELAY, PRODUCER):
        reason = source_claim_refusal(kind, signer, relay=RELAY, recipient=EDGE)
        assert reason is not None and kind in reason


@pytest.mark.parametrize("kind", ["vault", "ci", "service", "signed", "producers", "files"])
def test_any_other_kind_is_free_for_any_signer(kind: str) -> None:
    for signer in (RELAY, PRODUCER, EDGE):
        assert source_claim_refusal(kind, signer, relay=RELAY, recipient=EDGE) is None
