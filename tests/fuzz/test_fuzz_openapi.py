"""The relay's own OpenAPI document drives the fuzzer: for every documented POST/PUT route
of a real relay process, bodies are generated from the JSON schema the document gives
it (mostly valid by the schema, some bent: a wrong type, a field too many, a value out of
range), posted with and without a producer token, and every answer must be < 500 with
the documented refusal body. A route documented with a text/plain body (``/v1/send``)
gets text, and query parameters drawn from the names it documents (and others). On the
routes that store one interrupt nothing is stored on a refusal, and every interrupt
accepted for alice must reach her real edge's inbox.

hypothesis-jsonschema is not installed: ``from_schema`` below derives strategies from
the subset of JSON Schema that pydantic emits (refs, anyOf/oneOf, enum/const, typed
scalars with bounds and patterns, arrays, objects with required and optional fields).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from fuzz.fuzz_support import Harness, KeepAlive, assert_answer
from fuzz.strategies import json_values

Schema = dict[str, Any]


def from_schema(schema: Schema, components: dict[str, Schema], hints: dict[str, Any],
                depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for ``schema``, mostly valid. ``hints`` maps property names to values worth
    trying often (alice's id for ``to``), so that some bodies pass every check."""
    if depth > 6:
        return st.none()
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return from_schema(components[name], components, hints, depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, hints, depth + 1)
                              for s in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], components, hints, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components, hints, depth)
                          for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if kind == "integer":
            return st.integers(min_value=None if low is None else int(low),
                               max_value=None if high is None else int(high))
        return st.floats(min_value=low, max_value=high, allow_nan=False,
                         allow_infinity=False, exclude_min="exclusiveMinimum" in schema,
                         exclude_max="exclusiveMaximum" in schema)
    if kind == "string":
        return _string(schema)
    if kind == "array":
        items = from_schema(schema.get("items", {}), components, hints, depth + 1)
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", 4),
                                                                      4)))
    if kind == "object" or "properties" in schema:
        return _object(schema, components, hints, depth)
    return json_values


def _string(schema: Schema) -> st.SearchStrategy[str]:
    if schema.get("format") == "date-time":
        return st.integers(-3600, 86_400 * 30).map(
            lambda s: (datetime.now(UTC) + timedelta(seconds=s)).isoformat())
    pattern = schema.get("pattern")
    low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error:
            pattern = None
    if pattern is not None:
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=min(high, 40))


def _object(schema: Schema, components: dict[str, Schema], hints: dict[str, Any],
            depth: int) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))

    def field(name: str, sub: Schema) -> st.SearchStrategy[Any]:
        strategy = from_schema(sub, components, hints, depth + 1)
        if name in hints:
            return st.one_of(st.just(hints[name]), st.just(hints[name]), strategy)
        return strategy

    return st.fixed_dictionaries(
        {n: field(n, s) for n, s in props.items() if n in required},
        optional={n: field(n, s) for n, s in props.items() if n not in required},
    )


