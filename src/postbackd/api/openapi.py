"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 description of every route of the daemon.

Generated, not written by hand: the request bodies come from the field rules the checks
read (`rules.py`, `fields.py`), the answers' entities from the model's dataclasses, the
lists' filters from the same table the handlers use, the delivery states from the delivery
model. What is left here is the shape of the results' answers and of ingest, which the
schemathesis test (tests/test_schemathesis.py) holds to every answer the daemon gives.

It is served without the bearer token: it holds no data, and tools read it first.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Final

from postbackd import __version__
from postbackd.attribution import OUTCOMES
from postbackd.catalog import KINDS, Kind
from postbackd.delivery.model import STATES
from postbackd.event import MAX_EVENT_NAME_CHARS, MAX_ID_CHARS, MIN_CONVERSION_TIME_MS
from postbackd.fields import FieldRule, OneOf, Schema
from postbackd.model import SECRET_FIELDS
from postbackd.store.base import MAX_ID

from .admin import filter_kinds
from .paging import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT
from .results import ATTRIBUTION_FILTERS, MAX_REPLAY_IDS

PREFIX: Final = "/api/v1"
PATH: Final = f"{PREFIX}/openapi.json"
NDJSON: Final = "application/x-ndjson"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Schema:
    return {"$ref": f"#/components/responses/{description}"}


_ERRORS: Final = {
    "400": (
        "BadRequest",
        "The body or the query cannot be read: not JSON, not UTF-8, a bad "
        "limit, cursor or filter. `field` names the culprit.",
    ),
    "401": ("Unauthorized", "Missing or wrong bearer token."),
    "404": ("NotFound", "No such object or path."),
    "409": ("Conflict", "A uniqueness rule, or the object is still in use."),
    "413": ("TooLarge", "The body is over the size limit (or holds too many events)."),
    "422": ("Invalid", "A field breaks a rule; `field` names it and `message` says why."),
    "503": (
        "Unavailable",
        "The store cannot write (code store_unavailable: a full disk, an I/O error): "
        "nothing of the request was committed; send it again later.",
    ),
}


def _errors(*codes: str, guarded: bool = True) -> dict[str, Schema]:
    chosen = (*codes, "401") if guarded else codes
    return {code: _error(_ERRORS[code][0]) for code in sorted(chosen)}


def _hint_schema(hint: object) -> Schema:
    """JSON Schema of an answer field from its dataclass annotation."""
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is str:
        return {"type": "string"}
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if origin is tuple:
        return {"type": "array", "items": _hint_schema(typing.get_args(hint)[0])}
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = _hint_schema(args[0])
        return {**inner, "type": [inner["type"], "null"]}
    raise TypeError(f"no JSON Schema for {hint!r}")


def _entity_schema(kind: Kind) -> Schema:
    """An object as the API shows it: every field of its dataclass but the secrets."""
    hints = typing.get_type_hints(kind.cls)
    rules = {f.name: f for f in kind.form.fields}
    properties: dict[str, Schema] = {}
    for name, hint in hints.items():
        if name in SECRET_FIELDS:
            continue
        schema = _hint_schema(hint)
        rule = rules.get(name)
        if isinstance(rule, OneOf):
            schema = {**schema, "enum": sorted(rule.choices)}
        if name.endswith("_at"):
            schema = {**schema, "format": "date-time"}
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


