"""A producer over its limits is refused from its request's head (``Ingest.refuse_early``),
on a real relay and nats-server: the same status, code and Retry-After the whole path
gives, before its body is parsed (a body that would be refused too is told the limit);
every other request keeps its usual order of refusals. And the pending counts behind it
(``relay.quota``): read in the background once half their lifetime is gone, one read at
a time however many requests need one."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from relay_support import SOON, draft, refused
from tests_support import NatsServer, enroll

from relay.config import Plan, RelayConfig, parse_plans
from relay.quota import PendingQuota
from relay.registry import Registry
from relay.server import RelayServer

PLANS = """
default_plan = "open"
[plans.open]
[plans.capped]
max_pending = 2
[plans.slow]
account_rate = 0.05
account_burst = 1
"""


@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    found = parse_plans(PLANS, "plans.toml")
    return RelayConfig(listen="127.0.0.1:0", nats=(nats_server.url,), data_dir=tmp_path / "r",
                       plans=found.plans, default_plan=found.default_plan)


async def post_raw(relay: RelayServer, body: bytes, token: str | None,
                   path: str = "/v1/interrupts", media: str = "application/json"
                   ) -> httpx.Response:
    headers = {"Content-Type": media}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        return await client.post(path, content=body, headers=headers)


async def test_an_account_at_its_cap_or_rate_is_refused_before_its_body_is_read(
    relay: RelayServer, relay_config: RelayConfig
):
    registry = Registry(relay.store, relay_config)
    await registry.create_account("full", "capped")
    await registry.create_account("slow", "slow")
    full, slow, open_ = (await enroll(relay, "full"), await enroll(relay, "slow"),
                         await enroll(relay, "open"))
    for body in (draft(full.id), draft(full.id), draft(slow.id)):
        token = full.token if body["to"] == full.id else slow.token
        async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
            answer = await client.post("/v1/interrupts", json=body,
                                       headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202, answer.text
    refused(await post_raw(relay, b'{"to": ', full.token), 429, "quota_exceeded")  # the count
    refused(await post_raw(relay, b"not json", full.token), 429, "quota_exceeded")
    limited = await post_raw(relay, b"[1, 2", slow.token)
    refused(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1
    refused(await post_raw(relay, b"hello", slow.token, f"/v1/send/{slow.id}", "text/plain"),
            429, "rate_limited")
    # Anyone else: the body's refusal first, then the token's, as always.
    refused(await post_raw(relay, b"not json", open_.token), 400, "malformed_json")
    refused(await post_raw(relay, b"not json", "msp_nope"), 400, "malformed_json")
    refused(await post_raw(relay, b"{}", "msp_nope"), 401, "invalid_token")
    refused(await post_raw(relay, b"not json", full.token, media="text/plain"), 415,
            "unsupported_media_type")  # the label is read before the limits


class SlowCounts:
    """``Store.pending`` that answers when told to, counting the reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.go = asyncio.Event()

    async def pending(self, identity: str) -> dict[str, int]:
        self.reads += 1
        await self.go.wait()
        return {"next": 3}


async def test_counts_are_read_ahead_in_the_background_and_shared_when_needed():
    counts, now = SlowCounts(), [100.0]
    quota = PendingQuota(counts, ttl=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    plan = Plan(max_pending=10)

    async def ids() -> list[str]:
        return ["alice"]

    checks = [asyncio.ensure_future(quota.check("acme", ids, plan)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert counts.reads == 1  # five requests, one read
    counts.go.set()
    await asyncio.gather(*checks)
    assert quota.known_refusal("acme", plan) is None and quota.fresh("acme")
    now[0] += 0.6  # past half its lifetime: answered at once, read again behind it
    counts.go.clear()
    await asyncio.wait_for(quota.check("acme", ids, plan), 1)
    await asyncio.sleep(0.01)
    assert counts.reads == 2
    await quota.check("acme", ids, plan)  # one read at a time
    assert counts.reads == 2
    counts.go.set()
    await asyncio.sleep(0.01)
    # 3 queued + the one let through while the read was out (counted twice at worst)
    assert quota._counts["acme"][0] == 4.0
    assert quota.known_refusal("acme", Plan(max_pending=4)) is not None
    now[0] += 5  # an old count answers nothing
    assert quota.known_refusal("acme", Plan(max_pending=4)) is None
    assert not quota.fresh("acme")
