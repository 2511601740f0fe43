"""Relay errors. Each carries the HTTP status and the machine-readable code it maps to;
``relay.app`` turns any of them (or a ``shared.errors.RemoteProtocolError``) into
``{"error": code, "message": text}`` at one place.

::

    RelayError
    ├── Unauthorized        401  missing_token / invalid_token / bad_auth
    ├── Forbidden           403  recipient_not_allowed / untrusted_signer
    ├── NotFound            404  unknown_identity / unknown_account
    ├── Conflict            409  exists / token_used
    ├── QueueFull           429  queue_full (the recipient's per-priority cap)
    └── StoreUnavailable    503  store_unavailable (JetStream did not acknowledge)
"""

from __future__ import annotations

from shared.errors import MailslotError


class RelayError(MailslotError):
    status: int = 500
    code: str = "internal"
    close_code: int = 1011

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


class Unauthorized(RelayError):
    status, code, close_code = 401, "invalid_token", 4401


class Forbidden(RelayError):
    status, code, close_code = 403, "forbidden", 4403


class NotFound(RelayError):
    status, code, close_code = 404, "not_found", 4404


class Conflict(RelayError):
    status, code = 409, "exists"


class QueueFull(RelayError):
    status, code = 429, "queue_full"


class StoreUnavailable(RelayError):
    status, code, close_code = 503, "store_unavailable", 1013
