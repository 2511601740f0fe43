"""``relay.registry``: a producer token's scope (pure), records written before scopes
existed, and the read methods both the admin API and the request path use, on a real
registry (real nats-server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from relay_support import alice_fixture, relay_config_fixture  # noqa: F401  (fixtures)
from tests_support import Member

from relay.errors import Forbidden, NotFound, Unauthorized
from relay.registry import (
    MEMBER_INDEX_KEY,
    ProducerToken,
    Registry,
    check_type_glob,
    producer_from_record,
    public_id,
    token_hash,
    token_state,
)
from relay.server import RelayServer
from shared.identity import Identity

ME, YOU = "a" * 32, "b" * 32


def test_a_scope_allows_its_recipients_and_types_only() -> None:
    scope = ProducerToken("acme", ME, "ci", recipients=(ME, YOU), types=("ci.*", "deploy.done"))
    scope.check(ME, "ci.failed")
    scope.check(YOU, "deploy.done")
    scope.check(YOU)  # no type: the recipient only
    with pytest.raises(Forbidden) as wrong_type:
        scope.check(ME, "deploy.started")
    assert wrong_type.value.code == "type_not_allowed"
    with pytest.raises(Forbidden) as wrong_to:
        scope.check("c" * 32, "ci.failed")
    assert wrong_to.value.code == "recipient_not_allowed"
    # Globs match whole types, case-sensitively.
    with pytest.raises(Forbidden):
        scope.check(ME, "CI.failed")
    with pytest.raises(Forbidden):
        scope.check(ME, "xci.failed")


def test_records_from_before_scopes_read_as_one_recipient_every_type_no_expiry() -> None:
    old = {"account": "acme", "to": ME, "name": "producer", "created_at": "2026-01-01T00:00:00+00:00"}
    scope = producer_from_record(old)
    assert (scope.to, scope.recipients, scope.types, scope.expires_at) == (ME, (ME,), ("*",), None)
    scope.check(ME, "anything.at.all")
    assert token_state(old) == "active"


def test_token_states_and_ids() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    assert token_state({"expires_at": past}) == "expired"
    assert token_state({"expires_at": past, "revoked_at": past}) == "revoked"
    hashed = token_hash("msp_secret")
    assert public_id(hashed) == hashed[:20] and "msp_secret" not in public_id(hashed)
    for glob in ("ci.*", "a?b", "[ab].x", "x"):
        assert check_type_glob(glob) == glob
    for bad in ("", "a b", "a\nb", "x" * 129, 3):
        with pytest.raises(ValueError):
            check_type_glob(bad)


async def test_producer_refuses_revoked_expired_and_disabled(
    relay: RelayServer, alice: Member
) -> None:
    assert relay.store is not None
    registry = Registry(relay.store)
    assert (await registry.producer(alice.token)).to == alice.id
    token, record = await registry.create_producer_token_record(
        "acme", [alice.id], "ci", ["ci.*"], expires_in=3600)
    assert (await registry.producer(token)).types == ("ci.*",)

    await registry.set_disabled("acme", True)
    for t in (alice.token, token):
        with pytest.raises(Forbidden) as disabled:
            await registry.producer(t)
        assert disabled.value.code == "account_disabled"
    await registry.set_disabled("acme", False)

    await registry.revoke_producer_token("acme", record["id"])
    with pytest.raises(Unauthorized) as revoked:
        await registry.producer(token)
    assert revoked.value.code == "invalid_token"
    assert (await registry.producer(alice.token)).account == "acme"  # the other one works

    key = f"token.{token_hash(alice.token)}"
    found = await relay.store.kv_get(key)
    assert found is not None
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await relay.store.kv_put(key, {**found[0], "expires_at": past})
    with pytest.raises(Unauthorized) as expired:
        await registry.producer(alice.token)
    assert expired.value.code == "token_expired"

    with pytest.raises(NotFound) as unknown:
        await registry.usage("ghost")
    assert unknown.value.code == "unknown_account"


async def test_identities_are_listed_from_the_index_by_account(
    relay: RelayServer, alice: Member
) -> None:
    assert relay.store is not None
    store, registry = relay.store, Registry(relay.store)
    await registry.create_account("globex")
    two = [Identity.generate() for _ in range(2)]
    for identity in two:
        await registry.enroll(await registry.enrollment_token("globex"), identity.public)
    assert [i["id"] for i in await registry.identities("acme")] == [alice.id]
    assert [i["id"] for i in await registry.identities("globex")] == [i.id for i in two]
    assert await store.kv_keys("member.globex.") == sorted(
        f"member.globex.{i.id}" for i in two)

    # What is listed is what the index names: a key without its identity record (a crash
    # between the two writes) or naming another account's identity counts for nothing,
    # and an identity whose key is gone is not listed (nothing reads every record).
    await store.kv_put(f"member.globex.{'c' * 32}", {"created_at": "2026-01-01"})
    await store.kv_put(f"member.globex.{alice.id}", {"created_at": "2026-01-01"})
    assert [i["id"] for i in await registry.identities("globex")] == [i.id for i in two]
    await store.kv_delete(f"member.globex.{two[0].id}")
    assert [i["id"] for i in await registry.identities("globex")] == [two[1].id]
    await store.kv_put(f"member.globex.{two[0].id}", {"created_at": "x"})

    await registry.revoke_identity("globex", two[1].id)
    assert [i["id"] for i in await registry.identities("globex")] == [two[0].id]
    assert f"member.globex.{two[1].id}" not in await store.kv_keys("member.")


async def test_a_registry_from_before_the_index_is_indexed_by_a_start_or_a_listing(
    relay: RelayServer, alice: Member
) -> None:
    assert relay.store is not None and relay.identity is not None
    store, registry = relay.store, Registry(relay.store)
    assert await store.kv_get(MEMBER_INDEX_KEY) is not None  # a new registry: indexed
    bob = Identity.generate()
    await registry.enroll(await registry.enrollment_token("acme"), bob.public)
    for key in (MEMBER_INDEX_KEY, *await store.kv_keys("member.")):  # as an old store
        await store.kv_delete(key)
    assert await store.kv_keys("member.") == []

    assert [i["id"] for i in await registry.identities("acme")] == [alice.id, bob.id]
    assert await store.kv_keys("member.acme.") == sorted(
        f"member.acme.{i}" for i in (alice.id, bob.id))
    assert await store.kv_get(MEMBER_INDEX_KEY) is not None

    # A relay starting on such a registry indexes it before any request lists it.
    for key in (MEMBER_INDEX_KEY, *await store.kv_keys("member.")):
        await store.kv_delete(key)
    assert (await registry.relay_identity()).id == relay.identity.id
    assert await store.kv_get(MEMBER_INDEX_KEY) is not None
    assert await store.kv_keys("member.acme.") == sorted(
        f"member.acme.{i}" for i in (alice.id, bob.id))
