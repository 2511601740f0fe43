"""The relay's NATS connection fails over across a cluster's nodes (``Store.connect``).

A cluster is often given by one URL (a DNS name, or the first node): the others are
learnt from the server (nats-py's discovered servers), whose URLs carry no credentials.
The relay must authenticate to those too, or losing the node it knows leaves it locked
out for good (``Authorization Violation`` on every reconnect)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cluster_support import NatsCluster
from tests_support import wait_until

from relay.config import StreamSettings
from relay.errors import StoreUnavailable
from relay.store import Store
from shared.envelope import Priority

TOKEN = "s3cr3t-cluster-token"


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path_factory.mktemp("cluster"), token=TOKEN)
    started.start()
    yield started
    started.stop()


async def test_given_one_node_the_relay_fails_over_to_nodes_it_only_learnt_of(
    cluster: NatsCluster,
) -> None:
    await cluster.wait_healthy()
    first = cluster.nodes[0]
    store = await Store.connect([f"nats://{TOKEN}@127.0.0.1:{first.port}"],
                                StreamSettings(replicas=3))
    try:
        await store.ensure()
        await wait_until(lambda: len(store.nc.discovered_servers) >= 2, 10,
                         "the other nodes learnt from the server")
        first.kill()
        await wait_until(lambda: store.nc.is_connected, 20, "reconnected to another node")

        async def stored() -> bool:
            try:
                await store.publish("a" * 32, Priority.now, "01J0000000000000000000000A",
                                    b"{}", None)
            except StoreUnavailable:  # the stream's new leader is being elected
                return False
            return True

        await wait_until(stored, 30, "a publish stored through the other nodes")
        assert (await store.pending("a" * 32))["now"] == 1
    finally:
        await store.close()
