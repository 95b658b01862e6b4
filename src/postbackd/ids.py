"""Kochava-style identifiers: `ko` + lower-case slug + hex (PRODUCT.md section 1)."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Final

_NOT_SLUG: Final = re.compile(r"[^a-z0-9]+")
_SLUG_MAX: Final = 24
# The tracker id is what marketers append to X's campaign name; the attribution rules find
# it as a token of [a-z0-9-], so every id we make stays inside that alphabet.
TRACKER_HEX: Final = 24
APP_HEX: Final = 16
ENTITY_HEX: Final = 16

APP_ID_PATTERN: Final = re.compile(r"ko[a-z0-9][a-z0-9-]{0,98}")


def slugify(text: str) -> str:
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")
    return slug[:_SLUG_MAX].rstrip("-")


def kochava_id(name: str, hex_digits: int) -> str:
    return f"ko{slugify(name)}{secrets.token_hex(hex_digits // 2)}"


def new_app_id(name: str) -> str:
    return kochava_id(name, APP_HEX)


def new_tracker_id(name: str) -> str:
    return kochava_id(name, TRACKER_HEX)


def iso_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds, the form every answer uses."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_ms(int(time.time() * 1000))
