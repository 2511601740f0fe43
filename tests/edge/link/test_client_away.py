"""``edge.link.client``: which failed dials mean "the network is away" (the next dial
follows within ``AWAY_RETRY``) and which mean someone refused (back off)."""

from __future__ import annotations

import errno
import socket

import pytest

from edge.errors import LinkClosed
from edge.link.client import network_away


@pytest.mark.parametrize("exc", [
    TimeoutError("timed out during opening handshake"),
    OSError(errno.ENETUNREACH, "Network is unreachable"),
    OSError(errno.EHOSTUNREACH, "No route to host"),
    OSError(errno.ENETDOWN, "Network is down"),
    socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
])
def test_no_answer_at_all_is_the_network_away(exc: BaseException) -> None:
    assert network_away(exc)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
    LinkClosed("relay refused the link: account_disabled"),
])
def test_a_refusal_is_not(exc: BaseException) -> None:
    assert not network_away(exc)

