"""Every HTTP route of a real relay process, fuzzed.

Properties, for every example: never a 5xx; every answer has an ``X-Request-Id``; every
refusal is ``{"error": code, "message": text}``; nothing is stored on a refusal and
exactly one interrupt on a 202; the keep-alive connection survives (``KeepAlive``) and
the relay still serves a good request. At the end of a test: every interrupt the relay
accepted reaches the inbox of alice's real edge daemon, which refuses none of them, and
the relay logged no unexpected failure.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import (
    any_text,
    content_types,
    draft_text,
    envelope_text,
    header_value,
    json_values,
    tokenish,
    ulids,
)
from shared.auth import request_header
from shared.encoding import b64e
from shared.errors import RemoteProtocolError
from shared.sealing import seal
from shared.signing import ENVELOPE_DOMAIN


def post_and_check(
    harness: Harness, http: KeepAlive, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    """POST an interrupt; check the answer and that JetStream holds one more message on
    a 202 and the same number otherwise."""
    before = harness.stored()
    response = http.request("POST", "/v1/interrupts", content=body, headers=headers)
    assert_answer(response)
    after = harness.stored()
    if response.status_code == 202:
        assert after == before + 1, response.text
        doc = response.json()
        assert doc["duplicate"] is False
        return response
    assert after == before, f"stored on {response.status_code}: {response.text}"
    return response


def seal_for(harness: Harness, text: str) -> tuple[str, bool]:
    """The draft ``text`` with its payload (if any, and if it is an object within the
    limits) sealed for real to alice, under an id of its own; and whether it was."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return text, False
    payload = doc.get("payload") if isinstance(doc, dict) else None
    if not isinstance(payload, dict):
        return text, False
    envelope_id = str(ULID())
    try:
        sealed = seal(payload, harness.alice.identity.public.box_key, envelope_id)
    except RemoteProtocolError:  # beyond the limits: seal() refuses, as it should
        return text, False
    doc.pop("payload")
    return json.dumps({**doc, "id": envelope_id, "sealed": sealed.model_dump()}), True


def record(harness: Harness, response: httpx.Response, body: str, really_sealed: bool) -> None:
    """Remember an accepted interrupt for the inbox check (see ``Harness.sealed_junk``)."""
    envelope_id = response.json()["id"]
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if isinstance(doc, dict) and doc.get("sealed") is not None and not really_sealed:
        harness.sealed_junk.add(envelope_id)
    else:
        harness.accepted.add(envelope_id)


def finish(harness: Harness, http: KeepAlive) -> None:
    """The relay still serves on the same connection, and logged nothing unexpected."""
    assert http.request("GET", "/healthz").status_code == 200
    assert harness.relay.errors_logged() == []
    harness.assert_accepted_reach_the_inbox()


def test_fuzz_drafts(harness: Harness, http: KeepAlive) -> None:
    alice = harness.alice

    @given(
        body=draft_text(alice.id),
        content_type=content_types,
        token=st.one_of(st.just(alice.token), st.just(alice.token), st.just(harness.carol.token),
                        header_value),
        really_sealed=st.booleans(),
    )
    def run(body: str, content_type: str, token: str, really_sealed: bool) -> None:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}".strip()}
        if really_sealed:
            body, really_sealed = seal_for(harness, body)
        response = post_and_check(harness, http, body.encode("utf-8", "surrogatepass"), headers)
        if response.status_code == 202:
            assert token == alice.token and json.loads(body)["to"] == alice.id
            record(harness, response, body, really_sealed)

    run()
    finish(harness, http)


def test_fuzz_signed_envelopes(harness: Harness, http: KeepAlive) -> None:
    alice, producer = harness.alice, harness.producer

    @given(
        text=envelope_text(alice.id, producer.id),
        signed_by=st.sampled_from(["producer", "producer", "producer", "alice", "junk"]),
        wire=st.sampled_from(["good", "good", "good", "extra", "not a string"]),
    )
    def run(text: str, signed_by: str, wire: str) -> None:
        data = text.encode("utf-8", "surrogatepass")
        key = {"producer": producer.identity, "alice": alice.identity}.get(signed_by)
        signature = b64e(key.sign(ENVELOPE_DOMAIN + data)) if key else "A" * 86
        doc: dict[str, Any] = {"envelope": text, "signature": signature}
        if wire == "extra":
            doc["x"] = 1
        elif wire == "not a string":
            doc["envelope"] = {"text": text}
        body = json.dumps(doc).encode()
        response = post_and_check(harness, http, body, {"Content-Type": "application/json"})
        if response.status_code == 202:
            assert signed_by == "producer" and wire == "good"
            record(harness, response, text, really_sealed=False)

    run()
    finish(harness, http)