# The README's walk through the seed's workflow, as each create body's example.
_APP_ID: Final = "kodemo-game5f1c2a3b4d5e6f70"
_EXAMPLES: Final[dict[str, Schema]] = {
    "apps": {"id": _APP_ID, "name": "Demo Game", "platform": "ios", "bundle_id": "333903271"},
    "x-accounts": {"id": "18ce54d4x5t", "name": "Main ads", "access_token": "...",
                   "access_token_secret": "..."},
    "campaigns": {"app_id": _APP_ID, "name": "Winter"},
    "segments": {"name": "All"},
    "trackers": {"app_id": _APP_ID, "campaign_name": "Winter", "segment_name": "All",
                 "name": "Winter reengagement", "network": "x_ios", "default": True,
                 "x_account_ids": ["18ce54d4x5t"], "target_event": "PURCHASE",
                 "event_matching_event": "purchase"},
    "postbacks": {"app_id": _APP_ID, "network": "x_ios", "event_name": "purchase",
                  "conversion_type": "PURCHASE"},
}  # fmt: skip
_EVENT_EXAMPLE: Final[Schema] = {
    "action": "event",
    "kochava_app_id": _APP_ID,
    "event_id": "order-1001",
    "device_ids": {"idfa": "AB12CD34-0000-4000-8000-00000000ABCD"},
    "origination_ip": "203.0.113.9",
    "data": {"event_name": "purchase", "event_data": {"sum": 9.99, "currency": "USD"}},
}


def _body_schema(kind: Kind, *, create: bool, path_fields: frozenset[str]) -> Schema:
    """A create or PATCH body: the kind's field rules; on create, the required ones."""
    form = kind.form
    properties: dict[str, Schema] = {}
    for rule in form.fields:
        schema = rule.schema()
        if rule.name in form.immutable:
            schema["description"] = f"{schema['description']} Cannot change once created."
        properties[rule.name] = schema
    out: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if create:
        required = [r.name for r in form.fields if _required_on_create(r, path_fields)]
        # A tracker names its segment, or a campaign (and segment) to find or create.
        if kind.name == "trackers":
            required.remove("segment_id")
            out["anyOf"] = [{"required": ["segment_id"]}, {"required": ["campaign_name"]}]
        out["required"] = required
        out["examples"] = [_EXAMPLES[kind.name]]
    return out


def _required_on_create(rule: FieldRule, path_fields: frozenset[str]) -> bool:
    return rule.required and rule.name not in path_fields


def _list_answer(item: Schema, *, total: bool) -> Schema:
    properties: dict[str, Schema] = {
        "items": {"type": "array", "items": item},
        "count": {"type": "integer", "minimum": 0, "description": "Items on this page."},
        "next": {
            "type": "string",
            "description": "Cursor of the next page; absent on the last page.",
        },
    }
    if total:
        properties["total"] = {
            "type": "integer",
            "minimum": 0,
            "description": "Items matching the filters, on every page.",
        }
    required = ["items", "count", *(["total"] if total else [])]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


_PAGING_PARAMETERS: Final = [
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Items per page.",
    ),
    _query(
        "cursor",
        {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "maxLength": MAX_CURSOR_CHARS},
        "The `next` of the previous page, with the same filters.",
    ),
]


def _filter_parameters(kind: Kind, exclude: frozenset[str] = frozenset()) -> list[Schema]:
    schemas: dict[str, Schema] = {
        "bool": {"type": "boolean"},
        "int": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
        "list": {"type": "string"},
        "str": {"type": "string"},
    }
    return [
        _query(
            name,
            schemas[how],
            f"Only objects whose {name} "
            + ("contains" if how == "list" else "equals")
            + " this value"
            + (" (case-insensitive)." if how in ("list", "str") else "."),
        )
        for name, how in filter_kinds(kind).items()
        if name not in exclude
    ]


