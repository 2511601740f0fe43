"""``mailslot relay …`` admin commands signed by an admin identity (``--sign``: this
home's edge key, no admin credential), and ``mailslot relay admin-key rotate``, run as
real commands against two real relay processes on one nats-server. Withdrawing an
identity's admin, and rotating the key, are refused by both processes within 1 s."""

from __future__ import annotations

import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from relay_support import grant_header
from test_commands import cli, failed, ok
from tests_support import Member, NatsServer, RelayProcess, enroll, relay_processes, wait_until

from relay.adminauth import ADMIN_KEY_FILE

A = "/v1/admin/accounts"


@pytest.fixture
async def relays(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[list[RelayProcess]]:
    async with relay_processes(nats_server.url, tmp_path) as started:
        yield started


async def answer(relay: RelayProcess, headers: dict[str, str]) -> tuple[int, str]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(relay.url + A, headers=headers)
    return response.status_code, response.json().get("error", "")


def signed_list(member: Member) -> dict[str, str]:
    return {"Authorization": grant_header(member.identity, "GET", A)}  # a fresh nonce


async def within_a_second(relays: list[RelayProcess], since: float, status: int, code: str,
                          headers: Callable[[], dict[str, str]]) -> None:
    """Both processes answer ``status code`` within 1 s of ``since`` (``headers()`` for
    each request: a signed one needs a fresh nonce every time)."""
    for relay in relays:
        async def refuses(r: RelayProcess = relay) -> bool:
            return await answer(r, headers()) == (status, code)

        await wait_until(refuses, 1.0, f"{relay.url} answers {status} {code}")
    assert time.monotonic() - since < 1.0


async def test_an_admin_identity_uses_the_commands_remotely_by_signing(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    first, second = relays
    ops = await enroll(first, "ops", tmp_path / "ops-home")
    other = await enroll(first, "ops", tmp_path / "other-home")
    assert ops.home is not None and other.home is not None
    key = {"MAILSLOT_ADMIN_KEY": (first.data_dir / ADMIN_KEY_FILE).read_text().strip()}

    made = ok(cli(tmp_path / "laptop", "relay", "identity", "admin", ops.id, "--grant",
                  "--relay", second.url, "--json", env=key))
    assert made["admin"] is True and made["account"] == "ops"

    created = ok(cli(ops.home, "relay", "account", "create", "acme", "--sign", "--relay",
                     second.url, "--json"))  # (the hook commands take --sign the same way)
    assert created["enrollment_token"].startswith("mse_")
    # No --relay: the relay this identity is enrolled with, said on stderr.
    listed = cli(ops.home, "relay", "account", "list", "--sign", "--json")
    assert ok(listed) == ["acme", "ops"]
    assert f"signing as {ops.id} at the relay it is enrolled with, {first.url}" in \
        listed.stderr
    admins = ok(cli(ops.home, "relay", "identity", "admins", "--sign", "--json"))
    assert [(a["id"], a["account"]) for a in admins] == [(ops.id, "ops")]
    # Not an admin: a valid signature, refused for what it is.
    failed(cli(other.home, "relay", "account", "list", "--sign", "--relay", first.url),
           "not_admin")
    failed(cli(tmp_path / "nobody", "relay", "account", "list", "--sign", "--relay",
               first.url), "not_initialized")

    # A captured signed request works once, on any process.
    header = signed_list(ops)
    assert await answer(first, header) == (200, "")
    assert await answer(second, header) == (401, "replayed_request")

    # Withdrawn: both processes refuse it within a second.
    ok(cli(ops.home, "relay", "identity", "admin", ops.id, "--revoke", "--sign", "--json"))
    await within_a_second(relays, time.monotonic(), 403, "not_admin", lambda: signed_list(ops))


async def test_rotating_the_admin_key_refuses_the_old_one_everywhere_within_a_second(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    first, second = relays
    key_file = first.data_dir / ADMIN_KEY_FILE
    old = key_file.read_text().strip()
    copy = tmp_path / "laptop" / "admin.key"
    copy.parent.mkdir()
    copy.write_text(old + "\n")
    # Against the relay running in that data folder: it saves DATA_DIR/admin.key, and
    # the file the old key was read from.
    result = cli(tmp_path / "home", "relay", "admin-key", "rotate", "--data-dir",
                 str(first.data_dir), "--admin-key-file", str(copy), "--json")
    rotated_at = time.monotonic()
    doc = ok(result)
    new = doc["admin_key"]
    assert new.startswith("msa_") and new != old
    assert doc["saved_in"] == [str(key_file), str(copy)]
    for path in (key_file, copy):
        assert path.read_text().strip() == new
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await within_a_second(relays, rotated_at, 401, "invalid_token",
                          lambda: {"Authorization": f"Bearer {old}"})
    for relay in relays:
        assert await answer(relay, {"Authorization": f"Bearer {new}"}) == (200, "")

    # Remotely, with the key from the environment: printed once, saved nowhere.
    text = cli(tmp_path / "laptop", "relay", "admin-key", "rotate", "--relay", second.url,
               env={"MAILSLOT_ADMIN_KEY": new})
    assert text.returncode == 0, text.stderr
    newer = text.stdout.split(": ")[-1].splitlines()[0].strip()
    assert "saved nowhere" in text.stdout and newer.startswith("msa_") and newer != new
    assert key_file.read_text().strip() == new  # (that relay's file is now stale)
    failed(cli(tmp_path / "laptop", "relay", "admin-key", "rotate", "--relay", second.url,
               env={"MAILSLOT_ADMIN_KEY": new}), "invalid_token")
