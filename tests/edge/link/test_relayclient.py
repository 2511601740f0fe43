"""The relay HTTP client is the link's one ``httpx`` adapter: what goes wrong below it
reaches the caller as the edge's own errors (``RelayUnreachable``, ``RelayRefused``),
never as an httpx exception."""

from __future__ import annotations

import socket

import pytest

from edge.errors import RelayUnreachable
from edge.link.relayclient import RelayClient


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_url_httpx_cannot_parse_is_unreachable_not_an_httpx_error() -> None:
    with pytest.raises(RelayUnreachable, match=r"cannot reach relay at http://\[::1"):
        RelayClient("http://[::1")


def test_nobody_listening_is_unreachable() -> None:
    client = RelayClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with client, pytest.raises(RelayUnreachable) as raised:
        client.identity("a" * 32)
    assert raised.value.code == "relay_unreachable"
