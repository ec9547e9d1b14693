"""The OpenAPI 3.1 document of the token management API (:mod:`pat_middleware.management.api`),
and the parts the administration API's (:mod:`pat_middleware.management.admin_openapi`) shares.

Built from the API's operations and request shapes (:mod:`pat_middleware.management.bodies`:
the request bodies' schemas derive from the same declarations that validate
them) and the issuing :class:`~pat_middleware.core.policy.Policy` (name and
description limits, longest lifetime), so the document and the code cannot drift
apart. Both framework mounts serve each at ``<mount>/openapi.json``.
"""

from __future__ import annotations

from typing import Any

from pat_middleware.core.audit import LOGGED_KINDS
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
    LogParams,
    RotateArgs,
    UpdateArgs,
)
from pat_middleware.management.shapes import json_schema, query_parameters

__all__ = [
    "ADMIN_RECORD_FIELDS",
    "ERRORS",
    "ERROR_SCHEMA",
    "LOG_SCHEMAS",
    "Operation",
    "build_document",
    "json_answer",
    "openapi_document",
    "page_schema",
    "record_schema",
    "ref",
]

#: The fields of a record in the admin API's answers: the self-service ones and the owner.
ADMIN_RECORD_FIELDS = (*RECORD_FIELDS, "user_id")

_REF = "#/components/"
_TIMESTAMP = {"type": "string", "format": "date-time"}
_NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
_STRINGS = {"type": "array", "items": {"type": "string"}}


def ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{kind}/{name}"}


