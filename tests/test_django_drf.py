"""Django REST framework: PATAuthentication, HasScopes, HasAnyScope (with and without
PATMiddleware in front), the same refusals as the other edges."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from pat_middleware import PATAuth
from pat_middleware.django import get_auth
from pat_middleware.django.rest_framework import HasScopes, PATAuthentication
from tests.django_support import fresh_pat  # noqa: F401 - a fixture
from tests.django_views import DRFRepos

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_pat")]

WITHOUT_MIDDLEWARE = [m for m in __import__("tests.django_settings").django_settings.MIDDLEWARE if "pat_" not in m]


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture(params=["middleware", "no middleware"])
def client(request: pytest.FixtureRequest, settings: Any) -> Client:
    if request.param == "no middleware":
        settings.MIDDLEWARE = WITHOUT_MIDDLEWARE
    return Client()


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


@pytest.fixture
def auth() -> PATAuth:
    return get_auth()


def test_authenticate_returns_the_user_and_the_principal(client: Client, auth: PATAuth, alice: User) -> None:
    token = auth.manager.create(str(alice.pk), "ci", ["repo:read"]).token
    response = client.get("/drf/repos", **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"user": str(alice.pk), "django_user": "alice"}


def test_anonymous_is_401_with_the_bearer_challenge_not_403(client: Client) -> None:
    response = client.get("/drf/repos")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="example"'
    assert client.get("/drf/open").json() == {"user": None}


def test_bad_token_is_401_invalid_token(client: Client) -> None:
    response = client.get("/drf/repos", **bearer("pat_nonsense"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="example", error="invalid_token"')
    assert response.json() == {
        "error": "invalid_token",
        "error_description": "The access token is invalid, expired or revoked",
    }
    response = client.get("/drf/repos", HTTP_AUTHORIZATION="Bearer a b")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"


def test_scopes_all_of_and_any_of(client: Client, auth: PATAuth, alice: User) -> None:
    issues = auth.manager.create(str(alice.pk), "issues", ["issues:read"]).token
    response = client.get("/drf/repos", **bearer(issues))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    assert response.json()["error"] == "insufficient_scope"
    assert client.get("/drf/any", **bearer(issues)).status_code == 200


def test_a_token_whose_user_is_gone_is_refused(client: Client, auth: PATAuth) -> None:
    ghost = auth.manager.create("424242", "ghost", ["repo:read"]).token
    response = client.get("/drf/repos", **bearer(ghost))
    assert response.status_code == 401 and response.json()["error"] == "invalid_token"


def test_a_view_without_required_scopes_is_a_configuration_error(alice: User, auth: PATAuth) -> None:
    class Forgot(APIView):
        authentication_classes = [PATAuthentication]
        permission_classes = [HasScopes]

    token = auth.manager.create(str(alice.pk), "ci", ["repo:read"]).token
    request = APIRequestFactory().get("/", **bearer(token))
    with pytest.raises(ImproperlyConfigured, match="required_scopes"):
        Forgot.as_view()(request)
    DRFRepos.required_scopes = ["not a scope"]
    try:
        with pytest.raises(ImproperlyConfigured):
            DRFRepos.as_view()(APIRequestFactory().get("/", **bearer(token)))
    finally:
        DRFRepos.required_scopes = ["repo:read"]


def test_store_down_is_503_with_retry_after(settings: Any) -> None:
    settings.PAT = {"REALM": "example", "STORE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    settings.MIDDLEWARE = WITHOUT_MIDDLEWARE
    from pat_middleware.core.tokens import generate

    response = Client().get("/drf/repos", **bearer(generate()[0]))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"] == "temporarily_unavailable"


def test_the_openapi_schema_has_the_bearer_scheme() -> None:
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    assert schema["components"]["securitySchemes"]["PersonalAccessToken"]["scheme"] == "bearer"
    operation = schema["paths"]["/drf/repos"]["get"]
    assert {"PersonalAccessToken": []} in operation["security"]
