"""The OpenAPI 3.1 document of the token management API (:mod:`pat_middleware.management.api`).

Built from the API's operations and request shapes (:mod:`pat_middleware.management.bodies`:
the request bodies' schemas derive from the same declarations that validate
them) and the issuing :class:`~pat_middleware.core.policy.Policy` (name and
description limits, longest lifetime), so the document and the code cannot drift
apart. Both framework mounts serve it at ``<mount>/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from pat_middleware.core.policy import Policy
from pat_middleware.core.tokens import KEY_ID_LENGTH
from pat_middleware.management.bodies import (
    MANAGE_SCOPE,
    MAX_BODY,
    ONE_EXPIRY,
    OPERATIONS,
    RECORD_FIELDS,
    STATES,
    CreateArgs,
    RotateArgs,
    UpdateArgs,
)
from pat_middleware.management.shapes import json_schema

__all__ = ["openapi_document"]

_REF = "#/components/"
_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{kind}/{name}"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _schemas(policy: Policy) -> dict[str, Any]:
    return {
        "TokenRecord": {
            "type": "object",
            "description": "A token as the API shows it: never its secret or hash.",
            "additionalProperties": False,
            "required": list(RECORD_FIELDS),
            "properties": {
                "id": {"type": "string", "pattern": f"^[0-9A-Za-z]{{{KEY_ID_LENGTH}}}$"},
                "name": {"type": "string"},
                "description": {"type": "string"},
                "scopes": _STRINGS,
                "created_at": _TIMESTAMP,
                "expires_at": _NULLABLE_TIMESTAMP,
                "last_used_at": _NULLABLE_TIMESTAMP,
                "last_used_ips": _STRINGS,
                "revoked_at": _NULLABLE_TIMESTAMP,
                "rotated_from": {"type": ["string", "null"]},
                "allowed_cidrs": _STRINGS,
                "resources": {
                    "type": ["array", "null"],
                    "items": {"type": "string"},
                    "description": "The resource ids the token is limited to; null: every resource.",
                },
                "state": {"type": "string", "enum": ["active", "rotated", "expired", "revoked"]},
            },
        },
        "TokenList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tokens"],
            "properties": {"tokens": {"type": "array", "items": _ref("schemas", "TokenRecord")}},
        },
        "NewToken": {
            "type": "object",
            "description": "The plaintext `token` appears here once and never again.",
            "additionalProperties": False,
            "required": ["token", "record"],
            "properties": {"token": {"type": "string"}, "record": _ref("schemas", "TokenRecord")},
        },
        # The request bodies: derived from their one declaration (pat_middleware.management.bodies).
        "CreateToken": json_schema(CreateArgs, policy, ONE_EXPIRY),
        "UpdateToken": json_schema(UpdateArgs, policy, ONE_EXPIRY),
        "RotateToken": json_schema(RotateArgs, policy),
        "Error": {
            "type": "object",
            "required": ["error", "error_description"],
            "properties": {
                "error": {"type": "string"},
                "error_description": {"type": "string"},
                "field": {"type": "string", "description": "The offending input field."},
            },
        },
    }


_ERRORS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "400": ("A malformed Authorization header (RFC 6750) or JSON body.", None),
    "401": (
        "No session and no token, or an invalid, expired or revoked token.",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "A Bearer challenge."}},
    ),
    "403": (
        "The request's token lacks the token management scope, or would create, rotate or "
        "change a token with scopes it does not hold itself, or for resources it is not limited to "
        "itself (a token limited to resources cannot give out one for every resource).",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "error=insufficient_scope"}},
    ),
    "404": ("No such token for this user (or no such route).", None),
    "409": ("The token is revoked, or the name is taken.", None),
    "413": (f"The body is larger than {MAX_BODY} bytes.", None),
    "415": ("The body is not application/json.", None),
    "422": ("A field is invalid or breaks the issuing policy; `field` names it.", None),
    "503": (
        "The token store is unavailable; retry later.",
        {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}},
    ),
}

_LINKS = {
    "GetToken": {"operationId": "getToken", "parameters": {"token_id": "$response.body#/record/id"}},
    "UpdateToken": {"operationId": "updateToken", "parameters": {"token_id": "$response.body#/record/id"}},
    "RotateToken": {"operationId": "rotateToken", "parameters": {"token_id": "$response.body#/record/id"}},
    "RevokeToken": {"operationId": "revokeToken", "parameters": {"token_id": "$response.body#/record/id"}},
}


def _new_token_answer(description: str) -> dict[str, Any]:
    """A 201 carrying a plaintext token, with links to the new token's operations."""
    answer = _json(_ref("schemas", "NewToken"), description, {"Location": {"schema": {"type": "string"}}})
    return {**answer, "links": _LINKS}


