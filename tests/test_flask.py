"""The Flask extension: ``PAT``, ``current_principal``, ``scopes_required``, config, through webtest."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import webtest
from flask import Blueprint, Flask, abort
from flask.views import MethodView
from werkzeug.exceptions import HTTPException

from pat_middleware import PATAuth
from pat_middleware.core.tokens import generate
from pat_middleware.flask import PAT, current_principal, get_auth, get_principal, scopes_required
from pat_middleware.wsgi import PATMiddleware
from tests.helpers import FakeClock
from tests.test_wsgi import (
    assert_bare_challenge,
    assert_invalid_request,
    assert_invalid_token,
    assert_rejected,
    bearer,
)
from tests.wsgi_fixtures import REALM, auth, make_auth, token  # noqa: F401 - fixtures, defined in this module's namespace


def build_app(auth: PATAuth | None = None, **config: Any) -> tuple[Flask, Counter[str]]:
    """An app with public and protected routes, a blueprint, an async view and
    error handlers that would reformat any HTTP error they were given."""
    calls: Counter[str] = Counter()
    app = Flask(__name__)
    app.config.update(config)
    PAT(app, auth=auth)

    @app.before_request
    def count_request() -> None:
        calls["before_request"] += 1

    @app.errorhandler(401)
    @app.errorhandler(403)
    @app.errorhandler(HTTPException)
    def html_error(error: HTTPException) -> tuple[str, int]:
        return "<h1>the app's own error page</h1>", error.code or 500

    @app.get("/public")
    def public() -> dict[str, Any]:
        calls["public"] += 1
        return {
            "truthy": bool(current_principal),
            "equals_none": current_principal == None,  # noqa: E711 - the proxy's documented semantics
            "principal_is_none": get_principal() is None,
            "user": current_principal.user_id if current_principal else None,
        }

    @app.get("/me")
    @scopes_required()
    def me() -> dict[str, Any]:
        calls["me"] += 1
        return {"user": current_principal.user_id, "scopes": sorted(current_principal.scopes)}

    @app.get("/repos")
    @scopes_required("repo:read")
    def repos() -> dict[str, Any]:
        calls["repos"] += 1
        return {"repos": ["a", "b"]}

    @app.get("/admin")
    @scopes_required("admin", "repo:read")
    def admin() -> dict[str, Any]:
        calls["admin"] += 1
        return {"admin": True}

    @app.get("/either")
    @scopes_required("admin", "repo:read", any=True)
    def either() -> dict[str, Any]:
        calls["either"] += 1
        return {"either": True}

    @app.get("/async")
    @scopes_required("repo:read")
    async def async_view() -> dict[str, Any]:
        calls["async"] += 1
        return {"async": current_principal.user_id}

    @app.get("/abort")
    def aborts() -> None:
        abort(401)

    blueprint = Blueprint("projects", __name__, url_prefix="/projects")

    @blueprint.before_request
    def count_blueprint() -> None:
        calls["blueprint_before_request"] += 1

    @blueprint.get("/<name>")
    @scopes_required("projects:read")
    def project(name: str) -> dict[str, Any]:
        calls["project"] += 1
        return {"project": name, "user": current_principal.user_id}

    app.register_blueprint(blueprint)
    return app, calls


@pytest.fixture
def app(auth: PATAuth) -> tuple[webtest.TestApp, Counter[str]]:
    flask_app, calls = build_app(auth)
    return webtest.TestApp(flask_app), calls


def insufficient(scopes: str, which: str = "all of") -> str:
    return (
        f'Bearer realm="{REALM}", error="insufficient_scope", '
        f'error_description="The token needs {which} these scopes: {scopes}", scope="{scopes}"'
    )


# -- the principal -----------------------------------------------------------------
def test_extension_wraps_wsgi_app_and_keeps_its_state(auth: PATAuth) -> None:
    flask_app, _ = build_app(auth)
    state = flask_app.extensions["pat"]
    assert state.auth is auth
    assert isinstance(flask_app.wsgi_app, PATMiddleware)
    assert state.middleware is flask_app.wsgi_app
    with flask_app.app_context():
        assert get_auth() is auth


def test_anonymous_principal_is_falsy_and_equal_to_none(app: tuple[webtest.TestApp, Counter[str]]) -> None:
    client, _ = app
    assert client.get("/public").json == {
        "truthy": False, "equals_none": True, "principal_is_none": True, "user": None,
    }  # fmt: skip


def test_valid_principal_is_truthy(app: tuple[webtest.TestApp, Counter[str]], token: str) -> None:
    client, _ = app
    assert client.get("/public", headers=bearer(token)).json == {
        "truthy": True, "equals_none": False, "principal_is_none": False, "user": "alice",
    }  # fmt: skip


def test_current_principal_outside_a_request_is_falsy() -> None:
    assert not current_principal


# -- scopes_required ---------------------------------------------------------------
def test_scopes_required_passes_a_token_with_the_scopes(
    app: tuple[webtest.TestApp, Counter[str]], token: str, clock: FakeClock
) -> None:
    client, calls = app
    response = client.get("/repos", headers=bearer(token))
    assert response.json == {"repos": ["a", "b"]}
    expiry = (clock.datetime + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert response.headers["PAT-Token-Expiration"] == expiry
    assert client.get("/me", headers=bearer(token)).json == {"user": "alice", "scopes": ["repo:read"]}
    assert calls["repos"] == calls["me"] == 1


def test_scopes_required_without_a_token_is_a_bare_401_despite_error_handlers(
    app: tuple[webtest.TestApp, Counter[str]],
) -> None:
    client, calls = app
    for path in ("/me", "/repos", "/async", "/projects/x"):
        assert_bare_challenge(client.get(path, status=401))
    assert calls["me"] == calls["repos"] == calls["async"] == calls["project"] == 0
    # the app's handlers do reformat the app's own errors
    assert "the app's own error page" in client.get("/abort", status=401).text


def test_missing_scope_is_an_exact_403_despite_error_handlers(
    app: tuple[webtest.TestApp, Counter[str]], token: str
) -> None:
    client, calls = app
    response = client.get("/admin", headers=bearer(token), status=403)
    challenge = insufficient("admin repo:read")
    body = {"error": "insufficient_scope", "error_description": "The token needs all of these scopes: admin repo:read"}
    assert_rejected(response, challenge, body)
    assert "PAT-Token-Expiration" in response.headers  # the token itself was valid
    assert calls["admin"] == 0


def test_any_of_scopes(app: tuple[webtest.TestApp, Counter[str]], auth: PATAuth, token: str) -> None:
    client, calls = app
    assert client.get("/either", headers=bearer(token)).json == {"either": True}
    other = auth.manager.create("bob", "other", ["issues:read"]).token
    response = client.get("/either", headers=bearer(other), status=403)
    assert response.headers["WWW-Authenticate"] == insufficient("admin repo:read", "one of")
    assert calls["either"] == 1


def test_async_view(app: tuple[webtest.TestApp, Counter[str]], auth: PATAuth, token: str) -> None:
    client, calls = app
    assert client.get("/async", headers=bearer(token)).json == {"async": "alice"}
    other = auth.manager.create("bob", "other", ["issues:read"]).token
    response = client.get("/async", headers=bearer(other), status=403)
    assert response.headers["WWW-Authenticate"] == insufficient("repo:read")
    assert calls["async"] == 1


def test_blueprint_routes(app: tuple[webtest.TestApp, Counter[str]], auth: PATAuth, token: str) -> None:
    client, calls = app
    reader = auth.manager.create("carol", "projects", ["projects:read"]).token
    assert client.get("/projects/apollo", headers=bearer(reader)).json == {"project": "apollo", "user": "carol"}
    response = client.get("/projects/apollo", headers=bearer(token), status=403)
    assert response.headers["WWW-Authenticate"] == insufficient("projects:read")
    assert calls["project"] == 1
    assert calls["blueprint_before_request"] == 2  # the decorator, not a hook, refused the second


# -- the middleware answers before any app code ----------------------------------------
@pytest.mark.parametrize("path", ["/public", "/repos", "/async", "/projects/x"])
def test_invalid_token_is_rejected_before_any_app_code(app: tuple[webtest.TestApp, Counter[str]], path: str) -> None:
    client, calls = app
    assert_invalid_token(client.get(path, headers=bearer(generate()[0]), status=401))
    description = "The Bearer credentials carry no token"
    assert_invalid_request(client.get(path, headers={"Authorization": "Bearer"}, status=400), description)
    joined = {"HTTP_AUTHORIZATION": f"Bearer {generate()[0]},Bearer {generate()[0]}"}
    client.get(path, extra_environ=joined, status=400)
    assert sum(calls.values()) == 0


def test_revoked_and_expired_tokens(
    app: tuple[webtest.TestApp, Counter[str]], auth: PATAuth, token: str, clock: FakeClock
) -> None:
    client, calls = app
    assert client.get("/repos", headers=bearer(token)).status_int == 200
    auth.manager.revoke(token[4:16])
    assert_invalid_token(client.get("/repos", headers=bearer(token), status=401))
    short = auth.manager.create("alice", "short", ["repo:read"], expires_in=timedelta(minutes=5)).token
    assert client.get("/repos", headers=bearer(short)).status_int == 200
    clock.advance(timedelta(minutes=5))
    assert_invalid_token(client.get("/repos", headers=bearer(short), status=401))
    assert calls["repos"] == 2 and calls["before_request"] == 2


def test_store_outage_is_503(tmp_path: Path, clock: FakeClock) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    writer = make_auth(volume / "tokens.db", clock)
    token = writer.manager.create("alice", "ci", ["repo:read"]).token
    writer.close()
    auth = make_auth(volume / "tokens.db", clock)
    flask_app, calls = build_app(auth)
    shutil.rmtree(volume)
    response = webtest.TestApp(flask_app).get("/repos", headers=bearer(token), status=503)
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers
    assert response.json["error"] == "temporarily_unavailable"
    assert sum(calls.values()) == 0
    auth.close()


def test_cidr_allowlist_uses_remote_addr(app: tuple[webtest.TestApp, Counter[str]], auth: PATAuth) -> None:
    client, _ = app
    office = auth.manager.create("alice", "office", ["repo:read"], allowed_cidrs=["192.0.2.0/24"]).token
    assert client.get("/repos", headers=bearer(office), extra_environ={"REMOTE_ADDR": "192.0.2.10"}).status_int == 200
    client.get("/repos", headers=bearer(office), extra_environ={"REMOTE_ADDR": "198.51.100.1"}, status=401)


# -- configuration -----------------------------------------------------------------
def test_required_and_exempt_from_config(auth: PATAuth, token: str) -> None:
    flask_app, calls = build_app(auth, PAT_REQUIRED=True, PAT_EXEMPT=["/public"])
    client = webtest.TestApp(flask_app)
    assert client.get("/public").json["user"] is None
    assert_bare_challenge(client.get("/projects/x", status=401))
    assert client.get("/repos", headers=bearer(token)).status_int == 200
    assert calls == Counter({"before_request": 2, "public": 1, "repos": 1})


def test_query_token_and_expiry_header_from_config(auth: PATAuth, token: str) -> None:
    off, _ = build_app(auth)
    assert webtest.TestApp(off).get(f"/public?access_token={token}").json["user"] is None
    on, _ = build_app(auth, PAT_ALLOW_QUERY_TOKEN=True, PAT_EXPIRY_HEADER=None)
    response = webtest.TestApp(on).get(f"/public?access_token={token}")
    assert response.json["user"] == "alice"
    assert "PAT-Token-Expiration" not in response.headers


def test_auth_built_from_config(tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(PAT_REALM="corp", PAT_PREFIX="corp")
    PAT(app)
    assert app.config["PAT_STORE_URL"] == f"sqlite:///{tmp_path}/instance/pat_tokens.db"
    auth = get_auth(app)
    new = auth.manager.create("alice", "ci", ["repo:read"])
    assert new.token.startswith("corp_")
    assert (tmp_path / "instance" / "pat_tokens.db").exists()

    @app.get("/me")
    @scopes_required("admin")
    def me() -> str:
        return "never"

    client = webtest.TestApp(app)
    assert client.get("/me", status=401).headers["WWW-Authenticate"] == 'Bearer realm="corp"'
    assert (
        client.get("/me", headers=bearer(new.token), status=403)
        .headers["WWW-Authenticate"]
        .startswith('Bearer realm="corp", error="insufficient_scope"')
    )
    auth.close()


def test_explicit_store_url(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PAT_STORE_URL"] = f"sqlite:///{tmp_path}/elsewhere.db"
    PAT(app)
    get_auth(app).manager.create("alice", "ci")
    assert (tmp_path / "elsewhere.db").exists()
    get_auth(app).close()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"PAT_REQUIRED": "yes"}, TypeError),
        ({"PAT_ALLOW_QUERY_TOKEN": 1}, TypeError),
        ({"PAT_EXPIRY_HEADER": 5}, TypeError),
        ({"PAT_EXEMPT": ["health"]}, ValueError),
        ({"PAT_STORE_URL": "mysqlish:/nowhere"}, ValueError),
        ({"PAT_PREFIX": "Not A Prefix"}, ValueError),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, config: dict[str, Any], error: type[Exception]) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(config)
    with pytest.raises(error):
        PAT(app)


def test_auth_and_store_config_together_is_an_error(auth: PATAuth) -> None:
    app = Flask(__name__)
    app.config["PAT_STORE_URL"] = "memory://"
    with pytest.raises(ValueError, match="PAT_STORE_URL"):
        PAT(app, auth=auth)


def test_init_twice_is_an_error(auth: PATAuth) -> None:
    app = Flask(__name__)
    pat = PAT(app, auth=auth)
    with pytest.raises(RuntimeError, match="already"):
        pat.init_app(app)


def test_one_extension_many_apps(auth: PATAuth, token: str) -> None:
    pat = PAT(auth=auth)
    first, second = Flask("first"), Flask("second")
    for flask_app in (first, second):
        pat.init_app(flask_app)
        flask_app.add_url_rule("/", "index", scopes_required("repo:read")(lambda: {"user": current_principal.user_id}))
    for flask_app in (first, second):
        assert webtest.TestApp(flask_app).get("/", headers=bearer(token)).json == {"user": "alice"}
    assert pat.auth is auth


def test_scopes_required_behind_the_bare_middleware(auth: PATAuth, token: str) -> None:
    app = Flask(__name__)

    @app.get("/admin")
    @scopes_required("admin")
    def admin() -> str:
        return "never"

    app.wsgi_app = PATMiddleware(app.wsgi_app, auth)  # type: ignore[method-assign]
    client = webtest.TestApp(app)
    assert_bare_challenge(client.get("/admin", status=401))
    assert client.get("/admin", headers=bearer(token), status=403).headers["WWW-Authenticate"] == insufficient("admin")


def test_scopes_required_without_the_extension_fails_loudly() -> None:
    app = Flask(__name__)
    app.testing = True

    @app.get("/")
    @scopes_required("repo:read")
    def index() -> str:
        return "never"

    with pytest.raises(RuntimeError, match="PAT"):
        app.test_client().get("/")
    with app.app_context(), pytest.raises(RuntimeError, match="not initialised"):
        get_auth()


@pytest.mark.parametrize(
    ("scopes", "options", "message"),
    [
        (("has space",), {}, "invalid scope 'has space'"),
        (('quo"te',), {}, "invalid scope"),
        ((), {"any": True}, "needs at least one scope"),
    ],
)
def test_scopes_required_rejects_bad_arguments(scopes: tuple[str, ...], options: dict[str, bool], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scopes_required(*scopes, **options)


class _Repos(MethodView):
    def get(self) -> str:
        return "repos"


def _view() -> str:
    return "view"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (_Repos, "test_flask._Repos: it is a class; list the decorator in the view class's decorators attribute"),
        (staticmethod(_view), "it is a staticmethod object; put @staticmethod above"),
        (classmethod(_view), "it is a classmethod object; put @classmethod above"),
        ("repos", "it is not a function but a str"),
    ],
)
def test_a_misplaced_scopes_required_fails_when_applied(target: Any, message: str) -> None:
    with pytest.raises(TypeError, match=r"^@scopes_required\('repo:read'\) cannot decorate ") as refused:
        scopes_required("repo:read")(target)
    assert message in str(refused.value)


def test_scopes_required_on_a_view_class_through_its_decorators(auth: PATAuth, token: str) -> None:
    class Repos(_Repos):
        decorators = [scopes_required("repo:read")]

    app = Flask(__name__)
    PAT(app, auth=auth)
    app.add_url_rule("/repos", view_func=Repos.as_view("repos"))
    client = webtest.TestApp(app)
    assert_bare_challenge(client.get("/repos", status=401))
    assert client.get("/repos", headers=bearer(token)).text == "repos"


def test_cache_prefix_config_reaches_the_redis_cache(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    app = Flask(__name__)
    app.config.update(
        PAT_STORE_URL=f"sqlite:///{tmp_path / 'f.db'}", PAT_CACHE_URL=redis_url, PAT_CACHE_PREFIX=redis_prefix
    )
    state = PAT().init_app(app)
    try:
        assert state.auth.cache is not None
        assert state.auth.cache.channel == redis_prefix + "invalidate"  # type: ignore[attr-defined]
    finally:
        state.auth.close()


def test_extension_auth_outside_an_app_context(tmp_path: Path) -> None:
    app = Flask(__name__)
    app.config["PAT_STORE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    pat = PAT(app)
    try:
        token = pat.auth.manager.create("alice", "cli").token  # e.g. from a script: no app context
        assert pat.auth.verify(token).user_id == "alice"
    finally:
        pat.auth.close()


def test_revocation_poll_config_key(tmp_path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(PAT_STORE_URL="memory://", PAT_REVOCATION_POLL=2)
    state = PAT().init_app(app)
    assert state.auth.verifier.revocation_poll == 2.0
    state.auth.close()
    off = Flask(__name__, instance_path=str(tmp_path))
    off.config.update(PAT_STORE_URL="memory://", PAT_REVOCATION_POLL=None)
    state = PAT().init_app(off)
    assert state.auth.feed is None
    state.auth.close()
    for bad in (0, "5", float("nan")):
        broken = Flask(__name__, instance_path=str(tmp_path))
        broken.config.update(PAT_STORE_URL="memory://", PAT_REVOCATION_POLL=bad)
        with pytest.raises(ValueError, match="PAT_REVOCATION_POLL"):
            PAT().init_app(broken)
