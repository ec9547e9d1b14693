"""Fuzz the management API of both mounts with schemathesis, from its own OpenAPI document.

Positive and negative cases for every operation, then a stateful run that
follows the document's links (create -> get/update/rotate/revoke). The
checks: no 5xx, every status and header documented, every body valid
against its schema, the documented content type. The session user comes
from the test app's ``X-User`` header.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
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

from pat_middleware import PATAuth, SQLiteStore
from tests.helpers import FAST_ARGON2
from tests.management_apps import API_APPS, FRAMEWORKS

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
USER = {"X-User": "fuzzer"}
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
    auth = PATAuth(SQLiteStore(tmp_path / "fuzz.db"), hasher=FAST_ARGON2)
    app = API_APPS[request.param](auth)
    loader = schemathesis.openapi.from_asgi if request.param == "starlette" else schemathesis.openapi.from_wsgi
    yield loader("/api/openapi.json", app), auth
    auth.close()


def test_every_operation_positive_and_negative(loaded: tuple[Any, PATAuth]) -> None:
    schema, auth = loaded
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    calls: dict[int, int] = {}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            seed = auth.manager.create("fuzzer", f"seed-{operation.label}-{mode.value}").record.id

            @FAST
            @given(case=operation.as_strategy(generation_mode=mode), real_id=st.booleans())
            def fuzz(case: Any, real_id: bool) -> None:
                if real_id and "token_id" in (case.path_parameters or {}):
                    case.path_parameters["token_id"] = seed  # reach the live-token paths too
                case.headers = {**(case.headers or {}), **USER}
                response = case.call()
                calls[response.status_code] = calls.get(response.status_code, 0) + 1
                case.validate_response(response, checks=CHECKS)

            fuzz()
    assert all(status < 500 for status in calls)
    assert {200, 201, 404, 422} <= set(calls), calls  # the fuzzing reached success and error paths
    assert time.monotonic() - started < 60


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
