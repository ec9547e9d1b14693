"""Request shapes declared once (pat_middleware.management.shapes, pat_middleware.management.bodies): validation,
the OpenAPI schema and form parsing all derive from the same dataclass."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from pat_middleware.core.policy import Policy
from pat_middleware.management.bodies import (
    CreateArgs,
    CreateForm,
    PageForm,
    RenameForm,
    RotateArgs,
    TokenForm,
    UpdateArgs,
)
from pat_middleware.management.shapes import UNSET, ApiError, json_schema, parse, parse_form, rule

SHAPES = (CreateArgs, UpdateArgs, RotateArgs, PageForm, CreateForm, RenameForm, TokenForm)


def refused(shape: type, data: dict[str, object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(shape, data)
    assert caught.value.status_code == 422 and caught.value.error == "validation_error"
    return caught.value


def test_parse_gives_the_declared_types() -> None:
    args = parse(
        CreateArgs,
        {"name": "ci", "scopes": ["a", "b"], "expires_at": "2026-05-01T12:00:00Z", "allowed_cidrs": ["10.0.0.0/8"]},
    )
    assert args == CreateArgs(
        name="ci",
        scopes=("a", "b"),
        expires_at=datetime(2026, 5, 1, 12, tzinfo=UTC),
        allowed_cidrs=("10.0.0.0/8",),
    )
    assert parse(UpdateArgs, {}) == UpdateArgs(name=UNSET, description=UNSET, allowed_cidrs=UNSET)
    assert parse(RotateArgs, {"grace_seconds": 0}) == RotateArgs(grace_seconds=0)


def test_the_first_field_at_fault_is_named_unknown_fields_first() -> None:
    unknown = refused(CreateArgs, {"scopes": 1, "colour": "red"})
    assert unknown.field == "colour"
    allowed = "name, description, scopes, expires_at, expires_in_days, never_expires, allowed_cidrs, resources"
    assert unknown.description == f"Unknown field 'colour'; allowed: {allowed}"
    assert refused(CreateArgs, {"scopes": 1}).description == "name is required"
    both = refused(CreateArgs, {"name": "x", "description": 1, "scopes": 1})
    assert (both.field, both.description) == ("description", "description must be a string")


@pytest.mark.parametrize(
    ("shape", "data", "field", "message"),
    [
        (CreateArgs, {"name": "x", "scopes": [1]}, "scopes", "scopes must be a list of strings"),
        (CreateArgs, {"name": "x", "scopes": ["s"] * 101}, "scopes", "scopes may have at most 100 items"),
        (CreateArgs, {"name": "x", "never_expires": 1}, "never_expires", "never_expires must be true or false"),
        (
            UpdateArgs,
            {"expires_in_days": True},
            "expires_in_days",
            "expires_in_days must be an integer from 1 to 100000",
        ),
        (RotateArgs, {"grace_seconds": -1}, "grace_seconds", "grace_seconds must be an integer from 0 to 604800"),
        (UpdateArgs, {"expires_at": "2026-02-30T00:00:00Z"}, "expires_at", "expires_at is not a valid date-time"),
        (UpdateArgs, {"name": None}, "name", "name must be a string"),
    ],
)
def test_messages(shape: type, data: dict[str, object], field: str, message: str) -> None:
    error = refused(shape, data)
    assert (error.field, error.description) == (field, message)


def test_the_schema_derives_from_the_same_declaration() -> None:
    policy = Policy(max_lifetime=timedelta(days=60), max_name_length=20, max_cidrs=3)
    for shape in (CreateArgs, UpdateArgs, RotateArgs):
        schema = json_schema(shape, policy)
        assert list(schema["properties"]) == [f.name for f in dataclasses.fields(shape)]
        assert schema["additionalProperties"] is False
    create = json_schema(CreateArgs, policy)
    assert create["required"] == ["name"] and "required" not in json_schema(UpdateArgs, policy)
    properties = create["properties"]
    assert properties["name"]["maxLength"] == 20 and properties["allowed_cidrs"]["maxItems"] == 3
    assert properties["expires_in_days"] == {"type": "integer", "minimum": 1, "maximum": 60}
    assert properties["never_expires"] == {"type": "boolean", "const": False}
    assert properties["expires_at"]["format"] == "date-time"
    free = json_schema(CreateArgs, Policy(max_lifetime=None, require_expiry=False))["properties"]
    assert free["never_expires"] == {"type": "boolean"} and free["expires_in_days"]["maximum"] == 100_000


def test_forms_are_read_by_their_declaration() -> None:
    form = {
        "csrf_token": ["c"],
        "action": ["create"],
        "name": ["laptop"],
        "scope": ["b", "a"],
        "scopes": ["c  d"],
        "expiration": ["7"],
        "other": ["ignored"],
    }
    assert parse_form(PageForm, form) == PageForm("c", "create")
    sent = parse_form(CreateForm, form)
    assert sent == CreateForm(name="laptop", scope=("b", "a"), scopes="c  d", expiration="7")
    assert sent.args() == CreateArgs(name="laptop", scopes=("b", "a", "c", "d"), expires_in_days=7)
    assert parse_form(CreateForm, {}) == CreateForm()
    assert parse_form(RenameForm, {"token_id": ["x"], "name": ["n"]}).args() == UpdateArgs(name="n")
    assert parse_form(TokenForm, {"token_id": ["x", "y"]}) == TokenForm("x")


def test_create_form_expiry_choices() -> None:
    never = CreateForm(name="n", expiration="never", expires_on="2026-01-10")
    assert never.args() == CreateArgs(name="n", never_expires=True)
    custom = CreateForm(name="n", expiration="custom", expires_on="2026-01-10")
    assert custom.args() == CreateArgs(name="n", expires_at=datetime(2026, 1, 10, 23, 59, 59, tzinfo=UTC))
    with pytest.raises(ApiError, match="Pick an expiry date"):
        CreateForm(name="n", expiration="custom").args()


@pytest.mark.parametrize("odd", ["²", "٣", "-1", "9999999", "1e3", "soon"])
def test_create_form_odd_expirations_are_422_on_expires_in_days(odd: str) -> None:
    with pytest.raises(ApiError) as caught:
        CreateForm(name="n", expiration=odd).args()
    assert caught.value.status_code == 422 and caught.value.field == "expires_in_days"


def test_a_field_type_outside_the_kinds_is_refused_at_first_use() -> None:
    @dataclasses.dataclass(frozen=True)
    class Odd:
        value: float = dataclasses.field(default=0.0, metadata=rule())

    with pytest.raises(TypeError, match=r"Odd\.value"):
        parse(Odd, {})


# The package's shape (no cycles, modules under 500 lines) is checked for every module by test_layout.py.


def test_form_values_are_coerced_to_the_declared_types() -> None:
    @dataclasses.dataclass(frozen=True)
    class Settings:
        days: int | None = dataclasses.field(default=None, metadata=rule(low=1, high=90))
        loud: bool = False
        tags: tuple[str, ...] = dataclasses.field(default=(), metadata=rule(high=2))

    assert parse_form(Settings, {"days": ["30"], "loud": ["on"], "tags": ["a", "b"]}) == Settings(30, True, ("a", "b"))
    assert parse_form(Settings, {"loud": ["off"]}) == Settings()
    for days in ("²", "0", "91", "x", "1" * 7):
        with pytest.raises(ApiError) as caught:
            parse_form(Settings, {"days": [days]})
        assert caught.value.field == "days"
    with pytest.raises(ApiError, match="tags may have at most 2 items"):
        parse_form(Settings, {"tags": ["a", "b", "c"]})
