"""Helpers for the webhook ingress tests against a real relay (``tests/relay/hooks/
test_routes*.py``, ``tests/system/test_webhooks.py``): the admin credential, hooks made
through the admin API, deliveries posted as a provider posts them (signed by
``hooks_support``, from each provider's documentation), and what the hooks bucket holds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from relay_support import admin_key_fixture as admin_key_fixture  # re-exported fixture

from relay.hooks.registry import HookRegistry
from relay.server import RelayServer

SOON = 10.0
ADMIN = "/v1/admin/hooks"


async def admin(relay: RelayServer, key: str | None, method: str, path: str,
                body: Any = None, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.request(method, path, json=body, headers=headers,
                                    params=params or None)


async def create_hook(relay: RelayServer, key: str, **body: Any) -> dict[str, Any]:
    """A hook made through ``POST /v1/admin/hooks``: the answer (hook, path, secret)."""
    response = await admin(relay, key, "POST", ADMIN, body)
    assert response.status_code == 201, response.text
    doc: dict[str, Any] = response.json()
    return doc


async def deliver(relay: RelayServer, path: str, body: bytes, headers: dict[str, str],
                  content_type: str | None = "application/json") -> httpx.Response:
    """POST ``body`` (exactly these bytes) to a hook's path, as a provider does."""
    sent = dict(headers)
    if content_type is not None and not any(k.lower() == "content-type" for k in sent):
        sent["Content-Type"] = content_type
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post(path, content=body, headers=sent)


def body_of(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def now() -> int:
    return int(time.time())


async def seen(relay: RelayServer, hook_id: str, delivery_id: str) -> bool:
    assert relay.store is not None
    return await HookRegistry(relay.store).seen(hook_id, delivery_id)


def metric(text: str, outcome: str, hook: str) -> float:
    """The value of ``mailslot_relay_webhook_deliveries_total`` for one hook and outcome."""
    for line in text.splitlines():
        if (line.startswith("mailslot_relay_webhook_deliveries_total{")
                and f'hook="{hook}"' in line and f'outcome="{outcome}"' in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
