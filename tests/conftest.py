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

from edge.config import EdgeConfig, EdgePaths, save_config
from edge.link.keystore import save_identity
from edge.store.inbox import Inbox
from relay.config import RelayConfig, StreamSettings
from relay.server import RelayServer
from shared.identity import Identity


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


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An edge home (``MAILSLOT_HOME``: its folders and an empty inbox), all the ``inbox``
    and ``hook`` commands need; ``EdgePaths.resolve({"MAILSLOT_HOME": str(home)})`` for
    its paths. ``enrolled_home`` makes it a whole one."""
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(tmp_path / "home")})
    paths.ensure()
    Inbox.open(paths.inbox_file).close()
    return tmp_path / "home"


@pytest.fixture
def enrolled_home(home: Path) -> Path:
    """``home`` as ``mailslot edge init`` leaves it: an identity key and an ``edge.json``
    pointed at a relay that is not there (a daemon's link retries, quickly; every other
    part runs; ``mailslot mcp`` needs no relay)."""
    paths = EdgePaths.resolve({"MAILSLOT_HOME": str(home)})
    identity = Identity.generate()
    save_identity(paths.key_file, identity)
    save_config(paths, EdgeConfig(
        relay_url="http://127.0.0.1:9", identity=identity.id,
        relay_identity=Identity.generate().public.to_doc(),
        reconnect_base=0.05, reconnect_cap=0.2,
    ))
    return home