def _kind_operations(kind: Kind, base: str, tag: str, extra: list[Schema]) -> dict[str, Any]:
    """List, create, get, PATCH and delete of one kind, with links between them."""
    entity = _ref(_title(kind))
    path_fields = frozenset({"campaign_id"}) if kind.name == "segments" else frozenset()
    answer = _ref(f"{_title(kind)}Saved") if kind.name == "trackers" else entity
    changed = _ref("PostbackChanged") if kind.name == "postbacks" else answer
    op = _title(kind)
    by_id = {"parameters": {"id": "$response.body#/id"}}
    links = {
        f"Get{op}": {"operationId": f"get{op}", **by_id},
        f"Update{op}": {"operationId": f"update{op}", **by_id},
        f"Delete{op}": {"operationId": f"delete{op}", **by_id},
        **_links_after_create(kind),
    }
    if kind.name == "segments":
        for link in links.values():
            link["parameters"] = {
                **link.get("parameters", {}),
                "campaign_id": "$response.body#/campaign_id",
            }
    item = f"{base}/{{id}}"
    filters = _filter_parameters(kind, path_fields)
    return {
        base: {
            "parameters": extra,
            "get": {
                "operationId": f"list{op}s",
                "tags": [tag],
                "summary": f"List {kind.name}, oldest first (created_at, then id)",
                "parameters": [*_PAGING_PARAMETERS, *filters],
                "responses": {
                    "200": _json(_list_answer(entity, total=True), f"A page of {kind.name}."),
                    **_errors("400", "404" if extra else "400"),
                },
            },
            "post": {
                "operationId": f"create{op}",
                "tags": [tag],
                "summary": f"Create a {kind.label}",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _body_schema(kind, create=True, path_fields=path_fields)
                        }
                    },
                },
                "responses": {
                    "201": {**_json(answer, f"The {kind.label} as saved."), "links": links},
                    **_errors("400", "409", "413", "422", "503", *(["404"] if extra else [])),
                },
            },
        },
        item: {
            "parameters": [*extra, _path("id", f"The {kind.label}'s id.")],
            "get": {
                "operationId": f"get{op}",
                "tags": [tag],
                "responses": {
                    "200": _json(entity, f"The {kind.label}."),
                    **_errors("404"),
                },
            },
            "patch": {
                "operationId": f"update{op}",
                "tags": [tag],
                "summary": "Change some fields; every rule is checked again on the result",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": _body_schema(kind, create=False, path_fields=path_fields)
                        }
                    },
                },
                "responses": {
                    "200": _json(changed, f"The {kind.label} as saved."),
                    **_errors("400", "404", "409", "413", "422", "503"),
                },
            },
            "delete": {
                "operationId": f"delete{op}",
                "tags": [tag],
                "responses": {
                    **(
                        {"200": _json(_ref("PostbackDeleted"), "Deleted; what still goes out.")}
                        if kind.name == "postbacks"
                        else {"204": {"description": "Deleted."}}
                    ),
                    **_errors("404", "409", "503"),
                },
            },
        },
    }


def _links_after_create(kind: Kind) -> dict[str, Schema]:
    """The seed's workflow as links: app -> campaign, segment, tracker, postback -> events."""
    app_id = "$response.body#/id"
    if kind.name == "apps":
        return {
            "CreateCampaign": {"operationId": "createCampaign", "requestBody": {"app_id": app_id}},
            "CreateTracker": {"operationId": "createTracker", "requestBody": {"app_id": app_id}},
            "CreatePostback": {"operationId": "createPostback", "requestBody": {"app_id": app_id}},
            "ListTrackersOfApp": {"operationId": "listTrackers", "parameters": {"app_id": app_id}},
            "ReportOfApp": {"operationId": "trackerReport", "parameters": {"app_id": app_id}},
        }
    if kind.name == "campaigns":
        return {
            "CreateSegment": {
                "operationId": "createSegment",
                "parameters": {"campaign_id": "$response.body#/id"},
            },
            "ListSegments": {
                "operationId": "listSegments",
                "parameters": {"campaign_id": "$response.body#/id"},
            },
        }
    if kind.name == "x-accounts":
        return {
            "Authenticate": {
                "operationId": "authenticateXAccount",
                "parameters": {"id": "$response.body#/id"},
            }
        }
    if kind.name == "postbacks":
        return {
            "SendEvent": {
                "operationId": "trackEvents",
                "requestBody": {
                    "action": "event",
                    "kochava_app_id": "$response.body#/app_id",
                    "data": {"event_name": "$response.body#/event_name"},
                },
            },
            "Deliveries": {"operationId": "listDeliveries"},
        }
    if kind.name == "trackers":
        return {
            "AttributionsOfTracker": {
                "operationId": "listAttributions",
                "parameters": {"tracker_id": "$response.body#/id"},
            }
        }
    return {}


