"""`GET /api/v1/openapi.json` against the daemon that serves it: every route of the router is
described, every field rule of the checks appears in it with its limits, and the document
is valid OpenAPI 3.1 (schemathesis loads it; tests/test_schemathesis.py runs it)."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
import schemathesis
from aiohttp import web

from conftest import API_TOKEN, Running
from postbackd.api.openapi import document
from postbackd.catalog import KINDS
from postbackd.delivery.model import STATES
from postbackd.fields import Count, Flag, Identifier, OneOf, Text, TextList
from postbackd.model import SECRET_FIELDS


async def fetch(running: Running) -> dict[str, Any]:
    # No token: the description is public.
    return await running.api.ok("GET", "/api/v1/openapi.json", auth=False)  # type: ignore[no-any-return]


def described(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    }


def routed(app: web.Application) -> set[tuple[str, str]]:
    out = set()
    # The web console (a sub-application at /console) serves HTML pages, not the API.
    resources = [r for r in app.router.resources() if not isinstance(r, web.PrefixedSubAppResource)]
    for route in (route for resource in resources for route in resource):
        if route.method in ("HEAD", "*"):  # aiohttp adds HEAD to every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        out.add((route.method, re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return out


async def test_every_route_of_the_router_is_described(running: Running) -> None:
    doc = await fetch(running)
    assert doc["openapi"] == "3.1.0"
    app = running.daemon._runner.app  # type: ignore[attr-defined, union-attr]
    routes = routed(app)
    assert len(routes) > 30
    assert routes - described(doc) == set(), "routes missing from openapi.json"
    assert described(doc) - routes == set(), "described paths the daemon does not serve"


async def test_the_description_is_served_without_the_token_and_is_loadable(
    running: Running,
) -> None:
    doc = await fetch(running)
    open_ops = {
        path for path, item in doc["paths"].items() for op in item.values()
        if isinstance(op, dict) and op.get("security") == []
    }  # fmt: skip
    assert open_ops == {"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    schema = schemathesis.openapi.from_dict(doc)
    assert len(list(schema.get_all_operations())) == len(described(doc))
    # Everything else under /api still wants the token.
    status, _ = await running.api.request("GET", "/api/v1/apps", auth=False)
    assert status == 401


def test_every_field_rule_is_in_the_request_bodies() -> None:
    doc = document(max_body_bytes=1000, max_items=10)
    bodies = {
        op["operationId"]: op["requestBody"]["content"]["application/json"]["schema"]
        for item in doc["paths"].values() for op in item.values()
        if isinstance(op, dict) and "requestBody" in op and "operationId" in op
    }  # fmt: skip
    titles = {"apps": "App", "x-accounts": "XAccount", "campaigns": "Campaign",
              "segments": "Segment", "trackers": "Tracker", "postbacks": "Postback"}  # fmt: skip
    for kind in KINDS.values():
        create = bodies[f"create{titles[kind.name]}"]
        update = bodies[f"update{titles[kind.name]}"]
        assert set(create["properties"]) == set(update["properties"]) == kind.form.names
        assert create["additionalProperties"] is False
        assert "required" not in update
        for rule in kind.form.fields:
            schema = create["properties"][rule.name]
            if isinstance(rule, Text):
                assert schema["maxLength"] == rule.max_len
                assert ("null" not in schema["type"]) == rule.required
                assert schema.get("writeOnly", False) == rule.secret
            elif isinstance(rule, Identifier):
                assert schema["pattern"] == f"^(?:{rule.pattern})$"
                assert schema["maxLength"] == rule.max_len
            elif isinstance(rule, Count):
                assert (schema["minimum"], schema["maximum"]) == (rule.low, rule.high)
                assert schema["default"] == rule.default
            elif isinstance(rule, OneOf):
                assert [v for v in schema["enum"] if v is not None] == sorted(rule.choices)
                assert set(rule.refused).isdisjoint(schema["enum"])
            elif isinstance(rule, Flag):
                assert schema == {**schema, "type": "boolean", "default": rule.default}
            else:
                assert isinstance(rule, TextList)
                assert schema["minItems"] == 1
            if rule.name in kind.form.immutable:
                assert "Cannot change" in schema["description"]
        required = set(create.get("required", ()))
        path_fields = {"campaign_id"} if kind.name == "segments" else set()
        must = {r.name for r in kind.form.fields if r.required} - path_fields
        if kind.name == "trackers":
            must.remove("segment_id")
        assert required == must


def test_answers_show_every_field_but_the_secrets() -> None:
    doc = document(max_body_bytes=1000, max_items=10)
    schemas = doc["components"]["schemas"]
    account = schemas["XAccount"]["properties"]
    assert SECRET_FIELDS.isdisjoint(account)
    assert {"authenticated", "authenticated_at", "last_auth_error"} <= set(account)
    assert schemas["Delivery"]["properties"]["state"]["enum"] == list(STATES)
    assert schemas["Tracker"]["properties"]["target_event"]["enum"][0] == "ACHIEVEMENT_UNLOCKED"


@pytest.mark.parametrize("path", ["/api/v1/apps", "/api/v1/deliveries/replay"])
async def test_a_405_names_the_methods_in_allow(running: Running, path: str) -> None:
    # Found by schemathesis: the JSON error of a 405 dropped aiohttp's Allow header.
    async with (
        aiohttp.ClientSession() as s,
        s.put(running.api.base + path, headers={"Authorization": f"Bearer {API_TOKEN}"}) as r,
    ):
        assert r.status == 405
        assert "POST" in r.headers["Allow"]
        assert (await r.json())["error"]["code"]
