"""``mailslot edge run``: the edge daemon's lifecycle.

start: load config and key (refusing a key file others can read), open the inbox →
run: the outbound link until stopped → stop: close the link (unacked deliveries go back
to the relay), mark the status disconnected, close the inbox. Nothing runs after stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from edge.config import EdgeConfig, EdgePaths, load_config
from edge.inbox import Inbox
from edge.keystore import load_identity
from edge.link import EdgeLink
from edge.receiver import Receiver
from shared.identity import Identity

log = logging.getLogger("mailslot.edge")


class EdgeDaemon:
    def __init__(self, paths: EdgePaths) -> None:
        self.paths = paths
        self.config: EdgeConfig | None = None
        self.identity: Identity | None = None
        self.link: EdgeLink | None = None
        self._inboxes: list[Inbox] = []

    def start(self) -> None:
        self.config = load_config(self.paths)
        self.identity = load_identity(self.paths.key_file)
        status_inbox = Inbox.open(self.paths.inbox_file)
        receiver_inbox = Inbox.open(self.paths.inbox_file)
        self._inboxes = [status_inbox, receiver_inbox]
        receiver = Receiver(self.identity, self.config.relay_public(), receiver_inbox)
        self.link = EdgeLink(self.config, self.identity, status_inbox, receiver)
        status_inbox.set_status(
            identity=self.identity.id,
            relay=self.config.relay_url,
            pid=os.getpid(),
            connected=False,
        )

    async def run(self, stop: asyncio.Event) -> None:
        assert self.link is not None, "call start() first"
        log.info("edge %s starting; relay %s", self.link.identity.id, self.link.config.relay_url)
        try:
            await self.link.run(stop)
        finally:
            self.stop()

    def stop(self) -> None:
        for inbox in self._inboxes:
            with contextlib.suppress(Exception):
                inbox.set_status(connected=False, pid=None)
                break
        for inbox in self._inboxes:
            inbox.close()
        self._inboxes = []