def _title(kind: Kind) -> str:
    return {
        "apps": "App",
        "x-accounts": "XAccount",
        "campaigns": "Campaign",
        "segments": "Segment",
        "trackers": "Tracker",
        "postbacks": "Postback",
    }[kind.name]


def _nullable(kind: str, **extra: object) -> Schema:
    return {"type": [kind, "null"], **extra}


_DELIVERY: Final[Schema] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "event_id": {"type": "string"},
        "postback_id": {"type": "string"},
        "app_id": {"type": "string"},
        "network": {"type": "string"},
        "event_name": {"type": "string"},
        "conversion_type": {"type": "string"},
        "state": {"type": "string", "enum": list(STATES)},
        "reason": _nullable("string"),
        "attempts": {"type": "integer", "minimum": 0},
        "retry_attempts": {"type": "integer", "minimum": 0},
        "first_due_at": {"type": "string", "format": "date-time"},
        "due_at": {"type": "string", "format": "date-time"},
        "x_account_id": _nullable("string"),
        "last_status": _nullable("integer"),
        "last_error": _nullable("string"),
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_ATTRIBUTION: Final[Schema] = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "app_id": {"type": "string"},
        "device_id": {"type": "string", "description": "The hashed device key."},
        "network": {"type": "string"},
        "tracker_id": {"type": "string"},
        "engagement_type": {"type": "string", "enum": ["CLICK", "VIEW"]},
        "engagement_time": {"type": "string"},
        "event_id": {"type": "string"},
        "delivery_id": {"type": "integer"},
        "attributed_at": {"type": "string", "format": "date-time"},
    },
}
_CLAIM: Final[Schema] = {
    "type": "object",
    "properties": {
        "delivery_id": {"type": "integer"},
        "tracker_id": _nullable("string"),
        "outcome": {"type": "string", "enum": list(OUTCOMES)},
        "source": _nullable("string", enum=["twitter", "tpn", None]),
        "engagement_type": _nullable("string"),
        "engagement_time": _nullable("string"),
        "campaign_name": _nullable("string"),
        "rejected": {
            "type": "array",
            "description": "Every candidate that did not win, with its reason.",
            "items": {"type": "object", "required": ["source", "reason"]},
        },
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_STORED_EVENT: Final[Schema] = {
    "type": "object",
    "description": "The event as accepted.",
    "properties": {
        "event_id": {"type": "string"},
        "app_id": {"type": "string"},
        "device_id": _nullable("string"),
        "device_ids": {"type": "object", "additionalProperties": {"type": "string"}},
        "event_name": {"type": "string"},
        "event_data": {"type": "object"},
        "origination_ip": _nullable("string"),
        "device_ua": _nullable("string"),
        "device_ver": _nullable("string"),
        "app_version": _nullable("string"),
        "conversion_time": {"type": "string", "format": "date-time"},
        "received_at": {"type": "string", "format": "date-time"},
    },
}
_REPORT_ROW: Final[Schema] = {
    "type": "object",
    "properties": {
        "tracker_id": _nullable("string", description="null: claims without a tracker."),
        "tracker_name": _nullable("string"),
        "claims": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Claims by outcome.",
        },
        "attributions": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Attributions by engagement type.",
        },
        "x_claimed": {"type": "integer"},
        "accepted": {"type": "integer"},
        "not_accepted": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "The gap to X's dashboard by reason.",
        },
    },
}


# A body naming deliveries by id (replay, cancel).
_BY_IDS: Final[Schema] = {
    "type": "object",
    "required": ["ids"],
    "additionalProperties": False,
    "properties": {
        "ids": {
            "type": "array",
            "maxItems": MAX_REPLAY_IDS,
            "items": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        }
    },
}


