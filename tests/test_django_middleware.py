"""The Django edge through Django's test client: PATMiddleware (sync and async
Django), request.pat and request.user, scopes_required, the RFC 6750 answers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient, Client

from pat_middleware import PATAuth
from pat_middleware.core.tokens import generate
from pat_middleware.django import get_auth
from tests.django_support import POSTGRES, fresh_pat, postgres_or_skip  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_pat")]


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"{scheme} {token}"}


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def auth() -> PATAuth:
    return get_auth()


@pytest.fixture
def token(auth: PATAuth, alice: User) -> str:
    return auth.manager.create(str(alice.pk), "ci", ["repo:read"], expires_in=timedelta(days=30)).token


def test_a_valid_token_reaches_the_view_with_its_user(client: Client, token: str, alice: User) -> None:
    response = client.get("/me", **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"user": str(alice.pk), "django_user": "alice"}
    assert client.get("/repos", **bearer(token)).json() == {"user": str(alice.pk)}
    assert response["PAT-Token-Expiration"].endswith(" UTC")


def test_anonymous_passes_through_and_scoped_views_challenge(client: Client) -> None:
    assert client.get("/whoami").json() == {"user": None}
    response = client.get("/repos")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="example"'
    assert response["Cache-Control"] == "no-store"


def test_bad_tokens_get_the_rfc6750_answer(client: Client) -> None:
    response = client.get("/whoami", **bearer("pat_nonsense"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="example", error="invalid_token"')
    assert response.json()["error"] == "invalid_token"
    assert response["Content-Type"] == "application/json"
    response = client.get("/whoami", HTTP_AUTHORIZATION="Bearer a b")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_missing_scope_is_403_insufficient_scope(client: Client, auth: PATAuth, alice: User) -> None:
    other = auth.manager.create(str(alice.pk), "other", ["issues:read"]).token
    response = client.get("/repos", **bearer(other))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    assert 'scope="repo:read"' in response["WWW-Authenticate"]
    assert client.get("/any", **bearer(other)).status_code == 200  # any_of


def test_resource_limited_tokens(client: Client, auth: PATAuth, alice: User) -> None:
    web = auth.manager.create(str(alice.pk), "web", ["repo:read"], resources=["acme/web"]).token
    assert client.get("/repos/acme/web", **bearer(web)).status_code == 200
    response = client.get("/repos/acme/api", **bearer(web))
    assert response.status_code == 403
    assert response.json()["error_description"] == "The token is not valid for this resource"


def test_revocation_is_seen_at_once(client: Client, auth: PATAuth, token: str) -> None:
    assert client.get("/repos", **bearer(token)).status_code == 200
    auth.manager.revoke(token[4:16])
    assert client.get("/repos", **bearer(token)).status_code == 401


def test_a_token_of_a_missing_or_inactive_user_is_anonymous_to_django(
    client: Client, auth: PATAuth, alice: User
) -> None:
    ghost = auth.manager.create("999999", "ghost", ["repo:read"]).token
    response = client.get("/me", **bearer(ghost))
    assert response.json() == {"user": "999999", "django_user": None}
    alice.is_active = False
    alice.save()
    token = auth.manager.create(str(alice.pk), "x", ["repo:read"]).token
    assert client.get("/me", **bearer(token)).json()["django_user"] is None


def test_token_requests_skip_csrf_but_session_posts_do_not(token: str, alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.post("/whoami", **bearer(token)).status_code == 200
    client.force_login(alice)
    assert client.post("/whoami").status_code == 403  # Django's CSRF failure


def test_the_hot_path_does_no_io(client: Client, token: str, auth: PATAuth, monkeypatch: Any) -> None:
    assert client.get("/whoami", **bearer(token)).status_code == 200  # verified once: cached

    def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the cached path touched the store or the hasher")

    monkeypatch.setattr(auth.store, "get", no_io)
    monkeypatch.setattr(auth.hasher, "verify", no_io)
    for _ in range(3):
        assert client.get("/whoami", **bearer(token)).json()["user"] is not None


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Bearer \x00",
        "Bearer pat_" + "A" * 10_000,
        "Bearer caf\xe9",  # latin-1 bytes, as WSGI gives them
        "Bearer \xff\xfe",
        "Basic YWxpY2U6cHc=, Bearer x",
        "Bearer a,Bearer b",
        "bearer " + "x" * 59,
        "B" * 70_000,
    ],
)
def test_hostile_headers_get_a_precise_4xx(client: Client, header: str) -> None:
    response = client.get("/repos", HTTP_AUTHORIZATION=header)
    assert response.status_code in (400, 401), (header[:20], response.status_code)
    assert response.json()["error"] in ("invalid_request", "invalid_token", "unauthorized")
    assert response["WWW-Authenticate"].startswith('Bearer realm="example"')


def test_required_and_exempt(settings: Any, client: Client, alice: User) -> None:
    settings.PAT = {**settings.PAT, "REQUIRED": True, "EXEMPT": ["/whoami"]}
    assert client.get("/whoami").status_code == 200
    response = Client().get("/drf/open")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="example"'
    token = get_auth().manager.create(str(alice.pk), "n", []).token
    assert Client().get("/drf/open", **bearer(token)).json() == {"user": str(alice.pk)}


def test_query_tokens_only_when_allowed(settings: Any, token: str) -> None:
    assert Client().get(f"/repos?access_token={token}").status_code == 401
    settings.PAT = {**settings.PAT, "ALLOW_QUERY_TOKEN": True}
    get_auth().manager.create("7", "q", ["repo:read"])
    client = Client()
    assert client.get(f"/whoami?access_token={token}").json()["user"] is not None
    assert client.get(f"/whoami?access_token={token}", **bearer(token)).status_code == 400


def test_async_django(alice: User) -> None:
    async_to_sync(_async_django)(AsyncClient(), alice)


async def _async_django(async_client: AsyncClient, alice: User) -> None:
    created = await sync_to_async(get_auth().manager.create)(str(alice.pk), "ci", ["repo:read"])
    response = await async_client.get("/async/repos", headers={"Authorization": f"Bearer {created.token}"})
    assert response.status_code == 200
    assert response.json() == {"user": str(alice.pk), "django_user": "alice"}
    response = await async_client.get("/async/repos", headers={"Authorization": "Bearer pat_nonsense"})
    assert response.status_code == 401
    assert (await async_client.get("/async/repos")).status_code == 401
    response = await async_client.get("/async/repos", headers={"Authorization": f"Bearer {generate()[0]}"})
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


@POSTGRES
@postgres_or_skip
def test_tokens_in_postgresql(settings: Any, client: Client) -> None:
    settings.PAT = {**settings.PAT, "DATABASE": "postgres"}
    auth = get_auth()
    made = auth.manager.create("77", "pg", ["repo:read"], expires_in=timedelta(days=1))
    assert client.get("/repos", **bearer(made.token)).json() == {"user": "77"}
    auth.manager.revoke(made.record.id)
    assert client.get("/repos", **bearer(made.token)).status_code == 401
    from pat_middleware.django.models import Token

    assert Token.objects.using("postgres").get(pk=made.record.id).revoked_at is not None
    assert not Token.objects.using("default").filter(pk=made.record.id).exists()


def test_the_user_is_looked_up_once_per_request(token: str, alice: User) -> None:
    """``request.user`` and ``request.auser()`` share one lookup."""
    from django.http import HttpResponse
    from django.test import RequestFactory

    from pat_middleware.django.middleware import PATMiddleware, PATRequest

    lookups: list[str] = []
    seen: list[Any] = []

    def view(request: PATRequest) -> HttpResponse:
        seen.extend([request.user.pk, async_to_sync(request.auser)().pk, request.user.pk])
        assert request.pat is not None and request.pat.user_id == str(alice.pk)
        return HttpResponse("ok")

    middleware = PATMiddleware(view)  # type: ignore[arg-type]
    middleware.resolve = lambda principal: lookups.append(principal.user_id) or alice
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert middleware(request).status_code == 200
    assert seen == [alice.pk] * 3
    assert lookups == [str(alice.pk)]
