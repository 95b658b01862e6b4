"""Saving and deleting configuration from a console form, through the API's `Catalog`.

Create, update and delete go to the same `Catalog` calls as the admin API with the same
JSON fields, so every rule of PRODUCT.md section 1 is checked once, in `rules.py`. A
refusal comes back as the form as typed, with the API's message beside the field it names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from postbackd.catalog import KINDS, Kind, Saved
from postbackd.errors import ApiError
from postbackd.fields import Flag, OneOf, TextList
from postbackd.index import Index
from postbackd.model import UNSUPPORTED_DELIVERY_METHODS
from postbackd.rules import APP, POSTBACK, TRACKER

from .forms import FormState, json_fields, text_fields
from .render import see_other
from .services import services, session_of

ACCOUNTS: Final = KINDS["x-accounts"]
APPS: Final = KINDS["apps"]
CAMPAIGNS: Final = KINDS["campaigns"]
SEGMENTS: Final = KINDS["segments"]
TRACKERS: Final = KINDS["trackers"]
POSTBACKS: Final = KINDS["postbacks"]

Shape = Callable[[dict[str, object]], dict[str, object]]


@dataclass(slots=True)
class Attempt:
    """A form posted to the catalog: what it saved, or the refusal and the form as typed."""

    saved: Saved | None
    form: FormState
    status: int = 200


async def save(
    request: web.Request,
    kind: Kind,
    names: Sequence[str],
    *,
    entity_id: str | None = None,
    fixed: dict[str, object] | None = None,
    shape: Shape | None = None,
) -> Attempt:
    """Create (or, with `entity_id`, update) a `kind` from the posted fields `names`.

    `fixed`: fields the page sets, not the form (a segment's campaign). `shape`: how the
    page's form maps onto the API's fields where it is not one input per field. An
    `entity_id` that names nothing is a 404 before the form is read.
    """
    catalog = services(request).catalog
    if entity_id is not None:
        catalog.get(kind, entity_id)
    posted = text_fields(await request.post())
    rules = kind.form
    lists = [n for n in names if isinstance(rules[n], TextList)]
    flags = [n for n in names if isinstance(rules[n], Flag)]
    form = FormState.posted(posted, lists=lists, flags=flags)
    data = json_fields(rules, posted, names, keep_blank_secrets=entity_id is not None)
    data.update(fixed or {})
    if shape is not None:
        data = shape(data)
    try:
        if entity_id is None:
            saved = await catalog.create(kind, data)
        else:
            saved = await catalog.update(kind, entity_id, data)
    except ApiError as e:
        return Attempt(None, form.refused(e, names), e.status)
    return Attempt(saved, form)


async def delete(
    request: web.Request, kind: Kind, entity_id: str, done: str, back: str | None = None
) -> web.Response:
    """Delete, then go to `done`; a refusal (still in use) is shown on `back` (by default
    the object's own page, where the delete button is)."""
    session = session_of(request)
    entity = services(request).catalog.get(kind, entity_id)
    name = getattr(entity, "name", None) or getattr(entity, "event_name", entity_id)
    try:
        await services(request).catalog.delete(kind, entity_id)
    except ApiError as e:
        session.notify(f"The {kind.label} {name!r} was not deleted: {e.message}", "warning")
        return see_other(back or request.path.removesuffix("/delete"))
    session.notify(f"The {kind.label} {name!r} was deleted.")
    return see_other(done)


# The choices of the forms' selects, from the same rule objects the API checks with.
NETWORK_LABELS: Final = {"x_ios": "X — iOS", "x_android": "X — Android"}
PLATFORM_LABELS: Final = {"ios": "iOS", "android": "Android"}
_DELAY: Final = POSTBACK.count("delivery_delay_s")
_RETRIES: Final = POSTBACK.count("retry_attempts")
_METHODS: Final = POSTBACK.one_of("delivery_method")
_ENGAGEMENT: Final = TRACKER.window("post_engagement_window_days")
_VIEW: Final = TRACKER.window("post_view_window_days")


def app_choices(index: Index) -> list[tuple[str, str]]:
    apps = sorted(index.apps.values(), key=lambda a: (a.created_at, a.id))
    return [(a.id, f"{a.name} ({PLATFORM_LABELS[a.platform]}, {a.id})") for a in apps]


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


def _delay(seconds: int) -> str:
    if seconds == 0:
        return "Realtime"
    minutes, rest = divmod(seconds, 60)
    if rest:
        return f"{seconds} seconds"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def delay_choices(current: str = "") -> list[tuple[str, str]]:
    """Realtime, then each minute up to the rule's limit (10 minutes); a stored value that
    is not a whole minute (set through the API) is kept as a choice of its own."""
    values = [_DELAY.low, *range(60, _DELAY.high + 1, 60)]
    if current.isdecimal() and int(current) not in values:
        values = sorted({*values, int(current)})
    return [(str(v), _delay(v)) for v in values]


METHOD_LABELS: Final = {
    "all": "All: every matching event",
    "network_only": "Network only: devices whose latest attribution is to this network",
}


def _labelled(rule: OneOf[str] | OneOf[int], label: Callable[[Any], str]) -> list[tuple[str, str]]:
    return [(str(c), label(c)) for c in rule.choices]


CHOICES: Final[dict[str, list[tuple[str, str]]]] = {
    "platform": _labelled(APP.one_of("platform"), PLATFORM_LABELS.__getitem__),
    "network": _labelled(TRACKER.one_of("network"), lambda n: f"{NETWORK_LABELS[n]} ({n})"),
    "type": _labelled(TRACKER.one_of("type"), lambda t: t.capitalize()),
    "conversion_type": _labelled(TRACKER.one_of("target_event"), str),
    "post_engagement_window_days": _labelled(_ENGAGEMENT, _days),
    "post_view_window_days": _labelled(
        _VIEW, lambda n: "0 days: views never count" if n == 0 else _days(n)
    ),
    "retry_attempts": [
        (str(n), "0: do not retry" if n == 0 else str(n))
        for n in range(_RETRIES.low, _RETRIES.high + 1)
    ],
    "delivery_method": _labelled(_METHODS, lambda m: METHOD_LABELS.get(m, m)),
}
# Known but refused values, shown disabled with the rule's reason (Kochava offers them).
REFUSED_CHOICES: Final = {
    "delivery_method": [(m, _METHODS.refused[m]) for m in UNSUPPORTED_DELIVERY_METHODS],
}
DEFAULTS: Final = {
    "post_engagement_window_days": _ENGAGEMENT.default,
    "post_view_window_days": _VIEW.default,
    "retry_attempts": _RETRIES.default,
    "delivery_delay_s": _DELAY.default,
}