def _strict(schema: Schema) -> Schema:
    """Every listed property present and no other: an answer that drifts fails the test."""
    properties = schema["properties"]
    assert isinstance(properties, dict)
    return {**schema, "required": list(properties), "additionalProperties": False}


_TEXT: Final[Schema] = {"type": ["string", "null"]}
_EVENT: Final[Schema] = {
    "type": "object",
    "description": "A Kochava server-to-server event. Other fields are accepted and dropped.",
    "required": ["kochava_app_id", "data"],
    "properties": {
        "action": {"type": ["string", "null"], "enum": ["event", None]},
        "kochava_app_id": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "description": "An existing app's id.",
        },
        "event_id": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "pattern": "^[ -~]+$",
            "description": "Idempotency key (printable ASCII); generated when "
            "absent. A second event with the same id is a duplicate.",
        },
        "kochava_device_id": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
        "device_ids": {
            "type": ["object", "null"],
            "description": "idfa (iOS), adid or android_id (Android); null or empty: none.",
            "additionalProperties": {"type": ["string", "null"], "maxLength": MAX_ID_CHARS},
        },
        "origination_ip": {"type": ["string", "null"], "description": "An IPv4 or IPv6 address."},
        "device_ua": _TEXT,
        "device_ver": _TEXT,
        "app_version": _TEXT,
        "usertime": {
            "type": ["number", "string", "null"],
            "description": "Conversion time in epoch seconds (a number or numeric string), "
            f"from {MIN_CONVERSION_TIME_MS // 1000} to one day after receipt; receipt time "
            "when absent.",
        },
        "data": {
            "type": "object",
            "required": ["event_name"],
            "properties": {
                "event_name": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_NAME_CHARS},
                "event_data": {
                    "type": ["object", "null"],
                    "description": "sum or price, currency, quantity, level, ...",
                },
            },
        },
    },
}
_INGEST_ANSWER: Final[Schema] = {
    "type": "object",
    "required": ["accepted", "duplicates", "rejected", "event_ids"],
    "properties": {
        "accepted": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
        "rejected": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "error", "field"],
                "properties": {
                    "index": {"type": "integer", "minimum": 0},
                    "error": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                },
                "additionalProperties": False,
            },
        },
        "event_ids": {
            "type": "array",
            "items": {"type": ["string", "null"]},
            "description": "The id of each item in input order; null where rejected.",
        },
        "error": _ref("ErrorBody"),
    },
    "additionalProperties": False,
}


