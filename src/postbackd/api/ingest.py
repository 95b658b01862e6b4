"""`POST /track/json`: Kochava server-to-server events, validated item by item and
acknowledged only once committed (PRODUCT.md 3, "Ingest")."""

from __future__ import annotations

from aiohttp import web

from postbackd.admission import Admission
from postbackd.errors import BadRequest
from postbackd.event import split_body

from .http import json_response, read_body


class IngestRoute:
    def __init__(self, admission: Admission, *, max_body_bytes: int, max_items: int) -> None:
        self._admission = admission
        self._max_body_bytes = max_body_bytes
        self.max_items = max_items

    async def handle(self, request: web.Request) -> web.Response:
        body = await read_body(request, self._max_body_bytes)
        items = split_body(body, request.content_type, max_items=self.max_items)
        if not items:
            raise BadRequest("the body holds no events", field="body", code="empty_batch")
        admitted = await self._admission.admit(items)
        answer: dict[str, object] = {
            "accepted": admitted.accepted,
            "duplicates": admitted.duplicates,
            "rejected": [
                {"index": r.index, "error": r.error, "field": r.field} for r in admitted.rejected
            ],
            "event_ids": admitted.event_ids,
        }
        if len(admitted.rejected) == len(items):
            # PRODUCT.md 3: 400 when nothing could be accepted (duplicates are accepted).
            answer["error"] = {
                "code": "nothing_accepted",
                "message": "no event of the body could be accepted",
                "field": "body",
            }
            return json_response(answer, status=400)
        return json_response(answer, status=202)