# operationId -> (summary, body schema or None, success status, success answer, error statuses)
_OPERATIONS: dict[str, tuple[str, str | None, str, dict[str, Any], tuple[str, ...]]] = {
    "listTokens": (
        "List your tokens",
        None,
        "200",
        _json(_ref("schemas", "TokenList"), "Your tokens, oldest first."),
        ("400", "401", "403", "422", "503"),
    ),
    "createToken": (
        "Create a token; the plaintext is in this answer only",
        "CreateToken",
        "201",
        _new_token_answer("Created. Copy `token` now: it is never shown again."),
        ("400", "401", "403", "409", "413", "415", "422", "503"),
    ),
    "getToken": (
        "Show one of your tokens",
        None,
        "200",
        _json(_ref("schemas", "TokenRecord"), "The token."),
        ("400", "401", "403", "404", "503"),
    ),
    "updateToken": (
        "Rename a token or change its description, expiry or networks",
        "UpdateToken",
        "200",
        _json(_ref("schemas", "TokenRecord"), "The token as it is now."),
        ("400", "401", "403", "404", "409", "413", "415", "422", "503"),
    ),
    "revokeToken": (
        "Revoke a token (idempotent)",
        None,
        "204",
        {"description": "Revoked."},
        ("400", "401", "403", "404", "503"),
    ),
    "rotateToken": (
        "Replace a token by a new secret with the same name and scopes",
        "RotateToken",
        "201",
        _new_token_answer("The new token; copy `token` now. The old one is revoked (after `grace_seconds`)."),
        ("400", "401", "403", "404", "409", "413", "415", "422", "503"),
    ),
}


def _operation(operation_id: str, has_token_id: bool) -> dict[str, Any]:
    summary, body, status, success, errors = _OPERATIONS[operation_id]
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {status: success, **{code: _ref("responses", code) for code in errors}},
    }
    parameters: list[dict[str, Any]] = []
    if has_token_id:
        parameters.append(_ref("parameters", "token_id"))
    if operation_id == "listTokens":
        parameters.append(
            {
                "name": "state",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(STATES), "default": "active"},
            }
        )
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        content = {"application/json": {"schema": _ref("schemas", body)}}
        operation["requestBody"] = {"required": True, "content": content}
    return operation


def openapi_document(
    policy: Policy | None = None,
    *,
    manage_scope: str = MANAGE_SCOPE,
    server_url: str = "",
    title: str = "Personal access tokens",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document; paths are relative to ``server_url`` (the mount)."""
    policy = policy or Policy()
    paths: dict[str, dict[str, Any]] = {}
    for method, template, operation_id in OPERATIONS:
        paths.setdefault(template, {})[method.lower()] = _operation(operation_id, "{token_id}" in template)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": "1",
            "description": (
                "Manage your own personal access tokens. Authenticate with your login session, or "
                f"with a token that has the `{manage_scope}` scope. Send bodies as application/json. "
                "A token's plaintext appears only in the create and rotate answers."
            ),
        },
        "servers": [{"url": server_url or "/"}],
        "paths": paths,
        "components": {
            "schemas": _schemas(policy),
            "parameters": {
                "token_id": {
                    "name": "token_id",
                    "in": "path",
                    "required": True,
                    "description": "The token's id (its key id, not a secret).",
                    "schema": {"type": "string"},
                }
            },
            "responses": {
                code: _json(_ref("schemas", "Error"), description, headers)
                for code, (description, headers) in _ERRORS.items()
            },
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"A personal access token with the `{manage_scope}` scope.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "session",
                    "description": "The host application's login session (its cookie name may differ).",
                },
            },
        },
        "security": [{"bearerAuth": []}, {"session": []}],
    }
