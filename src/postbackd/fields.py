"""Field rules, declared once: each rule checks a JSON value and describes itself as JSON Schema.

The configuration rules (`rules.py`) read every field of a request through one of these
objects, and the OpenAPI description (`api/openapi.py`) is generated from the same objects,
so the API's documentation cannot drift from what the daemon checks. Every refusal names
the field and the reason.

    Text         a string: stripped, not blank, at most `max_len` characters
    Identifier   a string matched whole by a pattern (ids, bundle ids): not stripped
    Flag         true or false
    Count        an integer in a range
    OneOf        one of a fixed set of values (strings or integers)
    TextList     a non-empty array of distinct strings
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar, cast

from postbackd.errors import Invalid

T = TypeVar("T", str, int)
R = TypeVar("R")
_MISSING: Final = object()
NAME_MAX: Final = 200

Schema = dict[str, Any]


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


def _nullable(schema: Schema) -> Schema:
    """`schema` or null: JSON Schema 2020-12 (OpenAPI 3.1) spells it with a type list."""
    kind = schema["type"]
    return {**schema, "type": [kind, "null"]}


@dataclass(frozen=True, slots=True)
class Text:
    """A string, stripped of surrounding blanks, that must not be blank. `required=False`:
    absent or null reads as None. The length limit counts the string as sent."""

    name: str
    doc: str
    max_len: int = NAME_MAX
    required: bool = True
    secret: bool = False  # write-only: never in an answer

    def read(self, data: Mapping[str, object]) -> str:
        found = self.read_optional(data)
        if found is None:
            raise Invalid(f"{self.name} is required", field=self.name, code="required")
        return found

    def read_optional(self, data: Mapping[str, object]) -> str | None:
        value = data.get(self.name)
        if value is None:
            return None
        return self.check(self.name, value)

    def check(self, name: str, value: object) -> str:
        if not isinstance(value, str):
            raise Invalid(f"{name} must be a string, got {type_name(value)}", field=name)
        if len(value) > self.max_len:
            raise Invalid(f"{name} is longer than {self.max_len} characters", field=name)
        text = value.strip()
        if not text:
            raise Invalid(f"{name} must not be empty", field=name)
        return text

    def schema(self) -> Schema:
        out: Schema = {
            "type": "string",
            "minLength": 1,
            "maxLength": self.max_len,
            "description": self.doc + " Surrounding blanks are removed; blank is refused.",
        }
        if self.secret:
            out["writeOnly"] = True
        return out if self.required else _nullable(out)


@dataclass(frozen=True, slots=True)
class Identifier:
    """A string that `pattern` matches whole, as sent (ids are not trimmed); `rule` says in
    words what the pattern wants, for the refusal."""

    name: str
    doc: str
    pattern: str
    rule: str
    max_len: int
    required: bool = True
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))

    def read(self, data: Mapping[str, object]) -> str:
        found = self.read_optional(data)
        if found is None:
            raise Invalid(f"{self.name} is required", field=self.name, code="required")
        return found

    def read_optional(self, data: Mapping[str, object]) -> str | None:
        value = data.get(self.name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise Invalid(f"{self.name} must be a string, got {type_name(value)}", field=self.name)
        if len(value) > self.max_len:
            raise Invalid(f"{self.name} is longer than {self.max_len} characters", field=self.name)
        if not self._compiled.fullmatch(value):
            raise Invalid(f"{self.name} must be {self.rule}", field=self.name)
        return value

    def matches(self, value: str) -> bool:
        return self._compiled.fullmatch(value) is not None

    def schema(self) -> Schema:
        out: Schema = {
            "type": "string",
            "maxLength": self.max_len,
            "pattern": f"^(?:{self.pattern})$",
            "description": self.doc,
        }
        return out if self.required else _nullable(out)


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    doc: str
    default: bool

    @property
    def required(self) -> bool:
        return False

    def read(self, data: Mapping[str, object]) -> bool:
        value = data.get(self.name, _MISSING)
        if value is _MISSING:
            return self.default
        if not isinstance(value, bool):
            raise Invalid(
                f"{self.name} must be true or false, got {type_name(value)}", field=self.name
            )
        return value

    def schema(self) -> Schema:
        return {"type": "boolean", "default": self.default, "description": self.doc}


@dataclass(frozen=True, slots=True)
class Count:
    """An integer from `low` to `high`; JSON numbers with a fraction (1.0 too) are refused."""

    name: str
    doc: str
    default: int
    low: int
    high: int

    @property
    def required(self) -> bool:
        return False

    def read(self, data: Mapping[str, object]) -> int:
        value = data.get(self.name, _MISSING)
        if value is _MISSING:
            return self.default
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"{self.name} must be an integer, got {type_name(value)}",
                          field=self.name)  # fmt: skip
        if not self.low <= value <= self.high:
            raise Invalid(
                f"{self.name} must be between {self.low} and {self.high}, got {value}",
                field=self.name,
            )
        return value

    def schema(self) -> Schema:
        return {
            "type": "integer",
            "minimum": self.low,
            "maximum": self.high,
            "default": self.default,
            "description": self.doc,
        }


@dataclass(frozen=True, slots=True)
class OneOf(Generic[T]):
    """One of `choices`. Without a default the field is required; null reads as absent.
    `refused` names values that are known but not supported, each with its reason."""

    name: str
    choices: tuple[T, ...]
    default: T | None = None
    refused: Mapping[str, str] = field(default_factory=dict)
    doc: str = field(default="", kw_only=True)

    @property
    def required(self) -> bool:
        return self.default is None

    def read(self, data: Mapping[str, object]) -> T:
        value = data.get(self.name)
        if value is None:
            if self.default is None:
                raise Invalid(f"{self.name} is required", field=self.name, code="required")
            return self.default
        if isinstance(value, str) and value in self.refused:
            raise Invalid(self.refused[value], field=self.name, code="unsupported")
        if isinstance(value, bool) or not isinstance(value, str | int) or value not in self.choices:
            allowed = ", ".join(sorted(str(c) for c in self.choices))
            raise Invalid(f"{self.name} must be one of {allowed}, got {value!r}", field=self.name)
        return value

    def schema(self) -> Schema:
        kind = "integer" if isinstance(self.choices[0], int) else "string"
        out: Schema = {"type": kind, "enum": sorted(self.choices), "description": self.doc}
        if self.default is None:
            return out
        # Null reads as absent: the default applies.
        return {**_nullable(out), "enum": [*sorted(self.choices), None], "default": self.default}


@dataclass(frozen=True, slots=True)
class TextList:
    """A required, non-empty array of distinct strings, each read like `item`."""

    name: str
    doc: str
    item: Text

    @property
    def required(self) -> bool:
        return True

    def read(self, data: Mapping[str, object]) -> tuple[str, ...]:
        value = data.get(self.name)
        if value is None:
            raise Invalid(f"{self.name} is required", field=self.name, code="required")
        if not isinstance(value, list):
            raise Invalid(f"{self.name} must be an array, got {type_name(value)}", field=self.name)
        if not value:
            raise Invalid(f"{self.name} must name at least one item", field=self.name)
        out: list[str] = []
        for i, item in enumerate(value):
            text = self.item.check(f"{self.name}[{i}]", item)
            if text in out:
                raise Invalid(f"{self.name} names {text!r} twice", field=f"{self.name}[{i}]")
            out.append(text)
        return tuple(out)

    def schema(self) -> Schema:
        item = self.item.schema()
        item.pop("description", None)
        return {"type": "array", "minItems": 1, "items": item, "description": self.doc}


FieldRule = Text | Identifier | Flag | Count | OneOf[str] | OneOf[int] | TextList


@dataclass(frozen=True, slots=True)
class Form:
    """The fields a request may send for one kind of object, and how they may change.

    `immutable`: fields that identify the object and cannot change once it exists (a PATCH
    may repeat the current value). `read_only`: fields only postbackd sets; a request that
    sends one is refused, naming it.
    """

    label: str
    fields: tuple[FieldRule, ...]
    immutable: frozenset[str] = frozenset()
    read_only: frozenset[str] = frozenset({"created_at"})

    def __getitem__(self, name: str) -> FieldRule:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def _typed(self, name: str, cls: type[R]) -> R:
        rule = self[name]
        assert isinstance(rule, cls), (name, rule)
        return rule

    def text(self, name: str) -> Text:
        return self._typed(name, Text)

    def identifier(self, name: str) -> Identifier:
        return self._typed(name, Identifier)

    def flag(self, name: str) -> Flag:
        return self._typed(name, Flag)

    def count(self, name: str) -> Count:
        return self._typed(name, Count)

    def one_of(self, name: str) -> OneOf[str]:
        return cast("OneOf[str]", self._typed(name, OneOf))

    def window(self, name: str) -> OneOf[int]:
        return cast("OneOf[int]", self._typed(name, OneOf))

    def text_list(self, name: str) -> TextList:
        return self._typed(name, TextList)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(f.name for f in self.fields)

    def check_names(self, data: Mapping[str, object]) -> None:
        """Unknown and read-only fields are refused before any rule reads the object."""
        refuse_unknown(data, self.names, self.label, also_known=self.read_only)
        refuse_present(data, self.read_only, "is set by postbackd")
