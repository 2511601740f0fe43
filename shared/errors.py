"""One error tree for the protocol, split by who is at fault (as h11 does).

::

    MailslotError
    ├── LocalProtocolError       this side misused the protocol (a bug here)
    └── RemoteProtocolError      the peer sent something we refuse
        ├── MalformedInput       not JSON, not the expected document        400
        ├── InvalidToken         identity/subject/name outside the alphabet 422
        ├── InvalidEnvelope      envelope fields that break a rule, unknown 422
        ├── Expired              envelope past its expires_at               422
        ├── TooLarge             payload, envelope or frame over its cap     413
        ├── LimitExceeded        too deep, non-finite or unsafe number, bad   422
        │                        text, created_at in the future (shared.limits)
        ├── BadSignature         signature does not verify                  401
        ├── UntrustedSigner      signer not trusted for this recipient      403
        ├── WrongRecipient       envelope addressed to someone else         403
        ├── InvalidIdentity      identity document not self-certifying      422
        ├── SealError            sealed payload cannot be opened            422
        └── LinkError            WebSocket frame out of order or unknown    close 4400

Every remote error carries ``code`` (machine-readable, stable), ``status`` (the HTTP
status it maps to) and ``close_code`` (the WebSocket close code it maps to). Adapters
(the relay's HTTP and WebSocket handlers, the edge link) turn these into responses at one
boundary; nothing else needs to know the mapping.
"""

from __future__ import annotations


class MailslotError(Exception):
    """Root of every error raised by mailslot's protocol code."""


class LocalProtocolError(MailslotError):
    """This side tried something the protocol forbids: a programming error, not input."""


class RemoteProtocolError(MailslotError):
    """Input from the outside breaks a rule. Refuse it; change nothing."""

    status: int = 400
    code: str = "bad_request"
    close_code: int = 4400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        """The JSON body of an error response: ``{"error": code, "message": text}``."""
        return {"error": self.code, "message": self.message}


class MalformedInput(RemoteProtocolError):
    status, code = 400, "malformed"


class InvalidToken(RemoteProtocolError, ValueError):
    """Also a ``ValueError`` so that pydantic validators report it with the field name."""

    status, code = 422, "invalid_token"


class InvalidEnvelope(RemoteProtocolError):
    status, code = 422, "invalid_envelope"


class Expired(RemoteProtocolError):
    status, code = 422, "expired"


class TooLarge(RemoteProtocolError):
    status, code, close_code = 413, "too_large", 1009


class LimitExceeded(RemoteProtocolError):
    """A value outside ``shared.limits``: ``too_deep``, ``non_finite_number``,
    ``number_out_of_range``, ``invalid_string``, ``clock_skew``."""

    status, code = 422, "limit_exceeded"


class BadSignature(RemoteProtocolError):
    status, code, close_code = 401, "bad_signature", 4401


class UntrustedSigner(RemoteProtocolError):
    status, code, close_code = 403, "untrusted_signer", 4403


class WrongRecipient(RemoteProtocolError):
    status, code, close_code = 403, "wrong_recipient", 4403


class InvalidIdentity(RemoteProtocolError):
    status, code = 422, "invalid_identity"


class SealError(RemoteProtocolError):
    status, code = 422, "seal_error"


class LinkError(RemoteProtocolError):
    status, code, close_code = 400, "link_error", 4400
