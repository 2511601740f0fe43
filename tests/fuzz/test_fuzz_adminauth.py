"""The admin API's ``Authorization`` header on a real relay process, fuzzed: any octets
HTTP can carry, hostile ``Mailslot-Signature`` fields, real signatures by an admin
identity sent to another path or with another body or replayed, real signatures by an
identity that is no admin.

Properties, for every example: never a 5xx; always a refusal with its code — ``400
missing_auth`` (a ``Mailslot-Signature`` not exactly of its format), ``401`` (no or a
wrong credential, a bad, stale or replayed signature, an unknown signer), ``403
not_admin``; the registry exactly as it was; the keep-alive connection kept."""

from __future__ import annotations

import json
import time

from hypothesis import given
from hypothesis import strategies as st

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import header_value
from fuzz.test_fuzz_admin import admin_key, snapshot
from relay.adminauth import BY_KEY, grant_admin, revoke_admin
from relay.registry import Registry
from shared.auth import request_header

A = "/v1/admin/accounts"
CODES = {
    400: {"missing_auth"},
    401: {"missing_token", "invalid_token", "bad_auth", "bad_signature", "stale_request",
          "replayed_request"},
    403: {"not_admin"},
}
#: Octets a header value may hold on the wire (h11, the client, sends nothing else):
#: tab, printable ASCII and obs-text, no leading or trailing blank.
octets = st.lists(st.one_of(st.just(9), st.integers(0x20, 0x7E), st.integers(0x80, 0xFF)),
                  max_size=120).map(lambda b: bytes(b).strip(b" \t"))
ts_text = st.one_of(st.sampled_from(["0", "9" * 12, "9" * 13, "-1", "1e9", "", "\u0661"]),
                    st.integers(0, 10**12).map(str))


def test_fuzz_admin_authorization(harness: Harness, http: KeepAlive) -> None:
    carol, alice = harness.carol, harness.alice  # carol: an admin identity, for now
    registry = Registry(harness.relay.store)
    harness.bg.run(grant_admin(registry, carol.id, BY_KEY))
    used: list[str] = []

    def real(signer: str, method: str, path: str, body: bytes, ts: int | None = None) -> str:
        member = carol if signer == "carol" else alice
        header = request_header(member.identity, method, path,
                                int(time.time()) if ts is None else ts, body)
        used.append(header)
        return header

    @st.composite
    def authorization(draw: st.DrawFn) -> bytes | None:
        kind = draw(st.sampled_from(["none", "octets", "text", "bearer", "fields",
                                     "other-path", "other-body", "stale", "replay",
                                     "not-admin"]))
        if kind == "none":
            return None
        if kind == "octets":
            return draw(octets)
        if kind == "text":
            return draw(header_value).encode()
        if kind == "bearer":
            return (b"Bearer " + draw(octets)).strip()
        if kind == "fields":
            fields = {
                "id": draw(st.one_of(st.just(carol.id), header_value.map(lambda v: v[:40]))),
                "ts": draw(ts_text),
                "nonce": draw(st.from_regex(r"[ -+\--~]{0,70}", fullmatch=True)),
                "sig": draw(st.from_regex(r"[ -+\--~]{0,90}", fullmatch=True)),
            }
            order = draw(st.permutations(list(fields)))
            parts = [f"{k}={fields[k]}" for k in order[: draw(st.integers(0, 4))]]
            return ("Mailslot-Signature " + ",".join(parts)).strip().encode()
        if kind == "other-path":
            return real("carol", "POST", A + "/acme", b"").encode()
        if kind == "other-body":
            return real("carol", "POST", A, b'{"name": "other"}').encode()
        if kind == "stale":
            return real("carol", "POST", A, b"", draw(st.sampled_from([0, 10**11]))).encode()
        if kind == "replay" and used:
            return draw(st.sampled_from(used)).encode()
        return real("alice", "POST", A, b'{"name": "fuzzed"}').encode()

    @given(header=authorization())
    def check(header: bytes | None) -> None:
        headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
        if header is not None:
            headers["Authorization"] = header
        before = snapshot(harness)
        response = http.request("POST", A, content=json.dumps({"name": "fuzzed"}).encode(),
                                headers=headers)
        assert_answer(response)
        assert response.status_code in CODES, response.text
        assert response.json()["error"] in CODES[response.status_code], response.text
        assert snapshot(harness) == before

    try:
        check()
        # A request carol really signed works: the fuzzing above was refused for cause.
        header = real("carol", "GET", A, b"")
        response = http.request("GET", A, headers={"Authorization": header})
        assert response.status_code == 200, response.text
        bearer = http.request("GET", A, headers={"Authorization": f"Bearer {admin_key(harness)}"})
        assert bearer.status_code == 200
    finally:
        harness.bg.run(revoke_admin(harness.relay.store, carol.id))
    assert harness.relay.errors_logged() == []
