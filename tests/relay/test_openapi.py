"""``GET /v1/openapi.json`` of a real relay: every route of the app is in it, every schema
in it is a valid JSON Schema (2020-12, what OpenAPI 3.1 uses) whose refs resolve, and real
requests and answers validate against the schemas it gives them.
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
from relay_support import alice_fixture, draft, relay_config_fixture  # noqa: F401

from relay.openapi import OPERATIONS, build_document, route_methods


async def fetch(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/v1/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    doc: dict[str, Any] = response.json()
    return doc


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for ``schema`` whose ``#/components/...`` refs resolve in ``doc``."""
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


def request_schema(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    schema: dict[str, Any] = (
        doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"])
    return schema


def response_schema(doc: dict[str, Any], method: str, path: str, status: int
                    ) -> dict[str, Any]:
    schema: dict[str, Any] = (
        doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]
        ["schema"])
    return schema


async def test_every_route_of_the_app_is_documented(relay):
    doc = await fetch(relay.url)
    assert doc["openapi"] == "3.1.0"
    routes = route_methods(relay.app.routes)
    assert len(routes) >= 10
    for method, path in routes:
        assert method in doc["paths"].get(path, {}), f"{method.upper()} {path} missing"
        operation = doc["paths"][path][method]
        assert operation["responses"], (method, path)
        assert "4XX" in operation["responses"]
    documented = {(m, p) for p, item in doc["paths"].items() for m in item}
    assert documented == set(routes)
    # Every operation with a model in the table is in the app (no stale entry).
    assert set(OPERATIONS) <= set(routes), set(OPERATIONS) - set(routes)
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_every_schema_is_valid_and_every_ref_resolves(relay):
    doc = await fetch(relay.url)
    schemas = doc["components"]["schemas"]
    assert {"Draft", "Envelope", "SignedInterrupt", "EnrollRequest", "ErrorBody"} <= set(schemas)
    for name, schema in schemas.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert name

    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, f"{ref} does not resolve"
    # Path parameters match the templates.
    for path, item in doc["paths"].items():
        for operation in item.values():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}


async def test_real_requests_and_answers_match_the_document(relay, alice):
    doc = await fetch(relay.url)
    body = draft(alice.id, payload={"text": "hello"})
    validator(doc, request_schema(doc, "post", "/v1/interrupts")).validate(body)
    async with httpx.AsyncClient(base_url=relay.url) as client:
        accepted = await client.post("/v1/interrupts", json=body,
                                     headers={"Authorization": f"Bearer {alice.token}"})
        assert accepted.status_code == 202, accepted.text
        validator(doc, response_schema(doc, "post", "/v1/interrupts", 202)).validate(
            accepted.json())
        refused = await client.post("/v1/interrupts", json={**body, "to": "nobody"},
                                    headers={"Authorization": f"Bearer {alice.token}"})
        assert refused.status_code == 422, refused.text
        errors = validator(doc, response_schema(doc, "post", "/v1/interrupts", 422)
                           if "422" in doc["paths"]["/v1/interrupts"]["post"]["responses"]
                           else doc["paths"]["/v1/interrupts"]["post"]["responses"]["4XX"]
                           ["content"]["application/json"]["schema"])
        errors.validate(refused.json())
        identity = await client.get(f"/v1/identities/{alice.id}")
        validator(doc, response_schema(doc, "get", "/v1/identities/{id}", 200)).validate(
            identity.json())
    # A body the relay refuses as malformed is refused by the document as well.
    bad = validator(doc, request_schema(doc, "post", "/v1/interrupts"))
    assert not bad.is_valid({**body, "surprise": 1})
    assert not bad.is_valid({"envelope": "{}"})


def test_a_route_without_a_table_entry_still_appears():
    class Fake:
        def __init__(self, path: str, methods: set[str] | None) -> None:
            self.path, self.methods = path, methods

    class Mount:
        path = "/v1/x"
        routes = [Fake("/y/{thing}", {"GET", "HEAD"})]

    doc = build_document([Fake("/v1/new", {"POST"}), Fake("/ws", None), Mount()])
    assert doc["paths"]["/v1/new"]["post"]["summary"] == "POST /v1/new"
    assert set(doc["paths"]["/v1/x/y/{thing}"]) == {"get"}
    assert doc["paths"]["/v1/x/y/{thing}"]["get"]["parameters"][0]["name"] == "thing"
    assert "get" in doc["paths"]["/ws"]
