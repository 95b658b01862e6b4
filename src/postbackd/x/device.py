"""The device id X matches on, and its hashed form (`hashed_device_id`).

Reference, "Query parameters": the raw id is the IDFA on iOS and the Google advertising id
(ADID) on Android; it is sent as base64(HMAC-SHA256(partner key, raw id)).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from typing import Final

# The Kochava `device_ids` key X can match, per app platform. `android_id` is not an
# advertising id, so X cannot match it (PRODUCT.md, "Claim request": Android without ADID).
DEVICE_ID_KEY: Final = {"ios": "idfa", "android": "adid"}
# Nothing but zeros and separators: the id of a device that limits ad tracking.
_ZEROS_AND_SEPARATORS: Final = re.compile(r"[\W_0]*")


def usable_device_id(platform: str, device_ids: Mapping[str, object]) -> str | None:
    """The normalised raw id to hash, or None when the event has no id X can match.

    (Reference, "our choice") IDFA upper-cased, ADID lower-cased. Empty ids and the all-zero
    id a device reports when ad tracking is limited are unusable, whatever their formatting.
    """
    try:
        key = DEVICE_ID_KEY[platform]
    except KeyError:
        raise ValueError(f"unknown platform {platform!r}: expected ios or android") from None
    raw = device_ids.get(key)
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    if _ZEROS_AND_SEPARATORS.fullmatch(raw):
        return None
    return raw.upper() if platform == "ios" else raw.lower()


class DeviceHasher:
    """Hashes raw device ids with the partner's HMAC key (a secret: never in a repr)."""

    __slots__ = ("_keyed_mac",)

    def __init__(self, hmac_key_b64: str) -> None:
        # Reference, "our choice": the key is configured base64-encoded. The messages never
        # quote the value, which is a secret.
        try:
            key = base64.b64decode(hmac_key_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the X HMAC key is not valid base64") from None
        if not key:
            raise ValueError("the X HMAC key is empty")
        # Copies of a keyed HMAC skip the key schedule on every hash.
        self._keyed_mac = hmac.new(key, digestmod="sha256")

    def __repr__(self) -> str:
        return "DeviceHasher(hmac_key=...)"

    def hash(self, raw_id: str) -> str:
        mac = self._keyed_mac.copy()
        mac.update(raw_id.encode())
        return base64.b64encode(mac.digest()).decode()