def test_fuzz_junk_bodies_and_headers(harness: Harness, http: KeepAlive) -> None:

    @given(
        body=st.one_of(st.binary(max_size=300), any_text.map(lambda t: t.encode("utf-8",
                                                                             "surrogatepass")),
                       json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())),
        content_type=content_types,
        authorization=st.one_of(st.none(), header_value),
        path=st.sampled_from(["/v1/interrupts", "/v1/enroll"]),
    )
    def run(body: bytes, content_type: str, authorization: str | None, path: str) -> None:
        headers: dict[str, Any] = {"Content-Type": content_type}
        if authorization is not None:
            headers["Authorization"] = authorization
        before = harness.stored()
        response = http.request("POST", path, content=body, headers=headers)
        assert_answer(response)
        assert response.status_code >= 400, response.text  # nobody holds a valid token here
        assert harness.stored() == before

    run()
    finish(harness, http)


def test_fuzz_identities_grants_and_unknown_routes(harness: Harness, http: KeepAlive) -> None:
    """GET identities, PUT/DELETE grants with hostile ``Mailslot-Signature`` headers
    (huge timestamps, wrong fields, replays of a real one with another body), unknown
    routes and methods: never a 5xx, never a grant changed without alice's signature."""
    alice, carol = harness.alice, harness.carol
    ident = st.one_of(st.just(alice.id), st.just(carol.id), st.from_regex(r"[a-z2-7]{32}",
                      fullmatch=True), st.from_regex(r"[A-Za-z0-9%._~-]{0,40}", fullmatch=True))
    ts = st.one_of(st.just(str(int(time.time()))), st.sampled_from(
        ["9" * 12, "9" * 400, "1e400", "-1", "0", "", "NaN", "1_000", "١٢٣"]),
        st.from_regex(r"[0-9]{1,30}", fullmatch=True))

    @st.composite
    def signature_header(draw: st.DrawFn) -> str | None:
        kind = draw(st.sampled_from(["none", "junk", "fields", "real-other-path"]))
        if kind == "none":
            return None
        if kind == "junk":
            return draw(header_value)
        if kind == "real-other-path":
            path = f"/v1/identities/{alice.id}/grants/{carol.id}"
            return request_header(alice.identity, "PUT", path, int(time.time()), b"x")
        fields = {
            "id": draw(st.one_of(st.just(alice.id), header_value.map(lambda v: v[:40]))),
            "ts": draw(ts),
            "nonce": draw(st.one_of(st.just("N" * 22), st.from_regex(r"[ -+\--~]{0,70}",
                                                                       fullmatch=True))),
            "sig": draw(st.one_of(st.just("A" * 86), st.from_regex(r"[ -+\--~]{0,90}",
                                                                     fullmatch=True))),
        }
        order = draw(st.permutations(list(fields)))
        parts = [f"{k}={fields[k]}" for k in order[: draw(st.integers(0, 4))]]
        return ("Mailslot-Signature " + ",".join(parts)).strip()

    @given(
        method=st.sampled_from(["GET", "PUT", "DELETE", "POST", "PATCH", "HEAD", "OPTIONS"]),
        route=st.sampled_from(["identity", "grant", "grant", "unknown"]),
        recipient=ident,
        signer=ident,
        header=signature_header(),
        unknown=st.from_regex(r"/[A-Za-z0-9/._~%-]{0,40}", fullmatch=True),
        body=st.one_of(st.just(b""), st.binary(max_size=64)),
    )
    def run(method: str, route: str, recipient: str, signer: str, header: str | None,
            unknown: str, body: bytes) -> None:
        path = {"identity": f"/v1/identities/{recipient}",
                "grant": f"/v1/identities/{recipient}/grants/{signer}",
                "unknown": unknown}[route]
        # As bytes: HTTP carries any octet there, and httpx would refuse non-ASCII text.
        headers = {"Authorization": header.encode()} if header is not None else {}
        if body:
            headers["Content-Type"] = "application/json"
        response = http.request(method, path, content=body, headers=headers)
        if method == "HEAD":
            assert response.status_code < 500
            return
        assert_answer(response)
        if route == "grant" and method in ("PUT", "DELETE"):
            assert response.status_code >= 400, response.text  # never signed by alice here
        if route == "identity" and method == "GET" and response.status_code == 200:
            assert recipient in (alice.id, carol.id, harness.producer.id)

    run()
    # The producer alice granted at the start is still granted: no request above changed it.
    text = json.dumps({"v": 1, "id": str(ULID()), "to": alice.id,
                       "source": {"kind": "service", "name": "fuzz"}, "type": "fuzz.after",
                       "created_at": datetime.now(UTC).isoformat(),
                       "signer": harness.producer.id})
    signature = b64e(harness.producer.identity.sign(ENVELOPE_DOMAIN + text.encode()))
    body = json.dumps({"envelope": text, "signature": signature}).encode()
    response = post_and_check(harness, http, body, {"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    harness.accepted.add(response.json()["id"])
    finish(harness, http)


def test_fuzz_batches(harness: Harness, http: KeepAlive) -> None:
    """POST /v1/interrupts/batch with hostile items (drafts by the draft strategy, signed
    documents, junk values) and hostile bodies: a 200 carries one result per item and
    JetStream holds exactly one more message per 202 result; anything else stores none."""
    alice = harness.alice

    def as_item(text: str) -> Any:
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text

    items = st.lists(st.one_of(draft_text(alice.id).map(as_item), json_values),
                     min_size=0, max_size=6)

    @given(
        items=items,
        shape=st.sampled_from(["items", "items", "items", "list", "extra", "junk"]),
        content_type=st.one_of(st.just("application/json"), content_types),
        token=st.one_of(st.just(alice.token), st.just(harness.carol.token), header_value),
    )
    def run(items: list[Any], shape: str, content_type: str, token: str) -> None:
        doc: Any = {"items": items, "list": items, "extra": {"items": items, "x": 1},
                    "junk": {"items": json.dumps(items)}}[shape]
        if shape == "list":
            doc = items
        body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}".strip()}
        before = harness.stored()
        response = http.request("POST", "/v1/interrupts/batch", content=body, headers=headers)
        assert_answer(response)
        after = harness.stored()
        if response.status_code != 200:
            assert after == before, f"stored on {response.status_code}: {response.text}"
            return
        results = response.json()["results"]
        assert len(results) == len(items)
        accepted = [r for r in results if r["status"] == 202]
        assert after == before + len(accepted), response.text
        for item, result in zip(items, results, strict=True):
            assert result["status"] in (200, 202) or (
                400 <= result["status"] < 500 and isinstance(result["error"], str)
                and isinstance(result["message"], str)), result
            if result["status"] == 202:
                assert token == alice.token and item["to"] == alice.id
                (harness.sealed_junk if item.get("sealed") is not None
                 else harness.accepted).add(result["id"])

    run()
    finish(harness, http)


def test_fuzz_plain_text_send(harness: Harness, http: KeepAlive) -> None:
    """POST /v1/send/{identity} with hostile text, query parameters, option headers,
    content types and tokens: never a 5xx, one message stored per 202, none otherwise."""
    alice = harness.alice
    names = st.sampled_from(["type", "priority", "title", "session", "dedupe_key", "id",
                             "event_id", "prio", "", "to"])
    values = st.one_of(any_text, tokenish, st.sampled_from(["now", "next", "later", "a.b"]),
                       ulids)
    header_names = st.sampled_from(["X-Type", "X-Priority", "X-Title", "X-Session",
                                    "X-Dedupe-Key", "X-Interrupt-Id", "X-Event-Id"])

    @given(
        to=st.one_of(st.just(alice.id), st.just(harness.carol.id),
                     st.from_regex(r"[A-Za-z0-9%._~-]{0,40}", fullmatch=True)),
        body=st.one_of(any_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                       st.binary(max_size=64), st.just(b"disk full on nas")),
        query=st.lists(st.tuples(names, values), max_size=4),
        headers=st.dictionaries(header_names, header_value, max_size=3),
        content_type=st.one_of(st.none(), st.just("text/plain"), content_types),
        token=st.one_of(st.just(alice.token), st.just(alice.token),
                        st.just(harness.carol.token), header_value),
    )
    def run(to: str, body: bytes, query: list[tuple[str, str]], headers: dict[str, str],
            content_type: str | None, token: str) -> None:
        all_headers: dict[str, Any] = {k: v.encode() for k, v in headers.items()}
        all_headers["Authorization"] = f"Bearer {token}".strip().encode()
        if content_type is not None:
            all_headers["Content-Type"] = content_type
        params = [(k, v.encode("utf-8", "surrogatepass")) for k, v in query]
        before = harness.stored()
        response = http.request("POST", f"/v1/send/{to}", content=body, params=params,
                                headers=all_headers)
        assert_answer(response)
        after = harness.stored()
        if response.status_code == 202:
            assert after == before + 1 and token == alice.token and to == alice.id
            harness.accepted.add(response.json()["id"])
        else:
            assert after == before, f"stored on {response.status_code}: {response.text}"

    run()
    finish(harness, http)
