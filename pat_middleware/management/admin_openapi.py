"""The OpenAPI 3.1 document of the administration API (:mod:`pat_middleware.management.admin_api`).

Built like the self-service one (:mod:`pat_middleware.management.openapi`, whose parts it
shares), from the admin API's declarations (:mod:`pat_middleware.management.admin_bodies`)
and the issuing :class:`~pat_middleware.core.policy.Policy`.
"""

from __future__ import annotations

from typing import Any

from pat_middleware.core.policy import Policy
from pat_middleware.management.admin_bodies import (
    ADMIN_OPERATIONS,
    AdminLogParams,
    RevokeMatchingArgs,
    SearchParams,
    SweepArgs,
)
from pat_middleware.management.openapi import (
    ADMIN_RECORD_FIELDS,
    ERROR_SCHEMA,
    ERRORS,
    LOG_SCHEMAS,
    Operation,
    build_document,
    json_answer,
    page_schema,
    record_schema,
    ref,
)
from pat_middleware.management.shapes import json_schema

__all__ = ["admin_openapi_document"]

_REPORT = {
    "dry_run": {"type": "boolean"},
    "count": {"type": "integer", "minimum": 0},
    "ids": {"type": "array", "items": {"type": "string"}},
}
_ADMIN_SCHEMAS: dict[str, Any] = {
    "AdminTokenRecord": record_schema(ADMIN_RECORD_FIELDS),
    "TokenPage": page_schema("tokens", "AdminTokenRecord", "Tokens of every user, in the requested order."),
    "RevokeReport": {
        "type": "object",
        "additionalProperties": False,
        "required": ["dry_run", "count", "ids", "filter"],
        "properties": {**_REPORT, "filter": {"type": "object", "description": "The criteria applied."}},
    },
    "SweepReport": {
        "type": "object",
        "additionalProperties": False,
        "required": ["dry_run", "count", "ids"],
        "properties": _REPORT,
    },
    **LOG_SCHEMAS,
    "Error": ERROR_SCHEMA,
}
_ADMIN_ERRORS = {
    **ERRORS,
    "400": ("A malformed Authorization header, query parameter, filter or JSON body; `field` names it.", None),
    "401": (
        "No login and no token, or an invalid, expired or revoked token.",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "A Bearer challenge."}},
    ),
    "403": (
        "Not an administrator: the host's check said no, or the token lacks the admin scope.",
        {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "error=insufficient_scope"}},
    ),
    "404": ("No such token (or no such route).", None),
    "422": ("A body field has the wrong type; `field` names it.", None),
}
_ADMIN_OPERATIONS: dict[str, Operation] = {
    "searchTokens": (
        "Every user's tokens matching a filter, one page at a time",
        None,
        "200",
        json_answer(ref("schemas", "TokenPage"), "One page of matching tokens."),
        ("400", "401", "403", "503"),
        SearchParams,
    ),
    "revokeMatching": (
        "Revoke every live token matching a filter (try dry_run first)",
        "RevokeMatching",
        "200",
        json_answer(ref("schemas", "RevokeReport"), "What was (with dry_run: would be) revoked."),
        ("400", "401", "403", "413", "415", "422", "503"),
        None,
    ),
    "getAnyToken": (
        "Show any user's token",
        None,
        "200",
        json_answer(ref("schemas", "AdminTokenRecord"), "The token."),
        ("400", "401", "403", "404", "503"),
        None,
    ),
    "revokeAnyToken": (
        "Revoke any user's token (idempotent; logged with you as the actor)",
        None,
        "204",
        {"description": "Revoked."},
        ("400", "401", "403", "404", "503"),
        None,
    ),
    "sweepInactive": (
        "Revoke every token unused for longer than the policy's revoke_unused_after",
        "Sweep",
        "200",
        json_answer(ref("schemas", "SweepReport"), "What was (with dry_run: would be) revoked."),
        ("400", "401", "403", "413", "415", "422", "503"),
        None,
    ),
    "readSecurityLog": (
        "The security log of every user, newest first",
        None,
        "200",
        json_answer(ref("schemas", "LogPage"), "One page of entries."),
        ("400", "401", "403", "503"),
        AdminLogParams,
    ),
}


def admin_openapi_document(
    policy: Policy | None = None,
    *,
    admin_scope: str | None = None,
    server_url: str = "",
    title: str = "Personal access tokens: administration",
) -> dict[str, Any]:
    """The admin API's OpenAPI 3.1 document; paths are relative to ``server_url`` (the mount)."""
    policy = policy or Policy()
    how = f"a token with the `{admin_scope}` scope" if admin_scope else "a token the host app admits"
    description = (
        "Administer every user's personal access tokens: search, revoke one or by filter, sweep "
        f"inactive ones, read the security log. Authenticate as an administrator: the host app's login, or {how}. "
        "Every action is logged with you as the actor."
    )
    schemas = {
        **_ADMIN_SCHEMAS,
        "RevokeMatching": json_schema(RevokeMatchingArgs, policy),
        "Sweep": json_schema(SweepArgs, policy),
    }
    return build_document(
        _ADMIN_OPERATIONS,
        ADMIN_OPERATIONS,
        policy,
        schemas,
        _ADMIN_ERRORS,
        {"title": title, "description": description},
        f"A personal access token with the `{admin_scope}` scope." if admin_scope else "A personal access token.",
        server_url,
    )
