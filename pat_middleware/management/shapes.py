"""Request shapes declared once, as frozen dataclasses; a small validator of our own reads them.

A *shape* is a dataclass whose field types are among :data:`KINDS` (``str``,
``tuple[str, ...]``, ``int``, ``bool``, ``datetime``, ``dict[str, str]``; ``| None`` and
``| Unset`` mark a field that may be absent) and whose fields may carry a
:func:`rule` (bounds, a description, policy-dependent JSON Schema). From
that one declaration derive:

Declare a field as ``name: str = field(default="", metadata=rule(...))``.

* :func:`parse`: validation of a JSON object body: unknown fields, required
  fields, types and bounds, each a 422 :class:`ApiError` naming the field;
* :func:`json_schema`: the request body's JSON Schema for the OpenAPI
  document (:mod:`pat_middleware.management.openapi`), under a given policy;
* :func:`parse_form`: an HTML form (a multidict of strings), coerced field by
  field to the declared types, then checked like a JSON body;
* :func:`parse_query`: a query string, the same way, but every fault is a 400
  (an unknown or repeated parameter too); :func:`query_parameters` documents it.

Why not msgspec or pydantic: see ``docs/management.md`` ("Request shapes"). In
short, no install weight or import time, the API's exact messages, and
schemas that follow the issuing policy at run time.
"""

from __future__ import annotations

import enum
import re
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from pat_middleware.errors import PATError

if TYPE_CHECKING:
    from pat_middleware.core.policy import Policy

__all__ = [
    "UNSET",
    "ApiError",
    "Rule",
    "Unset",
    "bad_request",
    "invalid",
    "json_schema",
    "parse",
    "parse_form",
    "parse_query",
    "parse_timestamp",
    "query_parameters",
    "rule",
    "unreadable_body",
]

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
Kind = Literal["string", "strings", "integer", "flag", "timestamp", "mapping"]
#: The field types a shape may use, and their kinds.
KINDS: Final[dict[object, Kind]] = {
    str: "string",
    tuple[str, ...]: "strings",
    int: "integer",
    bool: "flag",
    datetime: "timestamp",
    dict[str, str]: "mapping",
}
_SCHEMAS: Final[dict[Kind, dict[str, Any]]] = {
    "string": {"type": "string"},
    "strings": {"type": "array", "items": {"type": "string"}},
    "integer": {"type": "integer"},
    "flag": {"type": "boolean"},
    "timestamp": {"type": "string", "format": "date-time"},
    "mapping": {"type": "object", "additionalProperties": {"type": "string"}},
}
S = TypeVar("S")


class Unset(enum.Enum):
    """The type of :data:`UNSET`: a field the request did not send (``None`` may be a value)."""

    UNSET = "UNSET"


UNSET: Final = Unset.UNSET


class ApiError(PATError):
    """A request the API refuses before any rule runs: bad JSON, media type, field..."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        field: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(description)
        self.status_code = status
        self.error = error
        self.field = field
        self._headers = list(headers)

    def headers(self, realm: str) -> list[tuple[str, str]]:
        return list(self._headers)


def unreadable_body() -> ApiError:
    """A 400 for a request body the server could not read: cut short by the
    client, or broken framing (a bad chunk size). The mounts raise it."""
    return ApiError(400, "invalid_request", "The request body could not be read")


def invalid(field: str | None, description: str) -> ApiError:
    """A 422 ``validation_error`` about ``field``."""
    return ApiError(422, "validation_error", description, field)


def bad_request(field: str | None, description: str) -> ApiError:
    """A 400 ``invalid_request`` about ``field`` (a query parameter, a filter)."""
    return ApiError(400, "invalid_request", description, field)


def parse_timestamp(value: Any, key: str = "expires_at") -> datetime:
    """An RFC 3339 date-time with an offset, or a 422 about ``key``."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise invalid(key, f"{key} must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00Z")
    try:
        return datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError:
        raise invalid(key, f"{key} is not a valid date-time") from None


# -- declaring ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rule:
    """What a field declares besides its type: ``low``/``high`` bound an integer, ``high``
    the items of a list; ``doc`` is its description; ``schema(policy)`` adds (or
    overrides) JSON Schema keywords that depend on the issuing policy; ``nullable``:
    JSON ``null`` is a value of the field (``None``), not an error."""

    low: int | None = None
    high: int | None = None
    doc: str | None = None
    schema: Callable[[Policy], dict[str, Any]] | None = None
    nullable: bool = False


def rule(**options: Any) -> dict[str, Rule]:
    """A field's metadata holding a :class:`Rule`: ``field(default=..., metadata=rule(...))``."""
    return {"rule": Rule(**options)}


@dataclass(frozen=True, slots=True)
class _Slot:
    """One field of a shape, resolved once."""

    name: str
    kind: Kind
    rule: Rule
    required: bool


def _kind(annotation: object, owner: type, name: str) -> Kind:
    if get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a not in (type(None), Unset)]
        if len(rest) == 1:
            annotation = rest[0]
    kind = KINDS.get(annotation)
    if kind is None:
        raise TypeError(f"{owner.__name__}.{name}: {annotation!r} is not a shape field type")
    return kind


_SLOTS: dict[type, tuple[_Slot, ...]] = {}


def slots(shape: type) -> tuple[_Slot, ...]:
    """The fields of ``shape``, in declaration order."""
    known = _SLOTS.get(shape)
    if known is not None:
        return known
    hints = get_type_hints(shape)
    found = []
    for declared in fields(shape):
        required = declared.default is MISSING and declared.default_factory is MISSING
        kind = _kind(hints[declared.name], shape, declared.name)
        found.append(_Slot(declared.name, kind, declared.metadata.get("rule", Rule()), required))
    known = _SLOTS[shape] = tuple(found)
    return known


