"""``mailslot relay account|token|enrollment|identity …`` as clients of the admin API,
run as real commands against real relay processes: remotely (``--relay URL`` with the
key from a file or ``MAILSLOT_ADMIN_KEY``), locally (the relay running in this
``MAILSLOT_HOME``, said on stderr), and with no relay at all (``relay_not_running``,
nothing opened). A token revoked through one relay process is refused by two within 1 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests_support import NatsServer, RelayProcess, enroll, relay_processes, wait_until

from relay.adminauth import ADMIN_KEY_FILE


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "MAILSLOT_ADMIN_KEY"}
    full.update({"MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING", **(env or {})})
    return subprocess.run([sys.executable, "-m", "edge", *args], env=full,
                          capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def failed(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines()[-1].startswith(f"mailslot: {code}: "), result.stderr


@pytest.fixture
async def relays(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[list[RelayProcess]]:
    """Two relay processes (``relay serve --nats``) on one nats-server."""
    async with relay_processes(nats_server.url, tmp_path) as started:
        yield started


async def post(url: str, token: str, to: str, type_: str = "ci.failed") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url + "/v1/interrupts", json={"to": to, "type": type_},
                                 headers={"Authorization": f"Bearer {token}"})


async def test_the_commands_work_remotely_with_the_key_from_a_file_or_the_environment(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    first, second = relays
    key_file = first.data_dir / ADMIN_KEY_FILE
    assert key_file.exists() and not (second.data_dir / ADMIN_KEY_FILE).exists()
    elsewhere = tmp_path / "laptop"  # no relay here: everything goes over HTTP
    remote = ("--relay", first.url, "--admin-key-file", str(key_file), "--json")

    made = ok(cli(elsewhere, "relay", "account", "create", "acme", *remote))
    assert made["account"] == "acme" and made["enrollment_token"].startswith("mse_")
    assert ok(cli(elsewhere, "relay", "account", "list", *remote)) == ["acme"]
    text = cli(elsewhere, "relay", "account", "create", "globex", "--relay", first.url,
               "--admin-key-file", str(key_file))
    assert text.returncode == 0 and "account globex created" in text.stdout
    assert "using the relay" not in text.stderr

    # The key from the environment, against the other relay process (one credential, in KV).
    env = {"MAILSLOT_ADMIN_KEY": key_file.read_text().strip()}
    on_second = ("--relay", second.url, "--json")
    another = ok(cli(elsewhere, "relay", "account", "token", "acme", *on_second, env=env))
    assert another["enrollment_token"].startswith("mse_")
    bulk = ok(cli(elsewhere, "relay", "enrollment", "create", "--account", "acme", "--count",
                  "3", "--expires", "1d", *on_second, env=env))
    assert len(bulk["enrollment_tokens"]) == 3 and bulk["expires_at"]
    listed = ok(cli(elsewhere, "relay", "enrollment", "list", "--account", "acme",
                    *on_second, env=env))
    assert len(listed) == 5
    ok(cli(elsewhere, "relay", "enrollment", "revoke", "--account", "acme", bulk["ids"][0],
           *on_second, env=env))
    assert len(ok(cli(elsewhere, "relay", "enrollment", "list", "--account", "acme",
                      *on_second, env=env))) == 4

    member = await enroll(first, "acme")
    token = ok(cli(elsewhere, "relay", "token", "create", "--account", "acme", "--to",
                   member.id, "--name", "ci", "--type", "ci.*", "--expires", "1h",
                   *on_second, env=env))
    assert token["to"] == member.id and token["token"].startswith("msp_")
    assert (await post(first.url, token["token"], member.id)).status_code == 202
    assert (await post(first.url, token["token"], member.id, "x.y")).status_code == 403
    tokens = ok(cli(elsewhere, "relay", "token", "list", "--account", "acme", *on_second,
                    env=env))
    assert token["token"] not in json.dumps(tokens)
    mine = [t for t in tokens if t["id"] == token["id"]]  # (enroll made one too)
    assert [(t["state"], t["types"], t["name"]) for t in mine] == [("active", ["ci.*"], "ci")]
    shown = ok(cli(elsewhere, "relay", "account", "show", "acme", *on_second, env=env))
    assert shown["usage"]["identities"] == 1 and shown["usage"]["pending_total"] == 1
    identities = ok(cli(elsewhere, "relay", "identity", "list", "--account", "acme",
                        *on_second, env=env))
    assert [i["id"] for i in identities] == [member.id]

    ok(cli(elsewhere, "relay", "account", "disable", "acme", *on_second, env=env))
    assert (await post(first.url, token["token"], member.id)).json()["error"] == \
        "account_disabled"
    ok(cli(elsewhere, "relay", "account", "enable", "acme", *on_second, env=env))
    assert (await post(first.url, token["token"], member.id)).status_code == 202
    revoked = ok(cli(elsewhere, "relay", "identity", "revoke", "--account", "acme",
                     member.id, *on_second, env=env))
    assert revoked["purged_interrupts"] == 2
    deleted = ok(cli(elsewhere, "relay", "account", "delete", "acme", *on_second, env=env))
    assert deleted["purged"]["identities"] == 0 and deleted["deleted"] is True
    failed(cli(elsewhere, "relay", "account", "show", "acme", "--relay", second.url, env=env),
           "unknown_account")

    # Refusals: a wrong key, no key, no relay to talk to.
    failed(cli(elsewhere, "relay", "account", "list", "--relay", first.url,
               env={"MAILSLOT_ADMIN_KEY": "msa_wrong"}), "invalid_token")
    failed(cli(elsewhere, "relay", "account", "list", "--relay", first.url),
           "missing_admin_key")
    failed(cli(elsewhere, "relay", "account", "list", "--relay", "http://127.0.0.1:9",
               env=env), "relay_unreachable")
    assert not elsewhere.exists(), "a client command writes nothing"


async def test_a_revoked_token_is_refused_by_two_relay_processes_within_a_second(
    tmp_path: Path, relays: list[RelayProcess]
) -> None:
    first, second = relays
    member = await enroll(first, "acme")
    key = (first.data_dir / ADMIN_KEY_FILE).read_text().strip()
    env = {"MAILSLOT_ADMIN_KEY": key}
    token = ok(cli(tmp_path, "relay", "token", "create", "--account", "acme", "--to",
                   member.id, "--relay", second.url, "--json", env=env))
    for relay in relays:
        assert (await post(relay.url, token["token"], member.id)).status_code == 202

    ok(cli(tmp_path, "relay", "token", "revoke", "--account", "acme", token["id"],
           "--relay", first.url, "--json", env=env))
    revoked_at = time.monotonic()

    async def refused_by(relay: RelayProcess) -> bool:
        response = await post(relay.url, token["token"], member.id)
        return response.status_code == 401 and response.json()["error"] == "invalid_token"

    for relay in relays:
        await wait_until(lambda r=relay: refused_by(r), 1.0, f"{relay.url} refuses")
    assert time.monotonic() - revoked_at < 1.0


async def test_with_no_relay_named_they_use_the_one_running_in_this_home_and_say_so(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    failed(cli(home, "relay", "account", "list"), "relay_not_running")
    assert not home.exists(), "no store was opened, nothing was created"

    serve = subprocess.Popen(
        [sys.executable, "-m", "edge", "relay", "serve", "--json", "--listen", "127.0.0.1:0"],
        env={**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert serve.stdout is not None
        banner = json.loads(serve.stdout.readline())
        assert banner["admin_key"].startswith("msa_")  # printed on the first start only
        key_file = home / "relay" / ADMIN_KEY_FILE
        assert key_file.read_text().strip() == banner["admin_key"]
        made = cli(home, "relay", "account", "create", "acme", "--json")
        assert made.returncode == 0, made.stderr
        assert f"using the relay running in {home / 'relay'}" in made.stderr
        assert f"(pid {serve.pid}) at {banner['url']}" in made.stderr
        assert json.loads(made.stdout)["account"] == "acme"
        assert ok(cli(home, "relay", "account", "list", "--json")) == ["acme"]
    finally:
        serve.terminate()
        serve.wait(30)
        if serve.stdout is not None:
            serve.stdout.close()
    failed(cli(home, "relay", "account", "list"), "relay_not_running")

    again = subprocess.Popen(
        [sys.executable, "-m", "edge", "relay", "serve", "--json", "--listen", "127.0.0.1:0"],
        env={**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert again.stdout is not None
        assert "admin_key" not in json.loads(again.stdout.readline())  # not shown again
        assert ok(cli(home, "relay", "account", "list", "--json")) == ["acme"]
    finally:
        again.terminate()
        again.wait(30)
        if again.stdout is not None:
            again.stdout.close()


@pytest.mark.parametrize("argv", [
    ("relay", "token", "create", "--account", "a", "--to", "x", "--expires", "soon"),
    ("relay", "enrollment", "create", "--account", "a", "--count", "0"),
    ("relay", "account", "list", "--nats", "nats://127.0.0.1:4222"),
])
def test_bad_flags_are_usage_errors(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = cli(tmp_path / "home", *argv)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "home").exists()


async def test_mailslot_up_makes_the_credential_and_the_commands_find_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "MAILSLOT_HOME": str(home), "MAILSLOT_LOG": "WARNING"}
    env.pop("MAILSLOT_ADMIN_KEY", None)
    for first_run in (True, False):
        up = subprocess.Popen(
            [sys.executable, "-m", "edge", "up", "--json", "--listen", "127.0.0.1:0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            assert up.stdout is not None
            banner = json.loads(up.stdout.readline())
            assert ("admin_key" in banner) is first_run
            if first_run:
                key_file = home / "relay" / ADMIN_KEY_FILE
                assert key_file.read_text().strip() == banner["admin_key"]
            listed = cli(home, "relay", "account", "list", "--json")
            assert ok(listed) == ["local"]
            assert f"(pid {up.pid}) at {banner['relay']}" in listed.stderr
        finally:
            up.terminate()
            up.wait(30)
            if up.stdout is not None:
                up.stdout.close()
