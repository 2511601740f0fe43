"""The admin API of a real relay process, fuzzed: methods, paths (hostile account names
and ids), the ``Authorization`` header, content types and bodies.

Properties, for every example: never a 5xx; every refusal is ``{"error", "message"}``
with a request id; the keep-alive connection survives; without the right credential
the registry is exactly as it was; the harness's own accounts (whose members the other
fuzz tests use) are never touched; no interrupt is stored. At the end the relay still
serves, logged no unexpected failure, and alice's accepted interrupts reach her inbox.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import any_text, content_types, header_value, json_values
from relay.adminauth import ADMIN_KEY_FILE

#: Accounts the harness's members live in: the fuzzer may not disable or delete them.
PROTECTED = {"acme", "producers"}
A = "/v1/admin/accounts"


def admin_key(harness: Harness) -> str:
    return (harness.relay.data_dir / ADMIN_KEY_FILE).read_text().strip()


def snapshot(harness: Harness) -> dict[str, Any]:
    """Every registry key and record (the nonce bucket aside)."""

    async def read() -> dict[str, Any]:
        store = harness.relay.store
        assert store is not None
        out: dict[str, Any] = {}
        for key in await store.kv_keys(""):
            found = await store.kv_get(key)
            out[key] = found[0] if found is not None else None
        return out

    return harness.bg.run(read())


names = st.one_of(
    st.sampled_from(["fuzzed", "ghost", "a", "x" * 64, "x" * 65, "Fuzz", "a.b", "..", "*", ">"]),
    any_text,
).filter(lambda n: n not in PROTECTED)
ids = st.one_of(st.sampled_from(["0123456789abcdef0123", "a" * 32, ""]), any_text)
paths = st.one_of(
    st.just(A),
    st.tuples(names, st.sampled_from(["", "/disable", "/enable", "/enrollments", "/tokens",
                                      "/identities", "/nothing"]))
      .map(lambda t: f"{A}/{quote(t[0], safe='')}{t[1]}"),
    st.tuples(names, st.sampled_from(["enrollments", "tokens", "identities"]), ids)
      .map(lambda t: f"{A}/{quote(t[0], safe='')}/{t[1]}/{quote(t[2], safe='')}"),
    any_text.map(lambda t: "/v1/admin/" + quote(t, safe="/")),
)
bodies = st.one_of(
    st.none(),
    json_values.map(json.dumps),
    st.fixed_dictionaries({}, optional={
        "name": st.one_of(names, json_values), "count": json_values,
        "expires_in": json_values, "to": json_values, "types": json_values,
    }).map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


def test_fuzz_admin_routes(harness: Harness, http: KeepAlive) -> None:
    key = admin_key(harness)

    @given(
        method=st.sampled_from(["GET", "POST", "DELETE", "PUT", "PATCH"]),
        path=paths,
        auth=st.one_of(st.none(), st.just("good"), st.just("Bearer msa_wrong"),
                       header_value, header_value.map(lambda v: ("Bearer " + v).strip())),
        body=bodies,
        content_type=st.one_of(st.just("application/json"), content_types),
    )
    def check(method: str, path: str, auth: str | None, body: str | None,
              content_type: str | None) -> None:
        headers = {}
        if auth is not None:
            headers["Authorization"] = f"Bearer {key}" if auth == "good" else auth
        if content_type is not None:
            headers["Content-Type"] = content_type
        before, stored = snapshot(harness), harness.stored()
        response = http.request(method, path, content=None if body is None else body.encode(),
                                headers=headers)
        assert_answer(response)
        after = snapshot(harness)
        if auth != "good":
            # 307: Starlette's redirect of a path with a trailing slash, to the one without.
            assert response.status_code in (307, 401, 404, 405, 413), response.text
            assert after == before
        for account in PROTECTED:
            kept = {k: v for k, v in before.items() if account in json.dumps(v) or account in k}
            assert {k: after.get(k) for k in kept} == kept, f"{method} {path} touched {account}"
        assert harness.stored() == stored

    check()
    assert http.request("GET", "/healthz").status_code == 200
    assert harness.relay.errors_logged() == []
    harness.assert_accepted_reach_the_inbox()
