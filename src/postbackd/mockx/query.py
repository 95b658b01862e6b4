"""The query string of an X call, read once for both of its uses: the decoded pairs that X's
parameter checks read, and the same pairs encoded for the OAuth signature base string.

Reading follows oauthlib's RFC 5849 parameter collection (section 3.4.1.3.1): the query is
`application/x-www-form-urlencoded` (`+` is a space), a character outside that form or a `%`
without two hex digits makes it malformed, and empty fields are skipped. Encoding follows
section 3.6. Most names and values repeat from call to call (app, OS, conversion type,
windows, price), so both steps are cached per raw field: a claim request pays for its device
id and conversion time only.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

# RFC 5849 section 3.6: ALPHA, DIGIT, '-', '.', '_', '~' stay; every other byte is %XX.
_UNRESERVED: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_ASCII_ESCAPES: Final = {b: f"%{b:02X}" for b in range(128) if chr(b) not in _UNRESERVED}
_BYTE_ESCAPES: Final = tuple(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in range(256))
# What an x-www-form-urlencoded string may hold (oauthlib's `urlencoded` set).
_FORM_CHARS: Final = _UNRESERVED + "!$&'()*+,/:;=?@%"
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
# A raw field already in RFC 5849 form: unreserved characters and upper-case escapes of the
# other ASCII bytes. It is its own encoding, the usual case (every RFC 5849 client sends it).
_CANONICAL: Final = re.compile(
    r"(?:[A-Za-z0-9._~-]++|%(?:[01][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[BCDF]))*+"
)
_ASCII_ESCAPE: Final = re.compile(r"%[0-7][0-9A-F]")
_UNESCAPED: Final = {f"%{b:02X}": chr(b) for b in range(128)}
# Past this many distinct raw fields the least recently used are forgotten.
_CACHED_FIELDS: Final = 8192


def escape(value: str) -> str:
    """RFC 5849 section 3.6 percent-encoding of a (decoded) name or value."""
    if not value.strip(_UNRESERVED):  # nothing to escape: the common case
        return value
    if value.isascii():
        return value.translate(_ASCII_ESCAPES)
    return "".join([_BYTE_ESCAPES[b] for b in value.encode()])


def _unescape(match: re.Match[str]) -> str:
    return _UNESCAPED[match[0]]


def _decoded_and_encoded(raw: str) -> tuple[str, str]:
    if _CANONICAL.fullmatch(raw):
        if "%" not in raw:
            return raw, raw
        # A base64 device id and an X timestamp escape only these: plain replaces decode
        # them when no other escape is left (a decoded character never forms a new one).
        decoded = raw.replace("%2B", "+").replace("%2F", "/").replace("%3D", "=")
        decoded = decoded.replace("%3A", ":")
        if "%" in decoded:
            decoded = _ASCII_ESCAPE.sub(_unescape, raw)
        return decoded, raw
    decoded = raw.replace("+", " ")
    if "%" in decoded:
        decoded = unquote(decoded, errors="replace")
    return decoded, escape(decoded)


@functools.lru_cache(maxsize=_CACHED_FIELDS)
def _field(raw: str) -> tuple[str, str, str, str]:
    """(name, value, encoded name, encoded value) of one raw `name=value` field."""
    if raw.strip(_FORM_CHARS):  # a character outside the set is left over
        raise ValueError("the query holds characters outside the URL-encoded form")
    if "%" in raw and _BAD_ESCAPE.search(raw):
        raise ValueError("the query holds a % that is not followed by two hex digits")
    raw_name, _, raw_value = raw.partition("=")
    name, encoded_name = _decoded_and_encoded(raw_name)
    value, encoded_value = _decoded_and_encoded(raw_value)
    return name, value, encoded_name, encoded_value


@dataclass(frozen=True, slots=True)
class Query:
    # (name, value) as X reads them, in the order sent.
    pairs: list[tuple[str, str]]
    # The same pairs percent-encoded for the signature base string (RFC 5849 3.4.1.3.2).
    encoded: list[tuple[str, str]]


def parse_query(raw: str) -> Query:
    """The pairs of a raw query string; ValueError when it is not form-urlencoded."""
    pairs: list[tuple[str, str]] = []
    encoded: list[tuple[str, str]] = []
    for item in raw.split("&"):
        if item:
            name, value, encoded_name, encoded_value = _field(item)
            pairs.append((name, value))
            encoded.append((encoded_name, encoded_value))
    return Query(pairs, encoded)
