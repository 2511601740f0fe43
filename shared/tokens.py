"""The strict alphabets for everything from the outside that may reach a NATS subject,
a KV key, a file name or a log line.

NATS subjects split on ``.`` and treat ``*`` and ``>`` as wildcards; a recipient id that
contained any of them could read or write another identity's queue. So every value that
ends up in a subject is checked here first, against an allow-list, never a deny-list.
"""

from __future__ import annotations

import re

from shared.errors import InvalidToken

#: An identity id: 32 chars of lowercase RFC 4648 base32 (see ``shared.identity``).
IDENTITY_RE = re.compile(r"[a-z2-7]{32}")
#: Account names, watch/intent ids and other user-chosen names.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
#: Interrupt types and source names: dotted words (never used as subject tokens).
TYPE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
#: Agent session / workspace names.
SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Free-form ids chosen by outside systems (event ids, dedupe keys): printable ASCII.
OPAQUE_RE = re.compile(r"[\x21-\x7e]{1,200}")


def _check(
    value: object, pattern: re.Pattern[str], what: str, code: str = "invalid_token"
) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidToken(
            f"{what} {value!r} is not allowed (must match {pattern.pattern})", code=code
        )
    return value


def check_identity(value: object) -> str:
    """Return ``value`` if it is a well-formed identity id, else raise ``InvalidToken``
    with code ``invalid_identity``."""
    return _check(value, IDENTITY_RE, "identity", "invalid_identity")


def check_name(value: object, what: str = "name") -> str:
    return _check(value, NAME_RE, what)


def check_type(value: object, what: str = "type") -> str:
    return _check(value, TYPE_RE, what)


def check_session(value: object) -> str:
    return _check(value, SESSION_RE, "session")


def check_opaque(value: object, what: str) -> str:
    return _check(value, OPAQUE_RE, what)