def _results_paths() -> dict[str, Any]:
    tag = "results"
    return {
        f"{PREFIX}/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "tags": [tag],
                "summary": "Deliveries, oldest first (by id; scheduled and ready by due time, "
                "then id)",
                "parameters": [
                    _query("state", {"type": "string", "enum": list(STATES)}, "Only this state."),
                    *_PAGING_PARAMETERS,
                ],
                "responses": {
                    "200": _json(_list_answer(_ref("Delivery"), total=False), "A page."),
                    **_errors("400"),
                },
            }
        },
        f"{PREFIX}/deliveries/replay": {
            "post": {
                "operationId": "replayDeliveries",
                "tags": [tag],
                "summary": "Dead deliveries go out again, with their retries restored",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _BY_IDS,
                                    {
                                        "type": "object",
                                        "required": ["state"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "state": {"type": "string", "enum": ["dead"]}
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _strict(
                            {
                                "type": "object",
                                "properties": {"replayed": {"type": "integer", "minimum": 0}},
                            }
                        ),
                        "How many dead deliveries were re-queued.",
                    ),
                    **_errors("400", "413", "422", "503"),
                },
            }
        },
        f"{PREFIX}/deliveries/cancel": {
            "post": {
                "operationId": "cancelDeliveries",
                "tags": [tag],
                "summary": "Deliveries that have not gone out (scheduled, ready, held) become "
                "cancelled, a final state; requests already at X finish",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    _BY_IDS,
                                    {
                                        "type": "object",
                                        "required": ["postback_id"],
                                        "additionalProperties": False,
                                        "properties": {"postback_id": {"type": "string"}},
                                    },
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _strict(
                            {
                                "type": "object",
                                "properties": {"cancelled": {"type": "integer", "minimum": 0}},
                            }
                        ),
                        "How many deliveries were cancelled.",
                    ),
                    **_errors("400", "413", "422", "503"),
                },
            }
        },
        f"{PREFIX}/events/{{event_id}}": {
            "get": {
                "operationId": "getEvent",
                "tags": [tag],
                "summary": "The event, its deliveries, and its claims with every rejected "
                "candidate",
                "parameters": [_path("event_id", "The event's id.")],
                "responses": {
                    "200": _json(
                        _strict(
                            {
                                "type": "object",
                                "properties": {
                                    "event": _STORED_EVENT,
                                    "deliveries": {"type": "array", "items": _ref("Delivery")},
                                    "claims": {"type": "array", "items": _ref("Claim")},
                                },
                            }
                        ),
                        "The event.",
                    ),
                    **_errors("404"),
                },
            }
        },
        f"{PREFIX}/attributions": {
            "get": {
                "operationId": "listAttributions",
                "tags": [tag],
                "summary": "Re-engagement attributions, oldest first (by id)",
                "parameters": [
                    *(
                        _query(f, {"type": "string"}, f"Only this {f}.")
                        for f in ATTRIBUTION_FILTERS
                    ),
                    *_PAGING_PARAMETERS,
                ],
                "responses": {
                    "200": _json(_list_answer(_ref("Attribution"), total=False), "A page."),
                    **_errors("400"),
                },
            }
        },
        f"{PREFIX}/reports/trackers": {
            "get": {
                "operationId": "trackerReport",
                "tags": [tag],
                "summary": "Per tracker: claims by outcome, attributions by engagement type",
                "parameters": [_query("app_id", {"type": "string"}, "Only this app.")],
                "responses": {
                    "200": _json(
                        _strict(
                            {
                                "type": "object",
                                "properties": {
                                    "items": {"type": "array", "items": _strict(_REPORT_ROW)},
                                    "count": {"type": "integer", "minimum": 0},
                                },
                            }
                        ),
                        "One row per tracker (not paged: one per tracker).",
                    ),
                    **_errors("400", "404"),
                },
            }
        },
    }


def _ingest_path(max_body_bytes: int, max_items: int) -> dict[str, Any]:
    events: Schema = {
        "oneOf": [
            _ref("Event"),
            {"type": "array", "items": _ref("Event"), "minItems": 1, "maxItems": max_items},
        ]
    }
    return {
        "/track/json": {
            "post": {
                "operationId": "trackEvents",
                "tags": ["ingest"],
                "summary": "Kochava server-to-server events: one object, an array, or NDJSON",
                "description": f"At most {max_items} events and {max_body_bytes} bytes. "
                "Items are checked one by one: a bad item is listed in `rejected` and never "
                "costs the good ones. The answer comes once the accepted events and their "
                "deliveries are committed.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": events},
                        NDJSON: {
                            "schema": {
                                "type": "string",
                                "description": "One event a "
                                "line (JSON objects); blank lines are skipped.",
                            }
                        },
                    },
                },
                "responses": {
                    "202": {
                        **_json(_ref("IngestAnswer"), "What was accepted."),
                        "links": {
                            "GetEvent": {
                                "operationId": "getEvent",
                                "parameters": {"event_id": "$response.body#/event_ids/0"},
                            },
                            "Deliveries": {"operationId": "listDeliveries"},
                        },
                    },
                    "400": _json(
                        {
                            "oneOf": [
                                {
                                    **_INGEST_ANSWER,
                                    "required": [*_INGEST_ANSWER["required"], "error"],
                                },
                                _ref("Error"),
                            ]
                        },
                        "Nothing could be accepted (each item's refusal listed), or the body "
                        "cannot be read.",
                    ),
                    **_errors("413", "503"),
                },
            }
        }
    }


