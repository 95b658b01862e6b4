"""Typed reading of JSON objects: every refusal names the field and the reason."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Final, TypeVar

from postbackd.errors import Invalid

T = TypeVar("T")
_MISSING: Final = object()
NAME_MAX: Final = 200


def type_name(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def refuse_unknown(
    data: Mapping[str, object],
    allowed: Collection[str],
    entity: str,
    *,
    also_known: Collection[str] = (),
) -> None:
    """Refuse a field outside `allowed`, naming the valid ones and the closest of them.

    `also_known` are fields that are not unknown but not valid here either (read-only
    ones, refused by the caller with their own reason); they are not suggested.
    """
    for key in data:
        if key in allowed or key in also_known:
            continue
        valid = sorted(allowed)
        # A misspelt field is the usual cause ("post_view_window" for the days one).
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        shown = key if len(key) <= NAME_MAX else key[:NAME_MAX] + "..."
        raise Invalid(
            f"unknown field {shown!r} for {entity}{hint} (valid fields: {', '.join(valid)})",
            field=key,
            code="unknown_field",
        )


def refuse_present(data: Mapping[str, object], names: Collection[str], why: str) -> None:
    for key in names:
        if key in data:
            raise Invalid(f"{key} {why}", field=key, code="read_only")


class Reader:
    """Reads the fields of one object; `data` is the object as it would become."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self.data = data

    def _get(self, name: str) -> object:
        return self.data.get(name, _MISSING)

    def string(self, name: str, *, max_len: int = NAME_MAX) -> str:
        value = self._get(name)
        if value is _MISSING or value is None:
            raise Invalid(f"{name} is required", field=name, code="required")
        return self._check_string(name, value, max_len)

    def optional_string(self, name: str, *, max_len: int = NAME_MAX) -> str | None:
        value = self._get(name)
        if value is _MISSING or value is None:
            return None
        return self._check_string(name, value, max_len)

    @staticmethod
    def _check_string(name: str, value: object, max_len: int) -> str:
        if not isinstance(value, str):
            raise Invalid(f"{name} must be a string, got {type_name(value)}", field=name)
        text = value.strip()
        if not text:
            raise Invalid(f"{name} must not be empty", field=name)
        if len(text) > max_len:
            raise Invalid(f"{name} is longer than {max_len} characters", field=name)
        return text

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise Invalid(f"{name} must be true or false, got {type_name(value)}", field=name)
        return value

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{name} must be an integer, got {type_name(value)}", field=name)
        if not low <= value <= high:
            raise Invalid(f"{name} must be between {low} and {high}, got {value}", field=name)
        return value

    def choice(self, name: str, choices: Collection[T], default: T | None = None) -> T:
        value = self._get(name)
        if value is _MISSING or value is None:
            if default is None:
                raise Invalid(f"{name} is required", field=name, code="required")
            return default
        if isinstance(value, bool) or not isinstance(value, str | int) or value not in choices:
            allowed = ", ".join(sorted(str(c) for c in choices))
            raise Invalid(f"{name} must be one of {allowed}, got {value!r}", field=name)
        return value  # type: ignore[return-value]

    def string_list(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if value is _MISSING or value is None:
            raise Invalid(f"{name} is required", field=name, code="required")
        if not isinstance(value, list):
            raise Invalid(f"{name} must be an array, got {type_name(value)}", field=name)
        if not value:
            raise Invalid(f"{name} must name at least one item", field=name)
        out: list[str] = []
        for i, item in enumerate(value):
            text = self._check_string(f"{name}[{i}]", item, NAME_MAX)
            if text in out:
                raise Invalid(f"{name} names {text!r} twice", field=f"{name}[{i}]")
            out.append(text)
        return tuple(out)
