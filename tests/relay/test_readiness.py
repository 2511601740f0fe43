"""``GET /readyz`` (``relay.readiness``) on a real relay and nats-server: ready with a
stream leader; probes from many balancers at once share one ``STREAM.INFO`` a second;
not ready with a code while NATS is away, and ready again once it is back. (No quorum on
a 3-node cluster: ``tests/system/test_cluster.py``.)"""

from __future__ import annotations

import asyncio

import httpx
from relay_support import SOON, relay_config_fixture  # noqa: F401
from tests_support import NatsServer, wait_until

from relay.readiness import READY_TTL


async def test_probes_share_one_stream_info_a_second(relay):
    check = relay.app.state.ready_check
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        first = await client.get("/readyz")
        before = check.probes
        answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
    assert (first.status_code, first.json()) == (200, {"ready": True})
    assert {a.status_code for a in answers} == {200}
    assert check.probes - before <= 1 + int(READY_TTL)  # not one per probe


async def test_not_ready_with_a_code_while_nats_is_away_and_ready_again_after(
        relay, nats_server: NatsServer):
    async with httpx.AsyncClient(base_url=relay.url, timeout=SOON) as client:
        async def status() -> tuple[int, str]:
            answer = await client.get("/readyz")
            return answer.status_code, answer.json().get("error", "")

        nats_server.kill()
        down = await wait_until(lambda: _not(status), 10, "readyz 503")
        assert down[0] == 503 and down[1] in ("nats_disconnected", "no_stream_leader")
        nats_server.restart()
        await wait_until(lambda: _is(status, (200, "")), 30, "readyz 200 again")


async def _not(status) -> tuple[int, str] | None:
    got = await status()
    return got if got[0] != 200 else None


async def _is(status, want: tuple[int, str]) -> bool:
    return bool(await status() == want)