# -- validating -----------------------------------------------------------------------
def _check(slot: _Slot, value: Any) -> Any:
    key, limits = slot.name, slot.rule
    if value is None and limits.nullable:
        return None
    if slot.kind == "string":
        if not isinstance(value, str):
            raise invalid(key, f"{key} must be a string")
        return value
    if slot.kind == "strings":
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise invalid(key, f"{key} must be a list of strings")
        if limits.high is not None and len(value) > limits.high:
            raise invalid(key, f"{key} may have at most {limits.high} items")
        return tuple(value)
    if slot.kind == "integer":
        low, high = limits.low, limits.high
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            raise invalid(key, f"{key} must be an integer from {low} to {high}")
        return value
    if slot.kind == "flag":
        if not isinstance(value, bool):
            raise invalid(key, f"{key} must be true or false")
        return value
    if slot.kind == "mapping":
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise invalid(key, f"{key} must be an object of strings")
        if limits.high is not None and len(value) > limits.high:
            raise invalid(key, f"{key} may have at most {limits.high} entries")
        return dict(value)
    return parse_timestamp(value, key)


def parse(shape: type[S], data: Mapping[str, Any]) -> S:
    """``data`` (a JSON object) as a ``shape``, or a 422 naming the first field at fault:
    an unknown field, then the declared fields in order."""
    declared = slots(shape)
    names = [slot.name for slot in declared]
    for key in data:
        if key not in names:
            raise invalid(key, f"Unknown field {key!r}; allowed: {', '.join(names)}")
    values: dict[str, Any] = {}
    for slot in declared:
        if slot.name in data:
            values[slot.name] = _check(slot, data[slot.name])
        elif slot.required:
            raise invalid(slot.name, f"{slot.name} is required")
    return shape(**values)


def parse_form(shape: type[S], form: Mapping[str, Sequence[str]]) -> S:
    """An HTML form (every value a string; a field may repeat) as a ``shape``.

    A ``tuple[str, ...]`` field takes every value, others the first; an
    integer field takes ASCII digits (anything else stays a string, for
    :func:`parse` to refuse naming the field); a flag is checked when sent.
    Names the shape does not declare (the CSRF token, the action) are ignored.
    """
    data: dict[str, Any] = {}
    for slot in slots(shape):
        sent = form.get(slot.name)
        if not sent:
            continue
        if slot.kind == "strings":
            data[slot.name] = list(sent)
        elif slot.kind == "integer":
            text = sent[0]
            data[slot.name] = int(text) if text.isascii() and text.isdigit() and len(text) < 7 else text
        elif slot.kind == "flag":
            data[slot.name] = sent[0] not in ("", "0", "false", "off")
        else:
            data[slot.name] = sent[0]
    return parse(shape, data)


def parse_query(shape: type[S], pairs: Sequence[tuple[str, str]]) -> S:
    """Query parameters as a ``shape``: a ``tuple[str, ...]`` field may repeat, any
    other may appear once; an integer takes ASCII digits. Every fault (an unknown
    or repeated parameter, a value out of bounds) is a 400 naming the parameter."""
    declared = {slot.name: slot for slot in slots(shape)}
    data: dict[str, Any] = {}
    for key, value in pairs:
        slot = declared.get(key)
        if slot is None:
            raise bad_request(key, f"Unknown query parameter {key[:50]!r}; allowed: {', '.join(declared)}")
        if slot.kind == "strings":
            data.setdefault(key, []).append(value)
        elif key in data:
            raise bad_request(key, f"{key} may be given once")
        elif slot.kind == "integer":
            data[key] = int(value) if value.isascii() and value.isdigit() and len(value) < 10 else value
        elif slot.kind == "flag":
            data[key] = {"true": True, "false": False}.get(value, value)
        else:
            data[key] = value
    try:
        return parse(shape, data)
    except ApiError as exc:
        raise bad_request(exc.field, exc.description) from None


# -- documenting ------------------------------------------------------------------------
def _property(slot: _Slot, policy: Policy) -> dict[str, Any]:
    schema = dict(_SCHEMAS[slot.kind])
    limits = slot.rule
    if slot.kind == "integer":
        schema.update({k: v for k, v in (("minimum", limits.low), ("maximum", limits.high)) if v is not None})
    elif slot.kind in ("strings", "mapping") and limits.high is not None:
        schema["maxItems" if slot.kind == "strings" else "maxProperties"] = limits.high
    if limits.schema is not None:
        schema.update(limits.schema(policy))
    if limits.nullable:
        schema["type"] = [schema["type"], "null"]
    if limits.doc:
        schema["description"] = limits.doc
    return schema


def json_schema(shape: type, policy: Policy, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema of a ``shape`` body under ``policy`` (``extra``: object-level keywords)."""
    declared = slots(shape)
    schema: dict[str, Any] = {"type": "object", **(extra or {}), "additionalProperties": False}
    required = [slot.name for slot in declared if slot.required]
    if required:
        schema["required"] = required
    schema["properties"] = {slot.name: _property(slot, policy) for slot in declared}
    return schema


def query_parameters(shape: type, policy: Policy) -> list[dict[str, Any]]:
    """The OpenAPI query parameters of a ``shape`` read by :func:`parse_query`."""
    return [
        {"name": slot.name, "in": "query", "required": slot.required, "schema": _property(slot, policy)}
        for slot in slots(shape)
    ]