def json_answer(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


_RECORD_PROPERTIES: dict[str, Any] = {
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
    "state": {
        "type": "string",
        "enum": ["active", "rotated", "inactive", "expired", "revoked"],
        "description": "inactive: unused for longer than the policy's revoke_unused_after.",
    },
}


def page_schema(key: str, item: str, description: str) -> dict[str, Any]:
    """A page of ``item`` under ``key``, with the cursor of the next."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": [key, "next_cursor"],
        "properties": {
            key: {"type": "array", "items": ref("schemas", item)},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page."},
        },
    }


_NULLABLE_STRING = {"type": ["string", "null"]}
LOG_SCHEMAS: dict[str, Any] = {
    "LogEntry": {
        "type": "object",
        "description": "One event of the security log. `actor`: who acted when not the owner.",
        "additionalProperties": False,
        "required": ["id", "at", "kind", "token_id", "user_id", "actor", "client_ip", "reason", "details"],
        "properties": {
            "id": {"type": "string"},
            "at": _TIMESTAMP,
            "kind": {"type": "string", "enum": sorted(LOGGED_KINDS)},
            "token_id": _NULLABLE_STRING,
            "user_id": _NULLABLE_STRING,
            "actor": _NULLABLE_STRING,
            "client_ip": _NULLABLE_STRING,
            "reason": _NULLABLE_STRING,
            "details": {"type": "object"},
        },
    },
    "LogPage": page_schema("entries", "LogEntry", "Entries, newest first."),
}


def record_schema(fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "A token as the API shows it: never its secret or hash.",
        "additionalProperties": False,
        "required": list(fields),
        "properties": {
            **_RECORD_PROPERTIES,
            **({"user_id": {"type": "string", "description": "The owner."}} if "user_id" in fields else {}),
        },
    }


def _schemas(policy: Policy) -> dict[str, Any]:
    return {
        "TokenRecord": record_schema(RECORD_FIELDS),
        "TokenList": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tokens"],
            "properties": {"tokens": {"type": "array", "items": ref("schemas", "TokenRecord")}},
        },
        "NewToken": {
            "type": "object",
            "description": "The plaintext `token` appears here once and never again.",
            "additionalProperties": False,
            "required": ["token", "record"],
            "properties": {"token": {"type": "string"}, "record": ref("schemas", "TokenRecord")},
        },
        # The request bodies: derived from their one declaration (pat_middleware.management.bodies).
        "CreateToken": json_schema(CreateArgs, policy, ONE_EXPIRY),
        "UpdateToken": json_schema(UpdateArgs, policy, ONE_EXPIRY),
        "RotateToken": json_schema(RotateArgs, policy),
        **LOG_SCHEMAS,
        "Error": ERROR_SCHEMA,
    }


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "error_description"],
    "properties": {
        "error": {"type": "string"},
        "error_description": {"type": "string"},
        "field": {"type": "string", "description": "The offending input field."},
    },
}


ERRORS: dict[str, tuple[str, dict[str, Any] | None]] = {
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
    answer = json_answer(ref("schemas", "NewToken"), description, {"Location": {"schema": {"type": "string"}}})
    return {**answer, "links": _LINKS}


# operationId -> (summary, body schema or None, success status, success answer, error statuses, query shape)
Operation = tuple[str, str | None, str, dict[str, Any], tuple[str, ...], type | None]
_OPERATIONS: dict[str, Operation] = {
    "listTokens": (
        "List your tokens",
        None,
        "200",
        json_answer(ref("schemas", "TokenList"), "Your tokens, oldest first."),
        ("400", "401", "403", "422", "503"),
        None,
    ),
    "createToken": (
        "Create a token; the plaintext is in this answer only",
        "CreateToken",
        "201",
        _new_token_answer("Created. Copy `token` now: it is never shown again."),
        ("400", "401", "403", "409", "413", "415", "422", "503"),
        None,
    ),
    "getToken": (
        "Show one of your tokens",
        None,
        "200",
        json_answer(ref("schemas", "TokenRecord"), "The token."),
        ("400", "401", "403", "404", "503"),
        None,
    ),
    "updateToken": (
        "Rename a token or change its description, expiry or networks",
        "UpdateToken",
        "200",
        json_answer(ref("schemas", "TokenRecord"), "The token as it is now."),
        ("400", "401", "403", "404", "409", "413", "415", "422", "503"),
        None,
    ),
    "revokeToken": (
        "Revoke a token (idempotent)",
        None,
        "204",
        {"description": "Revoked."},
        ("400", "401", "403", "404", "503"),
        None,
    ),
    "rotateToken": (
        "Replace a token by a new secret with the same name and scopes",
        "RotateToken",
        "201",
        _new_token_answer("The new token; copy `token` now. The old one is revoked (after `grace_seconds`)."),
        ("400", "401", "403", "404", "409", "413", "415", "422", "503"),
        None,
    ),
    "readLog": (
        "Your security log: what happened to your tokens, newest first",
        None,
        "200",
        json_answer(ref("schemas", "LogPage"), "One page of your entries."),
        ("400", "401", "403", "422", "503"),
        LogParams,
    ),
}


def _operation(entry: Operation, operation_id: str, has_token_id: bool, policy: Policy) -> dict[str, Any]:
    summary, body, status, success, errors, query = entry
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {status: success, **{code: ref("responses", code) for code in errors}},
    }
    parameters: list[dict[str, Any]] = []
    if has_token_id:
        parameters.append(ref("parameters", "token_id"))
    if operation_id == "listTokens":
        parameters.append(
            {
                "name": "state",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": list(STATES), "default": "active"},
            }
        )
    if query is not None:
        parameters.extend(query_parameters(query, policy))
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        content = {"application/json": {"schema": ref("schemas", body)}}
        # the sweep's body is optional
        operation["requestBody"] = {"required": operation_id != "sweepInactive", "content": content}
    return operation


def build_document(
    table: dict[str, Operation],
    operations: tuple[tuple[str, str, str], ...],
    policy: Policy,
    schemas: dict[str, Any],
    errors: dict[str, tuple[str, dict[str, Any] | None]],
    info: dict[str, str],
    bearer: str,
    server_url: str,
) -> dict[str, Any]:
    """An OpenAPI 3.1 document: the ``operations`` (method, path, id) described by ``table``."""
    paths: dict[str, dict[str, Any]] = {}
    for method, template, operation_id in operations:
        operation = _operation(table[operation_id], operation_id, "{token_id}" in template, policy)
        paths.setdefault(template, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {**info, "version": "1"},
        "servers": [{"url": server_url or "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
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
                code: json_answer(ref("schemas", "Error"), description, headers)
                for code, (description, headers) in errors.items()
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": bearer},
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


def openapi_document(
    policy: Policy | None = None,
    *,
    manage_scope: str = MANAGE_SCOPE,
    server_url: str = "",
    title: str = "Personal access tokens",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document; paths are relative to ``server_url`` (the mount)."""
    policy = policy or Policy()
    description = (
        "Manage your own personal access tokens. Authenticate with your login session, or "
        f"with a token that has the `{manage_scope}` scope. Send bodies as application/json. "
        "A token's plaintext appears only in the create and rotate answers."
    )
    return build_document(
        _OPERATIONS,
        OPERATIONS,
        policy,
        _schemas(policy),
        ERRORS,
        {"title": title, "description": description},
        f"A personal access token with the `{manage_scope}` scope.",
        server_url,
    )
