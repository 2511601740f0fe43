"""Webhook ingress, whole flow: ``mailslot relay hook create`` (the real CLI) against one
relay process prints the URL and the secret once; a GitHub delivery signed with that
secret, posted to *another* relay process on the same NATS (the hook is a registry
record), lands in a real edge daemon's inbox as the relay-attested, projected interrupt;
``list`` never shows a secret; ``rotate-secret --grace 0`` retires the old secret at
once; a pause reaches the other process and ``show`` lists the refusal; a deleted hook's
deliveries are 410."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from hookrelay_support import body_of, deliver
from hooks_support import github_headers
from tests_support import (
    NatsServer,
    enroll,
    mailslot,
    relay_processes,
    running_edge,
    wait_until,
)

from relay.adminauth import ADMIN_KEY_FILE

PR = {"action": "opened", "pull_request": {"number": 7, "title": "Fix the door",
                                           "html_url": "https://gh/pr/7", "body": "long"},
      "repository": {"full_name": "acme/door"}, "sender": {"login": "octo"}}


def ok(home: Path, *args: str) -> Any:
    result = mailslot(home, "relay", "hook", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if "--json" in args else result.stdout


async def test_a_hook_made_with_the_cli_delivers_through_any_relay_process(
        tmp_path: Path, nats_server: NatsServer) -> None:
    async with relay_processes(nats_server.url, tmp_path) as (first, second):
        alice = await enroll(first, "acme", tmp_path / "alice")
        laptop = tmp_path / "laptop"
        remote = ("--relay", first.url, "--admin-key-file", str(first.data_dir / ADMIN_KEY_FILE))
        made = ok(laptop, "create", "ci", "--to", alice.id, "--source", "github",
                  "--filter-event", "pull_request", "--where", "payload.action in opened,closed",
                  "--public-url", "https://relay.example", *remote, "--json")
        hook_id, secret = made["id"], made["secret"]
        assert made["url"] == f"https://relay.example/v1/hooks/{hook_id}"
        assert isinstance(secret, str) and len(secret) >= 32
        stripe = mailslot(laptop, "relay", "hook", "create", "billing", "--to", alice.id,
                          "--source", "stripe", *remote)  # text: the provider makes its secret
        assert stripe.returncode == 0, stripe.stderr
        assert "url:    http://127.0.0.1:" in stripe.stdout and "secret" not in stripe.stdout
        assert "warning: no secret yet" in stripe.stderr
        listed = mailslot(laptop, "relay", "hook", "list", *remote, "--json")
        assert listed.returncode == 0 and secret not in listed.stdout
        assert [h["name"] for h in json.loads(listed.stdout)] == ["ci", "billing"]

        body = body_of(PR)
        path = f"/v1/hooks/{hook_id}"

        async def accepted_by_second() -> bool:  # its registry watch has the new record
            response = await deliver(second, path, body, github_headers(
                body, secret, "pull_request", "d-1"))
            return response.status_code == 202

        assert await wait_until(accepted_by_second, 30, "second relay accepts the hook")

        def inbox_rows() -> list[Any]:
            inbox = alice.inbox()
            try:
                return inbox.list()
            finally:
                inbox.close()

        async with running_edge(alice):
            rows = await wait_until(inbox_rows, 60, "webhook in inbox")
        (item,) = rows
        assert (item.source_kind, item.source_name, item.type) == (
            "webhook", "ci", "github.pull-request.opened")
        assert first.identity is not None and item.signer == first.identity.id
        assert item.payload is not None and item.payload["pull_request"] == {
            "number": 7, "title": "Fix the door", "html_url": "https://gh/pr/7"}
        assert json.loads(item.envelope)["source"]["event_id"] == "d-1"

        rotated = ok(laptop, "rotate-secret", hook_id, "--grace", "0", *remote)
        new = rotated.split("secret (shown once): ")[1].strip()
        assert new and new != secret
        old_sig = github_headers(body, secret, "pull_request", "d-2")
        assert (await deliver(first, path, body, old_sig)).status_code == 401
        fresh = await deliver(first, path, body, github_headers(body, new, "pull_request", "d-2"))
        assert fresh.status_code == 202, fresh.text

        key = (first.data_dir / ADMIN_KEY_FILE).read_text().strip()
        async with httpx.AsyncClient(base_url=first.url, timeout=10,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            paused = await client.post(f"/v1/admin/hooks/{hook_id}/pause")
        assert paused.json()["hook"]["paused"] is True

        async def paused_on_second() -> bool:
            response = await deliver(second, path, body, github_headers(
                body, new, "pull_request", "d-3"))
            return response.status_code == 503 and response.json()["error"] == "hook_paused"

        assert await wait_until(paused_on_second, 30, "second relay sees the pause")
        shown = ok(laptop, "show", hook_id, *remote)
        assert "hook_paused" in shown and secret not in shown and new not in shown
        async with httpx.AsyncClient(base_url=first.url, timeout=10,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            assert (await client.delete(f"/v1/admin/hooks/{hook_id}")).status_code == 200
        gone = await deliver(first, path, body, github_headers(body, new, "pull_request", "d-4"))
        assert (gone.status_code, gone.json()["error"]) == (410, "hook_deleted")
