"""``PATCH /v1/admin/accounts/{account}`` (change an account's plan) on a real relay
process, fuzzed: bodies of any shape and content types, with the admin credential.

Properties, for every example: never a 5xx; every refusal is ``{"error", "message"}``
with its code and changes nothing in the registry; the only body accepted is a ``plan``
the relay defines (the harness relay has one, ``default``), and it changes only that
account's record; the keep-alive connection survives; no interrupt is stored.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import any_text, content_types, json_values
from fuzz.test_fuzz_admin import A, admin_key, snapshot

ACCOUNT = "fuzzplan"
plans = st.one_of(st.sampled_from(["default", "pro", "Default", "", "default ", "a" * 65]),
                  any_text, json_values)
bodies = st.one_of(
    st.fixed_dictionaries({"plan": plans}).map(json.dumps),
    st.fixed_dictionaries({}, optional={"plan": plans, "name": json_values,
                                        "disabled": json_values}).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


def test_fuzz_change_plan(harness: Harness, http: KeepAlive) -> None:
    headers = {"Authorization": f"Bearer {admin_key(harness)}"}
    made = http.request("POST", A, json={"name": ACCOUNT}, headers=headers)
    assert made.status_code in (201, 409), made.text  # 409: made by an earlier run

    @given(body=bodies, content_type=st.one_of(st.just("application/json"), content_types))
    def check(body: str, content_type: str | None) -> None:
        sent = dict(headers) | ({"Content-Type": content_type} if content_type else {})
        before, stored = snapshot(harness), harness.stored()
        response = http.request("PATCH", f"{A}/{ACCOUNT}", content=body.encode(),
                                headers=sent)
        assert_answer(response)
        after = snapshot(harness)
        if response.status_code == 200:
            assert json.loads(body) == {"plan": "default"}
            assert response.json()["plan"] == "default"
            changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
            assert changed <= {f"account.{ACCOUNT}"}, changed
        else:
            assert response.status_code in (400, 404, 413, 415, 422), response.text
            assert after == before
        assert harness.stored() == stored

    check()
    assert http.request("GET", "/healthz").status_code == 200
    assert harness.relay.errors_logged() == []
