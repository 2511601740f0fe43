"""Real parts for tests: a real nats-server (JetStream, temp store, free port), a real
relay on a real socket, real edges with real SQLite inboxes. No mocks of any of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_support import (
    Member,
    NatsServer,
    enroll,
)

from relay.config import RelayConfig, StreamSettings
from relay.server import RelayServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.kill()



@pytest.fixture
def relay_config(tmp_path: Path, nats_server: NatsServer) -> RelayConfig:
    return RelayConfig(
        listen="127.0.0.1:0",
        nats=(nats_server.url,),
        data_dir=tmp_path / "relay",
        stream=StreamSettings(ack_wait=5.0),
    )



@pytest.fixture
async def relay(relay_config: RelayConfig) -> AsyncIterator[RelayServer]:
    server = RelayServer(relay_config)
    await server.start()
    yield server
    await server.stop()



@pytest.fixture
def make_member(relay: RelayServer, tmp_path: Path) -> Callable[..., Any]:
    counter = iter(range(1000))

    async def make(account: str = "acme", with_home: bool = True) -> Member:
        home = tmp_path / f"edge{next(counter)}" if with_home else None
        return await enroll(relay, account, home)

    return make

