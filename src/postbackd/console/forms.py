"""HTML forms in, the API's JSON fields out; the API's refusals back beside their fields.

The console checks nothing itself: a posted form becomes the JSON object the admin API
would receive, typed by the field rules of `rules.py` (a checkbox is a boolean, a number
field an integer, a multiple choice a list), and goes to the same `Catalog` calls. What a
rule refuses comes back as the API's message, shown beside the field it names, with the
form as it was typed. Only the shape of HTML is undone here: an empty input is an absent
field, and surrounding blanks of an id pasted into a text box are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from multidict import MultiDict, MultiMapping

from postbackd.errors import ApiError
from postbackd.fields import Count, Flag, Form, Identifier, OneOf, Text, TextList
from postbackd.model import SECRET_FIELDS

# Where a refusal goes when it names no field of the form (a store failure, say).
FORM_ERROR: Final = "_form"
_INDEXED: Final = re.compile(r"\[\d+\]$")
# Write-only fields and the sign-in token: what was typed there never goes back into a page.
_NEVER_SHOWN: Final = SECRET_FIELDS | {"token", "csrf_token"}


def text_fields(posted: MultiMapping[object]) -> MultiDict[str]:
    """The text fields of a posted form (the console's forms have no file inputs)."""
    return MultiDict((k, v) for k, v in posted.items() if isinstance(v, str))


def _integer_or_text(text: str) -> int | str:
    """An integer when the text is one; otherwise the text, for the rule to refuse by name."""
    stripped = text.strip()
    if stripped.isascii() and stripped.lstrip("-").isdecimal():
        return int(stripped)
    return text


def json_fields(
    form: Form, posted: MultiMapping[str], names: Iterable[str], *, keep_blank_secrets: bool
) -> dict[str, object]:
    """The JSON object of the fields `names` of `form`, from a posted HTML form.

    `keep_blank_secrets`: a write-only field left empty is not sent, so the stored value
    stays (an edit form never shows secrets, so an empty one means "unchanged").
    """
    out: dict[str, object] = {}
    for name in names:
        rule = form[name]
        if isinstance(rule, Flag):
            # An unticked checkbox is not posted at all.
            out[name] = name in posted
            continue
        if isinstance(rule, TextList):
            out[name] = [v for v in posted.getall(name, []) if v.strip()]
            continue
        text = posted.get(name, "")
        if not text.strip():
            if isinstance(rule, Text) and rule.secret and keep_blank_secrets:
                continue
            if isinstance(rule, Count):
                continue  # absent: the default
            out[name] = None
        elif isinstance(rule, Count) or (isinstance(rule, OneOf) and _int_choices(rule)):
            out[name] = _integer_or_text(text)
        elif isinstance(rule, Identifier):
            out[name] = text.strip()
        else:
            out[name] = text
    return out


def _int_choices(rule: OneOf[str] | OneOf[int]) -> bool:
    return isinstance(rule.choices[0], int)


def field_of(error: ApiError, shown: Iterable[str]) -> str:
    """The form field a refusal belongs beside (`x_account_ids[1]` is `x_account_ids`)."""
    name = _INDEXED.sub("", error.field or "")
    return name if name in set(shown) else FORM_ERROR


@dataclass(slots=True)
class FormState:
    """What a form shows: each field's value as typed (or stored) and its refusal, if any."""

    values: dict[str, str | list[str] | bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def posted(
        cls, posted: MultiMapping[str], *, lists: Iterable[str] = (), flags: Iterable[str] = ()
    ) -> FormState:
        """The form as typed. Secret fields are never put back into a page."""
        values: dict[str, str | list[str] | bool] = {}
        for name in set(posted):
            if name in _NEVER_SHOWN:
                continue
            values[name] = list(posted.getall(name)) if name in lists else posted[name]
        for name in flags:
            values[name] = name in posted
        return cls(values)

    @classmethod
    def of(cls, data: Mapping[str, object]) -> FormState:
        """A form filled from stored JSON fields (an edit page) or from defaults."""
        values: dict[str, str | list[str] | bool] = {}
        for name, value in data.items():
            if isinstance(value, bool):
                values[name] = value
            elif isinstance(value, list | tuple):
                values[name] = [str(v) for v in value]
            elif value is not None:
                values[name] = str(value)
        return cls(values)

    @classmethod
    def defaults(cls, form: Form, **given: object) -> FormState:
        """A new form: each rule's default, then what the page was asked to fill in."""
        data: dict[str, object] = {}
        for rule in form.fields:
            if isinstance(rule, Flag | Count | OneOf) and rule.default is not None:
                data[rule.name] = rule.default
        data.update({k: v for k, v in given.items() if v is not None})
        return cls.of(data)

    def refused(self, error: ApiError, shown: Iterable[str]) -> FormState:
        self.errors[field_of(error, shown)] = error.message
        return self

    # Read by the templates.
    def value(self, name: str) -> str:
        value = self.values.get(name, "")
        return value if isinstance(value, str) else ""

    def chosen(self, name: str) -> list[str]:
        value = self.values.get(name, [])
        if isinstance(value, str):
            return [value]
        return value if isinstance(value, list) else []

    def checked(self, name: str) -> bool:
        return self.values.get(name) is True

    def error(self, name: str) -> str | None:
        return self.errors.get(name)
