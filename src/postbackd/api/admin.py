"""The admin API under /api/v1: list, create, get, PATCH and delete for each entity."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from postbackd.catalog import KINDS, Catalog, Kind, Saved
from postbackd.errors import BadRequest, NotFound
from postbackd.model import Entity, Segment, Tracker, XAccount, public

from .http import json_response, read_object

Authenticate = Callable[[str], Awaitable[XAccount]]
_SEGMENTS: Final = KINDS["segments"]


def _shown(saved: Saved) -> dict[str, object]:
    body = public(saved.entity)
    if isinstance(saved.entity, Tracker):
        old = saved.replaced_default
        body["replaced_default"] = {"id": old.id, "name": old.name} if old else None
    return body


def _filtered(kind: Kind, entities: list[Entity], query: dict[str, str]) -> list[Entity]:
    if not entities and not query:
        return entities
    known = set(kind.cls.__dataclass_fields__) - {"access_token", "access_token_secret"}
    for key in query:
        if key not in known:
            raise BadRequest(f"cannot filter {kind.name} by {key!r}", field=key)
    return [
        e for e in entities
        if all(str(getattr(e, k)).lower() == v.lower() for k, v in query.items())
    ]  # fmt: skip


class AdminRoutes:
    def __init__(self, catalog: Catalog, authenticate: Authenticate, max_body_bytes: int) -> None:
        self.catalog = catalog
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes

    def add_to(self, app: web.Application, prefix: str = "/api/v1") -> None:
        for kind in KINDS.values():
            if kind is _SEGMENTS:
                continue
            base = f"{prefix}/{kind.name}"
            app.router.add_get(base, self._list(kind))
            app.router.add_post(base, self._create(kind))
            app.router.add_get(base + "/{id}", self._get(kind))
            app.router.add_patch(base + "/{id}", self._update(kind))
            app.router.add_delete(base + "/{id}", self._delete(kind))
        segments = f"{prefix}/campaigns/{{campaign_id}}/segments"
        app.router.add_get(segments, self.list_segments)
        app.router.add_post(segments, self.create_segment)
        app.router.add_get(segments + "/{id}", self._segment_route(self._get(_SEGMENTS)))
        app.router.add_patch(segments + "/{id}", self._segment_route(self._update(_SEGMENTS)))
        app.router.add_delete(segments + "/{id}", self._segment_route(self._delete(_SEGMENTS)))
        app.router.add_post(f"{prefix}/x-accounts/{{id}}/authenticate", self.authenticate_account)

    def _list(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            entities = list(kind.entities(self.catalog.index).values())
            items = _filtered(kind, entities, dict(request.query))
            return json_response({"items": [public(e) for e in items], "count": len(items)})

        return handler

    def _create(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            data = await read_object(request, self.max_body_bytes)
            saved = await self.catalog.create(kind, data)
            if isinstance(saved.entity, XAccount):
                # PRODUCT.md 1: authenticated only after a signed call to X succeeded.
                saved = Saved(await self.authenticate(saved.entity.id))
            return json_response(_shown(saved), status=201)

        return handler

    def _get(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            return json_response(public(self.catalog.get(kind, request.match_info["id"])))

        return handler

    def _update(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            entity_id = request.match_info["id"]
            self.catalog.get(kind, entity_id)  # 404 before reading the body
            data = await read_object(request, self.max_body_bytes)
            saved = await self.catalog.update(kind, entity_id, data)
            if isinstance(saved.entity, XAccount) and not saved.entity.authenticated:
                saved = Saved(await self.authenticate(saved.entity.id))
            return json_response(_shown(saved))

        return handler

    def _delete(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            await self.catalog.delete(kind, request.match_info["id"])
            return web.Response(status=204)

        return handler

    def _segment_route(
        self, inner: Callable[[web.Request], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            segment = self.catalog.get(_SEGMENTS, request.match_info["id"])
            assert isinstance(segment, Segment)
            if segment.campaign_id != self._campaign_id(request):
                raise NotFound("segment does not belong to this campaign", field="id")
            return await inner(request)

        return handler

    def _campaign_id(self, request: web.Request) -> str:
        campaign_id = request.match_info["campaign_id"]
        self.catalog.get(KINDS["campaigns"], campaign_id)
        return campaign_id

    async def list_segments(self, request: web.Request) -> web.Response:
        campaign_id = self._campaign_id(request)
        items = [
            public(s) for s in self.catalog.index.segments.values() if s.campaign_id == campaign_id
        ]
        return json_response({"items": items, "count": len(items)})

    async def create_segment(self, request: web.Request) -> web.Response:
        campaign_id = self._campaign_id(request)
        data = await read_object(request, self.max_body_bytes)
        if data.get("campaign_id", campaign_id) != campaign_id:
            raise BadRequest(
                "campaign_id differs from the campaign in the path", field="campaign_id"
            )
        saved = await self.catalog.create(_SEGMENTS, {**data, "campaign_id": campaign_id})
        return json_response(_shown(saved), status=201)

    async def authenticate_account(self, request: web.Request) -> web.Response:
        account_id = request.match_info["id"]
        self.catalog.get(KINDS["x-accounts"], account_id)
        return json_response(public(await self.authenticate(account_id)))
