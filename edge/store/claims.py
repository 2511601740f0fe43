"""Who may claim an inbox item, and for how long: the owner and lease rules; and which
sessions' wakes a ``mailslot mcp --channel`` claims.

A claim (``Inbox.claim``) names its owner and lasts a lease; ``mailslot inbox next
--claim``, the MCP tools and ``Inbox`` itself check both here, so the CLI and the MCP
server refuse the same values with the same words. A channel started with ``--session S``
claims only the ``mcp`` deliveries of session ``S`` (``channel_sessions``; with
``--include-unsessioned`` also those of no session), so two Claude Code sessions on one
edge each get their own. No files, no database.
"""

from __future__ import annotations

import os
import re
import socket

from shared.tokens import check_session

#: Bounds of a claim's lease, in seconds: long enough to be meaningful, short enough that
#: a puller that died does not hide an item for more than a day.
LEASE_MIN = 1.0
LEASE_MAX = 24 * 3600.0
#: The lease ``mailslot inbox next --claim`` takes when given none.
DEFAULT_LEASE = 300.0
#: Claim owner names. ``@`` is allowed so that the default ``pid-<pid>@<host>`` is valid.
_OWNER_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def check_owner(owner: str) -> str:
    """``owner`` if it is a valid claim owner name (``[A-Za-z0-9_.:@-]{1,64}``), else
    ``ValueError``."""
    if not isinstance(owner, str) or not _OWNER_RE.fullmatch(owner):
        raise ValueError(
            f"{owner!r} is not a claim owner name (1-64 of letters, digits, '_.:@-')"
        )
    return owner


def check_lease(seconds: float) -> float:
    """``seconds`` as a float if it is a valid lease (1 s to 24 h), else ``ValueError``."""
    lease = float(seconds)
    if not LEASE_MIN <= lease <= LEASE_MAX:  # also refuses NaN
        raise ValueError(f"a lease must be between 1s and 24h (got {seconds!r} seconds)")
    return lease


def channel_sessions(session: str | None, include_unsessioned: bool = False
                     ) -> tuple[str, ...] | None:
    """The delivery sessions a channel claims (``DeliveryQueue.claim(sessions=…)``):
    ``None`` (every session) without ``session``; else ``(session,)``, and ``''`` (no
    session) too with ``include_unsessioned``. ``ValueError`` for a session name that is
    not one, or ``include_unsessioned`` without a session."""
    if session is None:
        if include_unsessioned:
            raise ValueError("--include-unsessioned needs --session")
        return None
    check_session(session)
    return (session, "") if include_unsessioned else (session,)


def default_owner() -> str:
    """This process's claim owner name when it gives none: ``pid-<pid>@<host>`` (the host
    name reduced to valid characters, the whole cut to 64). It is unique per process, so
    a claim taken with it can be acked only by the same process; a puller that acks from
    another process (a shell script running one command per step) must name itself."""
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname()) or "localhost"
    return f"pid-{os.getpid()}@{host}"[:64]