def _plain_paths() -> dict[str, Any]:
    open_: dict[str, Any] = {"security": []}
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "tags": ["operations"],
                **open_,
                "responses": {
                    "200": _json(
                        _strict(
                            {
                                "type": "object",
                                "properties": {"status": {"type": "string", "enum": ["ok"]}},
                            }
                        ),
                        "Alive.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "tags": ["operations"],
                **open_,
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready to accept events."),
                    "503": _json(
                        _ref("Readiness"), "Starting, draining, or the store cannot write."
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                **open_,
                "responses": {
                    "200": {
                        "description": "Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        PATH: {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                **open_,
                "summary": "This document (no token needed)",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
    }


def document(*, max_body_bytes: int, max_items: int) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    campaign_param = [_path("campaign_id", "The campaign's id.")]
    for kind in KINDS.values():
        if kind.name == "segments":
            base = f"{PREFIX}/campaigns/{{campaign_id}}/segments"
            paths.update(_kind_operations(kind, base, "configuration", campaign_param))
        else:
            paths.update(_kind_operations(kind, f"{PREFIX}/{kind.name}", "configuration", []))
    paths[f"{PREFIX}/x-accounts/{{id}}/authenticate"] = {
        "post": {
            "operationId": "authenticateXAccount",
            "tags": ["configuration"],
            "summary": "A signed call to X with the account's token; the result is kept",
            "parameters": [_path("id", "The X account's id.")],
            "responses": {
                "200": _json(_ref("XAccount"), "The account."),
                **_errors("404", "503"),
            },
        }
    }
    paths.update(_results_paths())
    paths.update(_ingest_path(max_body_bytes, max_items))
    paths.update(_plain_paths())
    # An empty path-level parameter list is noise: drop it.
    for item in paths.values():
        if item.get("parameters") == []:
            del item["parameters"]
    schemas: dict[str, Schema] = {_title(k): _entity_schema(k) for k in KINDS.values()}
    tracker = schemas["Tracker"]
    schemas["TrackerSaved"] = {
        **tracker,
        "properties": {
            **tracker["properties"],
            "replaced_default": {
                "type": ["object", "null"],
                "description": "The tracker that lost the default flag to this one.",
                "required": ["id", "name"],
                "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                "additionalProperties": False,
            },
        },
        "required": [*tracker["required"], "replaced_default"],
    }
    postback = schemas["Postback"]
    pending = {
        "type": "integer",
        "minimum": 0,
        "description": "Deliveries of this postback accepted before and not gone out yet "
        "(scheduled, ready, held): they still go out; POST /api/v1/deliveries/cancel "
        "with the postback_id stops them.",
    }
    schemas["PostbackChanged"] = {
        **postback,
        "properties": {**postback["properties"], "pending_deliveries": pending},
        "required": [*postback["required"], "pending_deliveries"],
    }
    schemas["PostbackDeleted"] = _strict(
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "deleted": {"type": "boolean", "const": True},
                "pending_deliveries": pending,
            },
        }
    )
    schemas.update(
        {
            "Delivery": _strict(_DELIVERY),
            "Attribution": _strict(_ATTRIBUTION),
            "Claim": _strict(_CLAIM),
            "Event": {**_EVENT, "examples": [_EVENT_EXAMPLE]},
            "IngestAnswer": _INGEST_ANSWER,
            "Readiness": _strict({"type": "object", "properties": {"ready": {"type": "boolean"}}}),
            "ErrorBody": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "The field or parameter at fault."},
                },
                "additionalProperties": False,
            },
            "Error": _strict({"type": "object", "properties": {"error": _ref("ErrorBody")}}),
        }
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "postbackd",
            "version": __version__,
            "description": "Event claim requests to X and re-engagement attribution. Lists "
            f"page with `limit` (1 to {MAX_LIMIT}, default {DEFAULT_LIMIT}) and `cursor` (the "
            "previous page's `next`); `count` is the page's size.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                name: _json(_ref("Error"), description) for name, description in _ERRORS.values()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