@st.composite
def bent(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A schema-made value, sometimes broken in one way the schema forbids."""
    value = draw(valid)
    how = draw(st.sampled_from(["keep", "keep", "keep", "extra", "drop", "retype", "junk"]))
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        if how == "extra":
            return {**value, "unexpected_field": draw(json_values)}
        if how == "drop":
            return {k: v for k, v in value.items() if k != key}
        if how == "retype":
            return {**value, key: draw(json_values)}
    if how == "junk":
        return draw(json_values)
    return value


def documented_bodies(doc: dict[str, Any]) -> list[tuple[str, str, Schema]]:
    """``(method, path, schema)`` of every POST/PUT route with a JSON body."""
    found = []
    for path, item in sorted(doc["paths"].items()):
        for method, operation in sorted(item.items()):
            content = operation.get("requestBody", {}).get("content", {})
            if method in ("post", "put") and "application/json" in content:
                found.append((method, path, content["application/json"]["schema"]))
    return found


def documented_text_routes(doc: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """``(method, path, query parameter names)`` of every route with a text/plain body."""
    found = []
    for path, item in sorted(doc["paths"].items()):
        for method, operation in sorted(item.items()):
            if "text/plain" in operation.get("requestBody", {}).get("content", {}):
                names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
                found.append((method, path, names))
    return found


def concrete(path: str, harness: Harness) -> str:
    values = {"id": harness.alice.id, "signer": harness.producer.id, "account": "fuzzed"}
    return re.sub(r"{([a-z_]+)}", lambda m: values.get(m.group(1), "x"), path)


def test_fuzz_every_documented_body(harness: Harness) -> None:
    with httpx.Client(base_url=harness.relay.url, timeout=10) as client:
        doc = client.get("/v1/openapi.json").json()
    components = doc["components"]["schemas"]
    targets = documented_bodies(doc)
    assert ("post", "/v1/interrupts", request_schema_of(doc)) in targets
    alice = harness.alice
    hints = {"to": alice.id, "type": "fuzz.openapi"}
    http = KeepAlive(harness.relay.url)
    answered: dict[str, set[int]] = {}

    def fuzz(method: str, path: str, schema: Schema) -> None:
        @given(body=bent(from_schema(schema, components, hints)),
               token=st.sampled_from([alice.token, alice.token, "", "msp_forged"]))
        def run(body: Any, token: str) -> None:
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            before = harness.stored() if path == "/v1/interrupts" else 0
            response = http.request(method.upper(), concrete(path, harness),
                                    content=json.dumps(body).encode(), headers=headers)
            assert_answer(response)
            answered.setdefault(path, set()).add(response.status_code)
            if path != "/v1/interrupts":
                return
            after = harness.stored()
            if response.status_code == 202:
                assert after == before + 1, response.text
                assert body["to"] == alice.id and token == alice.token
                if "sealed" in body:
                    harness.sealed_junk.add(response.json()["id"])
                else:
                    harness.accepted.add(response.json()["id"])
            elif response.status_code != 200:  # 200: a duplicate of one stored before
                assert after == before, f"stored on {response.status_code}: {response.text}"

        run()

    def fuzz_text(method: str, path: str, names: list[str]) -> None:
        values = st.one_of(st.sampled_from(["now", "next", "later", "alert.disk", "t"]),
                           st.text(max_size=20))

        @given(text=st.text(max_size=200), query=st.dictionaries(
                   st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=8)), values,
                   max_size=4),
               content_type=st.sampled_from(["text/plain", "text/plain; charset=utf-8",
                                             "application/x-www-form-urlencoded",
                                             "application/json"]),
               token=st.sampled_from([alice.token, "", "msp_forged"]))
        def run(text: str, query: dict[str, str], content_type: str, token: str) -> None:
            headers = {"Content-Type": content_type}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            before = harness.stored()
            response = http.request(method.upper(), concrete(path, harness), params=query,
                                    content=text.encode("utf-8", "surrogatepass"),
                                    headers=headers)
            assert_answer(response)
            answered.setdefault(path, set()).add(response.status_code)
            if response.status_code == 202:
                assert harness.stored() == before + 1, response.text
                harness.accepted.add(response.json()["id"])
            elif response.status_code != 200:
                assert harness.stored() == before, response.text

        run()

    text_routes = documented_text_routes(doc)
    try:
        for method, path, schema in targets:
            fuzz(method, path, schema)
        for method, path, names in text_routes:
            fuzz_text(method, path, names)
        assert set(answered) == {t[1] for t in targets} | {t[1] for t in text_routes}
        # The schema-made drafts get through every check, not only refused ones.
        assert 202 in answered["/v1/interrupts"], answered
        assert http.request("GET", "/healthz").status_code == 200
    finally:
        http.close()
    assert harness.relay.errors_logged() == []
    harness.assert_accepted_reach_the_inbox()


def request_schema_of(doc: dict[str, Any]) -> Schema:
    schema: Schema = (doc["paths"]["/v1/interrupts"]["post"]["requestBody"]["content"]
                      ["application/json"]["schema"])
    return schema
