"""Lists in pages (PRODUCT.md 3, "Lists"): `limit`, an opaque `cursor`, and `next`.

Every list has a fixed order on a unique key that new items sort after (configuration:
`created_at` then `id`; deliveries and attributions: their row id, or the due time then the
id for the scheduled and ready deliveries), and a cursor is the key of the last item of a
page. The next page starts after that key, so paging through a list while it grows never
skips nor repeats an item. A cursor is base64url (unpadded) of a small JSON object:

    {"v": 1, "l": "<list>", "f": "<filter digest>", "k": [<key>...]}

`l` and `f` bind it to its list and to the query's filters: a cursor given to another list
or with other filters is refused, as is any cursor that is not one of ours (400, naming
`cursor`). Query-string mistakes are 400 (the request cannot be read), naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import orjson
from multidict import MultiMapping

from postbackd.errors import BadRequest

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 10_000
CURSOR_VERSION: Final = 1
# Long enough for any key of ours; a longer one is refused before it is decoded.
MAX_CURSOR_CHARS: Final = 2048
PAGING_PARAMETERS: Final = frozenset({"limit", "cursor"})
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]+")

Key = tuple[int | str, ...]
# The type of each part of a list's key, e.g. (str, str) for (created_at, id).
KeyShape = tuple[type[int] | type[str], ...]
T = TypeVar("T")


def single_values(query: MultiMapping[str]) -> dict[str, str]:
    """The query's parameters, each given once (a repeated one is refused, naming it)."""
    out: dict[str, str] = {}
    for name, value in query.items():
        if name in out:
            raise BadRequest(f"give {name} once", field=name, code="invalid_parameter")
        out[name] = value
    return out


def limit_of(query: Mapping[str, str]) -> int:
    text = query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    # isdecimal() alone takes other scripts' digits, which int() reads but no client means.
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {text[:20]!r}",
            field="limit",
            code="invalid_parameter",
        )
    return int(text)


def boolean_of(name: str, text: str) -> bool:
    """A boolean query parameter: exactly `true` or `false` (anything else would silently
    match nothing)."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise BadRequest(
        f"{name} must be true or false, got {text[:20]!r}", field=name, code="invalid_parameter"
    )


def integer_of(name: str, text: str) -> int:
    if not (text.isascii() and text.isdecimal()) or len(text) > 18:
        raise BadRequest(
            f"{name} must be a non-negative integer, got {text[:20]!r}",
            field=name,
            code="invalid_parameter",
        )
    return int(text)


def _digest(filters: Mapping[str, str]) -> str:
    canonical = orjson.dumps(sorted(filters.items()))
    return hashlib.sha256(canonical).hexdigest()[:16]


def encode_cursor(list_name: str, filters: Mapping[str, str], key: Key) -> str:
    payload = {"v": CURSOR_VERSION, "l": list_name, "f": _digest(filters), "k": list(key)}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()


def _refused(why: str) -> BadRequest:
    return BadRequest(f"cursor {why}", field="cursor", code="invalid_cursor")


def decode_cursor(text: str, list_name: str, filters: Mapping[str, str], shape: KeyShape) -> Key:
    """The key a cursor stands after; BadRequest naming `cursor` for anything not made by
    `encode_cursor` for this list and these filters."""
    if len(text) > MAX_CURSOR_CHARS:
        raise _refused(f"is longer than {MAX_CURSOR_CHARS} characters")
    if not _BASE64URL.fullmatch(text):
        raise _refused("is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _refused("is not base64url") from None
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _refused("is not a cursor of postbackd (not JSON inside)") from None
    if (
        not isinstance(payload, dict)
        or set(payload) != {"v", "l", "f", "k"}
        or payload["v"] != CURSOR_VERSION
        or not isinstance(payload["k"], list)
    ):
        raise _refused("is not a cursor of postbackd (wrong shape or version)")
    if payload["l"] != list_name or payload["f"] != _digest(filters):
        raise _refused("belongs to another list or to other filters; start again without it")
    key = payload["k"]
    if len(key) != len(shape) or not all(map(_fits, key, shape)):
        raise _refused("holds a key of the wrong shape")
    return tuple(key)


def _fits(part: object, kind: type[int] | type[str]) -> bool:
    """Of the type exactly (a JSON true is no integer) and, as an integer, one SQLite holds."""
    if isinstance(part, int) and type(part) is kind:
        return -(2**63) <= part < 2**63
    return type(part) is kind


@dataclass(frozen=True, slots=True)
class Paging:
    """One list request's paging: the list it reads, its filters, limit and start."""

    list_name: str
    filters: Mapping[str, str]
    limit: int
    after: Key | None

    @classmethod
    def of(
        cls, list_name: str, query: Mapping[str, str], filters: Mapping[str, str], shape: KeyShape
    ) -> Paging:
        text = query.get("cursor")
        after = None if text is None else decode_cursor(text, list_name, filters, shape)
        return cls(list_name, dict(filters), limit_of(query), after)

    def answer(
        self,
        rows: Sequence[T],
        key_of: Callable[[T], Key],
        show: Callable[[T], object],
        total: int | None = None,
    ) -> dict[str, object]:
        """The list answer from up to `limit + 1` rows in list order after the cursor:
        `items`, `count` (items on this page), `next` when there are more, and `total`
        (items matching the filters, on every page) when the list knows it cheaply."""
        page = rows[: self.limit]
        out: dict[str, object] = {"items": [show(r) for r in page], "count": len(page)}
        if total is not None:
            out["total"] = total
        if len(rows) > self.limit:
            out["next"] = encode_cursor(self.list_name, self.filters, key_of(page[-1]))
        return out
