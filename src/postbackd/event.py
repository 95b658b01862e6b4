"""Incoming events of `POST /track/json`: reading the body and checking each item.

PRODUCT.md section 3 ("Ingest") gives the shape, the Kochava server-to-server event; section 4
asks that every refusal name its field and reason. `split_body` turns a body into items and
`parse_event` turns one item into an `Event`; both are pure, so whether the app exists is
left to the caller, which holds the configuration index.

Both run for every event, so checks are plain type and length tests, not regexes.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Final

import orjson

from postbackd.errors import BadRequest, Invalid, TooLarge
from postbackd.fields import type_name

MAX_ID_CHARS: Final = 128
MAX_EVENT_NAME_CHARS: Final = 256
# A conversion time before this is not epoch seconds of a real event.
MIN_CONVERSION_TIME_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z
# Device clocks drift, but a conversion a day ahead of its receipt is a wrong unit or clock.
MAX_FUTURE_MS: Final = 86_400_000
# A plain IPv4 address, checked without `ipaddress` (7x slower; it stays for IPv6).
_BYTE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_QUAD: Final = re.compile(rf"{_BYTE}(?:\.{_BYTE}){{3}}")
NDJSON_CONTENT_TYPES: Final = frozenset({"application/x-ndjson", "application/ndjson"})
_UTF8_BOM: Final = b"\xef\xbb\xbf"


# Not frozen, though never changed once made: one is made per event, and a frozen dataclass's
# __init__ (object.__setattr__ per field) costs several times a plain one.
@dataclass(slots=True)
class Event:
    event_id: str
    app_id: str
    device_id: str | None
    # Kept as sent (idfa, adid, android_id, ...); the X layer normalises case before hashing.
    device_ids: dict[str, str]
    event_name: str
    event_data: dict[str, object]
    origination_ip: str | None
    device_ua: str | None
    device_ver: str | None
    app_version: str | None
    conversion_time_ms: int
    received_at_ms: int

    def to_json(self) -> bytes:
        """The stored form: every field by name, read back by `from_json`."""
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes) -> Event:
        fields: dict[str, Any] = orjson.loads(data)
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Malformed:
    """An NDJSON line that is not JSON; it stands in the item list so only it is rejected."""

    reason: str


def split_body(body: bytes, content_type: str, *, max_items: int) -> list[object]:
    """The items of an ingest body: one JSON object, a JSON array, or NDJSON lines.

    An NDJSON line that cannot be read becomes a `Malformed` item, so the good lines of the
    batch are still accepted (PRODUCT.md section 3: one bad item never costs the good ones).
    Blank lines are skipped and take no index.
    """
    # Some Windows tools start UTF-8 files with a byte order mark, which orjson refuses;
    # byte offsets in messages count from after it.
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
    if not body.strip():
        raise BadRequest("the body is empty: send a JSON object, a JSON array, or NDJSON")
    if content_type.partition(";")[0].strip().lower() in NDJSON_CONTENT_TYPES:
        return _ndjson_items(body, max_items)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        _raise_if_not_utf8(body)
        # Several JSON values, one a line, sent without the NDJSON content type. A
        # pretty-printed document that is cut short starts with a line that is not JSON on
        # its own ("{" or "["), so it gets the document's own error instead.
        lines = body.strip().split(b"\n", 1)
        if len(lines) == 2 and _is_json(lines[0]):
            return _ndjson_items(body, max_items)
        raise BadRequest(f"the body is not valid JSON: {error}") from None
    if isinstance(document, dict):
        return [document]
    if isinstance(document, list):
        _check_item_count(len(document), max_items)
        return document
    raise BadRequest(
        f"the body must be a JSON object, a JSON array or NDJSON, not {type_name(document)}"
    )


def _ndjson_items(body: bytes, max_items: int) -> list[object]:
    # The common case, every line good, in a lean loop (ingest's hottest); at the first bad
    # line the body is read again with line numbers and offsets for the messages.
    lines = [line for line in body.split(b"\n") if line and not line.isspace()]
    _check_item_count(len(lines), max_items)
    loads = orjson.loads
    try:
        return [loads(line) for line in lines]
    except orjson.JSONDecodeError:
        return _ndjson_lines(body, max_items)


def _ndjson_lines(body: bytes, max_items: int) -> list[object]:
    items: list[object] = []
    offset = 0
    for line_number, line in enumerate(body.split(b"\n"), start=1):
        line_offset = offset
        offset += len(line) + 1
        if not line.strip():
            continue
        _check_item_count(len(items) + 1, max_items)
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as error:
            try:
                line.decode()
            except UnicodeDecodeError as bad_bytes:
                reason = f"not valid UTF-8 at byte offset {line_offset + bad_bytes.start}"
            else:
                reason = f"malformed JSON: {error.msg} at column {error.colno}"
            items.append(Malformed(f"line {line_number}: {reason}"))
    return items


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _raise_if_not_utf8(body: bytes) -> None:
    try:
        body.decode()
    except UnicodeDecodeError as error:
        raise BadRequest(f"the body is not valid UTF-8 at byte offset {error.start}") from None


def _check_item_count(count: int, max_items: int) -> None:
    if count > max_items:
        raise TooLarge(
            f"the body holds more than {max_items} events; split it into smaller batches",
            code="too_many_items",
        )


def parse_event(item: object, *, received_at_ms: int) -> Event:
    """Check one item of a batch against the ingest shape and build its `Event`.

    Raises `Invalid` naming the field at fault. Optional fields may be absent or null; an
    empty string counts as absent too, except for `event_id`. Unknown fields are
    tolerated (Kochava's payloads carry many) and dropped.
    """
    if isinstance(item, Malformed):
        raise Invalid(item.reason)
    if not isinstance(item, dict):
        raise Invalid(f"an event must be a JSON object, not {type_name(item)}")

    action = item.get("action")
    if action is not None and action != "event":
        raise Invalid('action must be "event" when present', field="action")

    data = item.get("data")
    if data is None:
        raise Invalid("data is required", field="data")
    if not isinstance(data, dict):
        raise Invalid(f"data must be an object, not {type_name(data)}", field="data")
    event_data = data.get("event_data")
    if event_data is None:
        event_data = {}
    elif not isinstance(event_data, dict):
        raise Invalid(
            f"data.event_data must be an object, not {type_name(event_data)}",
            field="data.event_data",
        )

    usertime = item.get("usertime")
    # By position, in the order of Event's fields: a third of the cost of by name.
    return Event(
        _event_id(item),
        _required_str(item, "kochava_app_id", "kochava_app_id", MAX_ID_CHARS),
        _optional_str(item, "kochava_device_id", MAX_ID_CHARS),
        _device_ids(item.get("device_ids")),
        _required_str(data, "event_name", "data.event_name", MAX_EVENT_NAME_CHARS),
        event_data,
        _origination_ip(item),
        _optional_str(item, "device_ua"),
        _optional_str(item, "device_ver"),
        _optional_str(item, "app_version"),
        received_at_ms if usertime is None else _conversion_time_ms(usertime, received_at_ms),
        received_at_ms,
    )


def _event_id(item: dict[str, object]) -> str:
    """The idempotency key (PRODUCT.md section 3), or a fresh id when none was sent."""
    if item.get("event_id") is None:
        return os.urandom(16).hex()
    event_id = _required_str(item, "event_id", "event_id", MAX_ID_CHARS)
    if not (event_id.isascii() and event_id.isprintable()):
        raise Invalid("event_id must be printable ASCII", field="event_id")
    return event_id


def _required_str(parent: dict[str, object], key: str, field: str, max_chars: int) -> str:
    value = parent.get(key)
    if value is None:
        raise Invalid(f"{field} is required", field=field)
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string, not {type_name(value)}", field=field)
    if not value:
        raise Invalid(f"{field} must not be empty", field=field)
    if len(value) > max_chars:
        raise Invalid(f"{field} is longer than {max_chars} characters", field=field)
    return value


def _optional_str(item: dict[str, object], key: str, max_chars: int | None = None) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key} must be a string, not {type_name(value)}", field=key)
    if max_chars is not None and len(value) > max_chars:
        raise Invalid(f"{key} is longer than {max_chars} characters", field=key)
    return value


def _device_ids(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(f"device_ids must be an object, not {type_name(value)}", field="device_ids")
    device_ids: dict[str, str] = {}
    for kind, device_id in value.items():
        # Null or empty carries no id: dropped, as if absent.
        if device_id is None or device_id == "":
            continue
        field = f"device_ids.{kind}"
        if not isinstance(device_id, str):
            raise Invalid(f"{field} must be a string, not {type_name(device_id)}", field=field)
        if len(device_id) > MAX_ID_CHARS:
            raise Invalid(f"{field} is longer than {MAX_ID_CHARS} characters", field=field)
        device_ids[kind] = device_id
    return device_ids


def _origination_ip(item: dict[str, object]) -> str | None:
    address = _optional_str(item, "origination_ip")
    if address is not None:
        # X's device_ip_address takes an IPv4 or IPv6 address (reference: query parameters).
        try:
            if not _DOTTED_QUAD.fullmatch(address):
                ipaddress.ip_address(address)
        except ValueError:
            raise Invalid(
                "origination_ip must be an IPv4 or IPv6 address", field="origination_ip"
            ) from None
    return address


def _conversion_time_ms(usertime: object, received_at_ms: int) -> int:
    """`usertime` (epoch seconds: a number or a numeric string) in epoch milliseconds."""
    seconds: int | float
    # bool is an int in Python, but true is not a time.
    if isinstance(usertime, bool) or not isinstance(usertime, int | float | str):
        raise Invalid(
            f"usertime must be epoch seconds as a number or numeric string, "
            f"not {type_name(usertime)}",
            field="usertime",
        )
    if isinstance(usertime, str):
        if usertime.isascii() and usertime.isdigit():
            seconds = int(usertime)
        else:
            try:
                seconds = float(usertime)
            except ValueError:
                raise Invalid(
                    "usertime must be epoch seconds as a number or numeric string",
                    field="usertime",
                ) from None
    else:
        seconds = usertime
    if isinstance(seconds, float):
        if not math.isfinite(seconds):
            raise Invalid("usertime must be a finite number", field="usertime")
        time_ms = round(seconds * 1000)
    else:
        time_ms = seconds * 1000
    if time_ms < MIN_CONVERSION_TIME_MS:
        raise Invalid("usertime is before 2000-01-01; it must be epoch seconds", field="usertime")
    if time_ms > received_at_ms + MAX_FUTURE_MS:
        raise Invalid(
            "usertime is more than 1 day after the event was received; "
            "it must be epoch seconds (not milliseconds) from a correct clock",
            field="usertime",
        )
    return time_ms
