"""Stream and bucket settings have one source of truth: the settings of ``relay serve``,
applied by ``Store.ensure`` at its start and nowhere else.

On a real 3-node cluster: replicas are scaled up by a relay configured for more, never
down (a relay started with fewer is refused, exit 6 ``replicas_conflict``, changing
nothing); an admin command and a client that only opens what exists (``Store.open_existing``) change nothing (the
issue-12 bug: ``relay account create`` used to set the stream up again with default
settings, which left the interrupt stream with one replica). On one node: the limits
follow the relay's settings, each change logged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from cluster_support import ClusterRelay, NatsCluster, admin_cli, connect, stream_replicas
from tests_support import NatsServer, mailslot, wait_until

from relay.config import StreamSettings
from relay.errors import StartupFailed, StoreUnavailable
from relay.layout import BUCKETS, LINKS_STREAM, STREAM, USAGE_STREAM
from relay.store import Store

#: Every stream a relay sets up (a KV bucket is the stream ``KV_<bucket>``).
ALL = (STREAM, *(f"KV_{b.name}" for b in BUCKETS), USAGE_STREAM, LINKS_STREAM)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path_factory.mktemp("cluster"))
    started.start()
    yield started
    started.stop()


@pytest.fixture
async def nc(cluster: NatsCluster) -> AsyncIterator[nats.NATS]:
    await cluster.wait_healthy()
    conn = await connect(cluster)
    js = conn.jetstream()
    for name in ALL:  # every test starts from a cluster no relay has set up
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(name)

    async def gone() -> bool:  # a deletion is the meta leader's first; then every node's
        for name in ALL:
            try:
                await js.stream_info(name)
                return False
            except nats.js.errors.NotFoundError:
                pass
        return True

    await wait_until(gone, 30, "every stream deleted")
    await cluster.wait_healthy()
    yield conn
    await conn.close()


async def replicas(nc: nats.NATS) -> dict[str, int]:
    return {name: await stream_replicas(nc, name) for name in ALL}


async def ensure(urls: list[str], settings: StreamSettings) -> None:
    store = await Store.connect(urls, settings)
    try:
        await store.ensure()
    finally:
        await store.close()


async def test_replicas_are_scaled_up_by_a_relay_and_never_down(
    cluster: NatsCluster, nc: nats.NATS, tmp_path: Path
) -> None:
    await ensure(cluster.urls, StreamSettings(replicas=1))
    assert await replicas(nc) == dict.fromkeys(ALL, 1)

    await ensure(cluster.urls, StreamSettings(replicas=3))  # a relay with --replicas 3
    assert await replicas(nc) == dict.fromkeys(ALL, 3)

    with pytest.raises(StartupFailed) as refused:
        await ensure(cluster.urls, StreamSettings(replicas=1))
    assert refused.value.code == "replicas_conflict"
    assert "\n" not in refused.value.message
    assert refused.value.message.startswith(
        "stream MAILSLOT has 3 replicas and this relay is configured for 1: "
        "start it with --replicas 3")
    assert await replicas(nc) == dict.fromkeys(ALL, 3), "a refusal changes nothing"

    # The same through the command line: one line, exit 6, nothing changed.
    result = mailslot(tmp_path / "home", "relay", "serve", "--listen", "127.0.0.1:0",
                      "--nats", cluster.url_list, timeout=60)
    assert result.returncode == 6, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mailslot: replicas_conflict: stream MAILSLOT has 3 replicas"), last
    assert await replicas(nc) == dict.fromkeys(ALL, 3)


async def test_admin_commands_and_clients_beside_the_relay_change_no_setting(
    cluster: NatsCluster, nc: nats.NATS, tmp_path: Path
) -> None:
    relay = ClusterRelay(cluster, tmp_path / "relay")  # --replicas 3
    try:
        await relay.start()
        assert await replicas(nc) == dict.fromkeys(ALL, 3)
        result = admin_cli(tmp_path / "admin", relay, "account", "create", "acme")
        assert result.returncode == 0, result.stderr
        assert await replicas(nc) == dict.fromkeys(ALL, 3), "an admin command scaled down"

        # A client beside the relay (a tool, a test) with default settings only opens what exists.
        other = await Store.connect(cluster.urls, StreamSettings())
        try:
            await other.open_existing()
            assert await other.kv_keys("account.") == ["account.acme"]
        finally:
            await other.close()
        assert await replicas(nc) == dict.fromkeys(ALL, 3)
    finally:
        await relay.close()


async def stream_config(url: str) -> dict[str, object]:
    conn = await nats.connect(url)
    try:
        info = await conn.jetstream().stream_info(STREAM)
        return vars(info.config)
    finally:
        await conn.close()


async def test_the_limits_follow_the_relays_settings_and_each_change_is_logged(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    urls = [nats_server.url]
    caplog.set_level(logging.WARNING, logger="mailslot.relay.store")
    await ensure(urls, StreamSettings(max_bytes=40_000, max_per_recipient=50))
    config = await stream_config(nats_server.url)
    assert (config["max_bytes"], config["max_msgs_per_subject"]) == (40_000, 50)
    assert config["num_replicas"] == 1
    assert not caplog.records, "creating the stream is no change"

    await ensure(urls, StreamSettings(max_bytes=40_000, max_per_recipient=50))
    assert not caplog.records, "the same settings again: nothing to change"

    other = await Store.connect(urls, StreamSettings())  # opens: never applies these
    try:
        await other.open_existing()
    finally:
        await other.close()
    assert (await stream_config(nats_server.url))["max_bytes"] == 40_000

    await ensure(urls, StreamSettings())  # a relay started without the [stream] cap
    config = await stream_config(nats_server.url)
    assert (config["max_bytes"], config["max_msgs_per_subject"]) == (-1, 100_000)
    [record] = caplog.records
    assert record.getMessage() == (
        "stream MAILSLOT: max_msgs_per_subject 50 -> 100000, max_bytes 40000 -> -1 "
        "(this relay's settings)")


async def test_open_existing_needs_a_relay_to_have_set_the_nats_up(nats_server: NatsServer) -> None:
    store = await Store.connect([nats_server.url], StreamSettings())
    try:
        with pytest.raises(StoreUnavailable, match="no relay has set up this NATS yet"):
            await store.open_existing()
        assert not store.ready
    finally:
        await store.close()
    conn = await nats.connect(nats_server.url)
    try:
        names = await conn.jetstream().streams_info()
        assert names == [], "open_existing created something"
    finally:
        await conn.close()
