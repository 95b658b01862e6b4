"""The admin API under /api/v1: list, create, get, PATCH and delete for each entity."""

from __future__ import annotations

import bisect
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web

from postbackd.catalog import KINDS, Catalog, Kind, Saved
from postbackd.errors import BadRequest, NotFound
from postbackd.model import SECRET_FIELDS, Entity, Postback, Segment, Tracker, XAccount, public

from .http import json_response, read_object
from .paging import PAGING_PARAMETERS, Paging, boolean_of, integer_of, single_values

Authenticate = Callable[[str], Awaitable[XAccount]]
# Deliveries of a postback that have not gone out yet (scheduled, ready, held).
PendingDeliveries = Callable[[str], Awaitable[int]]
_SEGMENTS: Final = KINDS["segments"]


def _shown(saved: Saved) -> dict[str, object]:
    body = public(saved.entity)
    if isinstance(saved.entity, Tracker):
        old = saved.replaced_default
        body["replaced_default"] = {"id": old.id, "name": old.name} if old else None
    return body


def _filter_kind(hint: object) -> str:
    """How a query value filters a field of this type: bool, int, list (membership) or str."""
    if hint is bool:
        return "bool"
    if hint is int:
        return "int"
    if typing.get_origin(hint) is tuple:
        return "list"
    return "str"


def filter_kinds(kind: Kind) -> dict[str, str]:
    """Each field a list of `kind` filters on (every field but the secrets), and how."""
    hints = typing.get_type_hints(kind.cls)
    return {name: _filter_kind(hint) for name, hint in hints.items() if name not in SECRET_FIELDS}


def _matcher(name: str, how: str, text: str) -> Callable[[Entity], bool]:
    if how == "bool":
        flag = boolean_of(name, text)
        return lambda e: getattr(e, name) is flag
    if how == "int":
        number = integer_of(name, text)
        return lambda e: getattr(e, name) == number
    folded = text.lower()
    if how == "list":
        return lambda e: any(v.lower() == folded for v in getattr(e, name))
    # Text compares case-insensitively; an absent value (null) matches no text.
    return lambda e: (v := getattr(e, name)) is not None and v.lower() == folded


def _creation_key(entity: Entity) -> tuple[str, str]:
    return (entity.created_at, entity.id)


def _page(
    kind: Kind,
    list_name: str,
    entities: Iterable[Entity],
    query: dict[str, str],
    fixed: dict[str, str] | None = None,
) -> dict[str, object]:
    """One page of a configuration list, in creation order: `created_at`, then `id`."""
    known = filter_kinds(kind)
    filters = {k: v for k, v in query.items() if k not in PAGING_PARAMETERS}
    matchers = []
    for name, text in filters.items():
        if name not in known:
            raise BadRequest(
                f"cannot filter {kind.name} by {name!r}", field=name, code="invalid_parameter"
            )
        matchers.append(_matcher(name, known[name], text))
    paging = Paging.of(list_name, query, {**filters, **(fixed or {})}, (str, str))
    matching = sorted((e for e in entities if all(m(e) for m in matchers)), key=_creation_key)
    start = 0
    if paging.after is not None:
        start = bisect.bisect_right(matching, paging.after, key=_creation_key)
    rows = matching[start : start + paging.limit + 1]
    return paging.answer(rows, _creation_key, public, total=len(matching))


class AdminRoutes:
    def __init__(
        self,
        catalog: Catalog,
        authenticate: Authenticate,
        max_body_bytes: int,
        pending_deliveries: PendingDeliveries,
    ) -> None:
        self.catalog = catalog
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.pending_deliveries = pending_deliveries

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
            entities = kind.entities(self.catalog.index).values()
            query = single_values(request.query)
            return json_response(_page(kind, kind.name, entities, query))

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
            body = _shown(saved)
            if isinstance(saved.entity, Postback):
                # Disabling stops later events only (PRODUCT.md 1): say what still goes out.
                body["pending_deliveries"] = await self.pending_deliveries(entity_id)
            return json_response(body)

        return handler

    def _delete(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            entity_id = request.match_info["id"]
            await self.catalog.delete(kind, entity_id)
            if kind.cls is Postback:
                # Accepted deliveries still go out (accepted means durable): say how many,
                # and how to stop them (POST /api/v1/deliveries/cancel).
                pending = await self.pending_deliveries(entity_id)
                return json_response(
                    {"id": entity_id, "deleted": True, "pending_deliveries": pending}
                )
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
        query = single_values(request.query)
        if "campaign_id" in query:
            raise BadRequest(
                "the campaign is the one in the path", field="campaign_id", code="invalid_parameter"
            )
        segments = (s for s in self.catalog.index.segments.values() if s.campaign_id == campaign_id)
        page = _page(_SEGMENTS, "segments", segments, query, {"campaign_id": campaign_id})
        return json_response(page)

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
