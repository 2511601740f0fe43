"""``mailslot edge init`` and the first ``mailslot up``: create (or reuse) this edge's key,
enroll it with a relay, pin the relay's identity, save ``edge.json``, create the inbox.
"""

from __future__ import annotations

from edge.config import EdgeConfig, EdgePaths, save_config
from edge.errors import EdgeError, NotInitialized
from edge.link.keystore import load_identity, save_identity
from edge.link.relayclient import RelayClient
from edge.store.inbox import Inbox
from shared.identity import Identity


def enroll_edge(paths: EdgePaths, relay_url: str, token: str) -> EdgeConfig:
    """Enroll this edge with the relay at ``relay_url`` using the one-time ``token``;
    ``EdgeError`` if it is already enrolled (remove ``edge.json`` to re-enroll)."""
    if paths.config_file.exists():
        raise EdgeError(f"already initialized ({paths.config_file}); remove it to re-enroll")
    try:
        identity = load_identity(paths.key_file)
    except NotInitialized:
        identity = Identity.generate()
        save_identity(paths.key_file, identity)
    with RelayClient(relay_url) as client:
        _account, relay = client.enroll(token, identity)
    config = EdgeConfig(relay_url=relay_url, identity=identity.id, relay_identity=relay.to_doc())
    save_config(paths, config)
    Inbox.open(paths.inbox_file).close()
    return config
