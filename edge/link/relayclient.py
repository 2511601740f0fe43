"""The edge's HTTP calls to its relay: enrollment, identity look-ups, grants, sending.

Every non-2xx answer becomes a ``RelayRefused`` carrying the relay's status and
machine-readable code, so the CLI can print exactly what the relay said; a relay that
cannot be reached (or a URL that names none) is ``RelayUnreachable``. This is the link's
one ``httpx`` import: no httpx exception leaves it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from edge.errors import RelayRefused, RelayUnreachable
from shared.auth import enroll_message, request_header, sign_b64
from shared.identity import Identity, PublicIdentity
from shared.signing import SignedEnvelope


class RelayClient:
    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        try:
            self.http = httpx.Client(base_url=self.base_url, timeout=timeout)
        except httpx.InvalidURL as exc:  # not an HTTPError: raised before any request
            raise RelayUnreachable(f"cannot reach relay at {self.base_url}: {exc}") from exc

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RelayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RelayUnreachable(f"cannot reach relay at {self.base_url}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 300:
            raise RelayRefused(
                response.status_code,
                str(body.get("error", "http_error")),
                str(body.get("message", response.text[:200])),
            )
        return dict(body)

    def enroll(self, token: str, identity: Identity) -> tuple[str, PublicIdentity]:
        """Enroll ``identity`` with a one-time token; return (account, relay identity).
        The relay's identity document is checked to be self-certifying before it is
        returned for pinning."""
        body = self._call(
            "POST",
            "/v1/enroll",
            json={
                "token": token,
                "identity": identity.public.to_doc(),
                "proof": sign_b64(identity, enroll_message(token, identity.id)),
            },
        )
        return str(body["account"]), PublicIdentity.from_doc(body["relay"])

    def identity(self, identity_id: str) -> PublicIdentity:
        """Look up an identity and check its keys derive from its id."""
        doc = self._call("GET", f"/v1/identities/{identity_id}")
        public = PublicIdentity.from_doc(doc)
        if public.id != identity_id:
            raise RelayRefused(200, "identity_mismatch", "relay returned another identity")
        return public

    def set_grant(self, identity: Identity, signer: str, granted: bool) -> None:
        path = f"/v1/identities/{identity.id}/grants/{signer}"
        method = "PUT" if granted else "DELETE"
        header = request_header(identity, method, path, int(time.time()), b"")
        self._call(method, path, headers={"Authorization": header})

    def post_signed(self, signed: SignedEnvelope) -> dict[str, Any]:
        return self._call(
            "POST",
            "/v1/interrupts",
            content=signed.to_wire(),
            headers={"Content-Type": "application/json"},
        )

    def post_draft(self, draft: dict[str, Any], token: str) -> dict[str, Any]:
        return self._call(
            "POST",
            "/v1/interrupts",
            content=json.dumps(draft).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
