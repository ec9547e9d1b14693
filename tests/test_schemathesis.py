"""Fuzz the management API and the admin API of both mounts with schemathesis, from their
own OpenAPI documents.

Positive and negative cases for every operation (the self-service ``/log`` and every
admin route included), then a stateful run that follows the document's links (create
-> get/update/rotate/revoke). The checks: no 5xx, every status and header documented,
every body valid against its schema, the documented content type. The session user
comes from the test app's ``X-User`` header; the admin calls are admitted by the host's
``is_admin`` (``X-Admin: yes``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pat_middleware import PATAuth, Policy
from tests.helpers import FAST_ARGON2
from tests.management_apps import ADMIN_APPS, API_APPS, FRAMEWORKS
from tests.management_fixtures import management_store

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
USER = {"X-User": "fuzzer"}
ADMIN = {"X-User": "root", "X-Admin": "yes"}
EXAMPLES = 60
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)


@pytest.fixture(params=FRAMEWORKS)
def loaded(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, PATAuth]]:
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2)
    app = API_APPS[request.param](auth)
    loader = schemathesis.openapi.from_asgi if request.param == "starlette" else schemathesis.openapi.from_wsgi
    yield loader("/api/openapi.json", app), auth
    auth.close()


def fuzz_operations(schema: Any, auth: PATAuth, headers: dict[str, str], owner: str) -> dict[int, int]:
    """Positive then negative cases for every operation of ``schema``, sent with ``headers``;
    a path's token id is sometimes a live token of ``owner``. Returns status -> count."""
    operations = [result.ok() for result in schema.get_all_operations()]
    calls: dict[int, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seed = auth.manager.create(owner, f"seed-{operation.label}-{mode.value}").record.id

            @FAST
            @given(case=operation.as_strategy(generation_mode=mode), real_id=st.booleans())
            def fuzz(case: Any, real_id: bool) -> None:
                if real_id and "token_id" in (case.path_parameters or {}):
                    case.path_parameters["token_id"] = seed  # reach the live-token paths too
                case.headers = {**(case.headers or {}), **headers}
                response = case.call()
                calls[response.status_code] = calls.get(response.status_code, 0) + 1
                case.validate_response(response, checks=CHECKS)

            fuzz()
    assert all(status < 500 for status in calls), calls
    return calls


def test_every_operation_positive_and_negative(loaded: tuple[Any, PATAuth]) -> None:
    schema, auth = loaded
    started = time.monotonic()
    assert len(list(schema.get_all_operations())) == 7
    calls = fuzz_operations(schema, auth, USER, "fuzzer")
    assert {200, 201, 404, 422} <= set(calls), calls  # the fuzzing reached success and error paths
    assert time.monotonic() - started < 60


@pytest.fixture(params=FRAMEWORKS)
def admin_loaded(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[Any, PATAuth]]:
    """The admin API's schema over an app whose policy has an inactivity rule (so the sweep runs)."""
    policy = Policy(revoke_unused_after=timedelta(days=30))
    auth = PATAuth(management_store(tmp_path), hasher=FAST_ARGON2, policy=policy)
    app = ADMIN_APPS[request.param](auth)
    loader = schemathesis.openapi.from_asgi if request.param == "starlette" else schemathesis.openapi.from_wsgi
    yield loader("/admin/openapi.json", app), auth
    auth.close()


def test_every_admin_operation_positive_and_negative(admin_loaded: tuple[Any, PATAuth]) -> None:
    schema, auth = admin_loaded
    started = time.monotonic()
    assert len(list(schema.get_all_operations())) == 6
    for user in ("alice", "bob"):
        auth.manager.create(user, "ci", ["repo:read"])
    calls = fuzz_operations(schema, auth, ADMIN, "alice")
    assert {200, 204, 400, 404} <= set(calls), calls
    assert time.monotonic() - started < 90


def test_stateful_links(loaded: tuple[Any, PATAuth]) -> None:
    schema, _ = loaded
    base = schema.as_state_machine()
    seen: set[tuple[str, int]] = set()

    class Machine(base):  # type: ignore[misc,valid-type]
        def setup(self) -> None:
            # A fresh user per scenario: every scenario starts from an empty token list,
            # so replaying one (as Hypothesis does) meets the same answers.
            self.headers = {"X-User": f"fuzzer-{uuid.uuid4().hex}"}

        def before_call(self, case: Any) -> None:
            # Session-authenticated scenarios: generated credentials only end them early
            # (the operation test above fuzzes the Authorization header).
            for name in ("Authorization", "Cookie"):
                (case.headers or {}).pop(name, None)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": self.headers}

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            seen.add((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Machine.run(
        settings=settings(
            max_examples=50,
            stateful_step_count=6,
            derandomize=True,  # the same scenarios every run: the coverage assertions below are stable
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
    # links were followed: a created token was then read, changed, rotated or revoked
    assert ("POST /tokens", 201) in seen, seen
    followed = {"GET /tokens/{token_id}", "PATCH /tokens/{token_id}", "DELETE /tokens/{token_id}"}
    assert any(label in followed and status in (200, 204) for label, status in seen), seen
