"""The Flask edge: the ``PAT`` extension, ``current_principal``, ``scopes_required``.

``PAT(app)`` wraps ``app.wsgi_app`` in :class:`~pat_middleware.wsgi.PATMiddleware`
rather than registering a ``before_request`` hook, because

* a bad, expired or revoked token must be rejected before *any* app code runs,
  including the app's and blueprints' own ``before_request`` hooks, and its
  answer must be the exact RFC 6750 one, which error handlers, ``after_request``
  hooks and session handling cannot touch when Flask never runs;
* the principal is then known before any view, for every blueprint, and
  ``scopes_required`` only reads it;
* the same middleware serves any WSGI app: one code path, one set of tests.

Configuration (``app.config``, read by ``init_app``):

=========================  ====================================================
``PAT_STORE_URL``          store URL; ``sqlite:///<instance_path>/pat_tokens.db``
``PAT_CACHE_URL``          optional shared cache: ``redis://``, ``redis+sentinel://``
                           or ``redis+cluster://`` (see ``redis_topology``)
``PAT_CACHE_PREFIX``       Redis key prefix and channel namespace (``"pat:"``);
                           every process of one deployment must use the same
``PAT_REALM``              ``realm`` of the challenges (``"api"``)
``PAT_PREFIX``             token prefix (``"pat"``)
``PAT_REQUIRED``           every path needs a token, except exempt ones (False)
``PAT_EXEMPT``             path prefixes exempt from ``PAT_REQUIRED`` (``()``)
``PAT_EXPIRY_HEADER``      response header with the token's expiry, ``None`` for
                           none (``"PAT-Token-Expiration"``)
``PAT_ALLOW_QUERY_TOKEN``  accept ``?access_token=`` (False)
``PAT_REVOCATION_POLL``    seconds between polls of the store's change feed, the
                           revocation bound without Redis (5); ``None``: no feed
``PAT_REVOKE_UNUSED_AFTER`` tokens unused this long are ``inactive`` (a
                           ``timedelta`` or ``"365d"``; ``None``: no limit)
``PAT_SECURITY_LOG``       keep the security log in the store (True)
``PAT_LOG_RETENTION``      how long log entries are kept (``"90d"``)
=========================  ====================================================

The extension also registers ``flask pat``: the commands of the ``pat``
command (``create``, ``list``, ``revoke``, ``rotate``...) on the app's ``PATAuth``.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import click
from flask import Flask, current_app, request
from flask.cli import with_appcontext
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from pat_middleware.auth import PATAuth
from pat_middleware.cli import PATGroup, register_commands
from pat_middleware.config import oversight_settings
from pat_middleware.core import defaults, limits
from pat_middleware.core.edge import EXPIRY_HEADER
from pat_middleware.core.models import Principal, require
from pat_middleware.core.route_requirement import ResourceOf, receives_the_resource, route_requirement
from pat_middleware.errors import PATError, error_response
from pat_middleware.wsgi import ENVIRON_AUTH_KEY, ENVIRON_KEY, PATMiddleware

__all__ = ["PAT", "PATState", "current_principal", "get_auth", "get_principal", "scopes_required"]

F = TypeVar("F", bound=Callable[..., Any])

#: Config keys that build the ``PATAuth``; meaningless when one is passed in.
_AUTH_KEYS = (
    "PAT_STORE_URL",
    "PAT_CACHE_URL",
    "PAT_CACHE_PREFIX",
    "PAT_REALM",
    "PAT_PREFIX",
    "PAT_REVOCATION_POLL",
    "PAT_REVOKE_UNUSED_AFTER",
    "PAT_SECURITY_LOG",
    "PAT_LOG_RETENTION",
)


@dataclass(frozen=True)
class PATState:
    """What ``init_app`` leaves in ``app.extensions["pat"]``."""

    auth: PATAuth
    middleware: PATMiddleware


class PAT:
    """Personal access tokens for a Flask app: ``PAT(app)`` or ``PAT().init_app(app)``.

    :param auth: a ready :class:`PATAuth` shared by every app this extension
        is initialised on. Without it, each app gets one built from its
        ``PAT_*`` config keys (see the module docstring).
    """

    def __init__(self, app: Flask | None = None, *, auth: PATAuth | None = None) -> None:
        self._auth = auth
        self._app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> PATState:
        """Wrap ``app.wsgi_app``, store the state in ``app.extensions["pat"]``, add ``flask pat``."""
        if "pat" in app.extensions:
            raise RuntimeError("PAT is already initialised on this app")
        config = app.config
        if self._auth is not None and (clash := [k for k in _AUTH_KEYS if k in config]):
            raise ValueError(f"{', '.join(clash)} cannot be set when PAT(auth=...) is given")
        config.setdefault("PAT_REQUIRED", False)
        config.setdefault("PAT_EXEMPT", ())
        config.setdefault("PAT_EXPIRY_HEADER", EXPIRY_HEADER)
        config.setdefault("PAT_ALLOW_QUERY_TOKEN", False)
        options: dict[str, Any] = {
            "required": _flag(config, "PAT_REQUIRED"),
            "exempt": config["PAT_EXEMPT"],
            "allow_query_token": _flag(config, "PAT_ALLOW_QUERY_TOKEN"),
            "expiry_header": _optional_str(config, "PAT_EXPIRY_HEADER"),
        }
        auth = self._auth if self._auth is not None else _auth_from_config(app)
        try:
            middleware = PATMiddleware(app.wsgi_app, auth, **options)
        except (TypeError, ValueError) as exc:  # name the config key, not only the option
            keys = "PAT_REQUIRED, PAT_EXEMPT, PAT_ALLOW_QUERY_TOKEN or PAT_EXPIRY_HEADER"
            raise type(exc)(f"invalid {keys}: {exc}") from None
        cast(Any, app).wsgi_app = middleware  # Flask's documented way to wrap it (mypy reads a method)
        state = PATState(auth, middleware)
        app.extensions["pat"] = state
        app.cli.add_command(pat_commands)
        return state

    @property
    def auth(self) -> PATAuth:
        """The ``PATAuth`` given to the constructor, else that of the app given to
        the constructor, else the current app's."""
        if self._auth is not None:
            return self._auth
        return get_auth(self._app)


def _auth_from_config(app: Flask) -> PATAuth:
    config = app.config
    if "PAT_STORE_URL" not in config:
        os.makedirs(app.instance_path, exist_ok=True)
        config["PAT_STORE_URL"] = "sqlite:///" + os.path.join(app.instance_path, defaults.STORE_FILE)
    config.setdefault("PAT_CACHE_URL", None)
    config.setdefault("PAT_CACHE_PREFIX", defaults.CACHE_PREFIX)
    config.setdefault("PAT_REALM", defaults.REALM)
    config.setdefault("PAT_PREFIX", defaults.TOKEN_PREFIX)
    config.setdefault("PAT_REVOCATION_POLL", defaults.REVOCATION_POLL)
    poll = config["PAT_REVOCATION_POLL"]
    if poll is not None:  # named by its config key
        poll = limits.poll_interval("PAT_REVOCATION_POLL", poll)
    return PATAuth.from_url(
        _optional_str(config, "PAT_STORE_URL") or "",
        _optional_str(config, "PAT_CACHE_URL"),
        cache_prefix=_optional_str(config, "PAT_CACHE_PREFIX") or defaults.CACHE_PREFIX,
        realm=_optional_str(config, "PAT_REALM")
        or defaults.REALM,  # empty: the default, as PAT_REALM in the environment
        prefix=_optional_str(config, "PAT_PREFIX") or "",
        revocation_poll=poll,
        **oversight_settings(config),
    )


def _flag(config: dict[str, Any], key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise TypeError(f"{key} must be True or False, got {type(value).__name__}")
    return value


def _optional_str(config: dict[str, Any], key: str) -> str | None:
    value = config[key]
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string or None, got {type(value).__name__}")
    return value


def get_auth(app: Flask | None = None) -> PATAuth:
    """The ``PATAuth`` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    state = target.extensions.get("pat")
    if state is None:
        raise RuntimeError("PAT is not initialised on this app: call PAT(app) or PAT().init_app(app)")
    return cast(PATState, state).auth


def get_principal() -> Principal | None:
    """The request's :class:`Principal`, or ``None`` when it presented no token."""
    principal: Principal | None = request.environ.get(ENVIRON_KEY)
    return principal


#: The request's :class:`Principal`; when the request is anonymous it proxies
#: ``None``: falsy and equal to ``None`` (but never ``is None``, being a proxy).
#: Test it with ``if current_principal:``, or use :func:`get_principal`.
current_principal = cast(Principal, LocalProxy(get_principal))


def scopes_required(*scopes: str, any: bool = False, resource: ResourceOf = None) -> Callable[[F], F]:
    """Let a view run only for a token with all of ``scopes`` (or one of them, ``any=True``)
    and, with ``resource``, valid for the resource the request is about.

    ``resource`` is the name of a view argument (``"repo"`` for
    ``/repos/<path:repo>``; the view must take it) or a callable taking the
    request and returning the resource id. A token limited to other resources
    gets 403 ``insufficient_scope`` ("not valid for this resource", the id not
    echoed).

    With no scopes, any valid token will do. Works on sync and ``async`` views.
    Without a token: 401 with a bare challenge; lacking a scope: 403
    ``insufficient_scope``. The answer is returned as a response, never raised,
    so the app's error handlers cannot reformat it.

    Mistakes fail here, not at request time: invalid scopes, ``any=True``
    without scopes, a missing ``()`` (``ValueError``/``TypeError``); a
    class or a ``staticmethod`` object instead of a view function
    (``TypeError``). Put it below ``@app.get(...)``: above it, it wraps a
    function Flask never calls.
    """
    required_by = route_requirement("scopes_required", scopes, any, resource)
    required = required_by.scopes
    checks = (receives_the_resource,)

    def denied() -> Response | None:
        environ = request.environ
        auth: PATAuth | None = environ.get(ENVIRON_AUTH_KEY)
        if auth is None:
            raise RuntimeError("the PAT middleware did not run for this request: call PAT(app)")
        principal = environ[ENVIRON_KEY]
        try:
            which = None if principal is None else required_by.resource_id(request, request.view_args)
            require(principal, required, required_by.any_of, which)
        except PATError as exc:
            status, headers, body = error_response(exc, auth.realm)
            return current_app.response_class(body, status=status, headers=headers)
        return None

    def decorate(view: F) -> F:
        required_by.check_target(view, checks, class_hint="list the decorator in the view class's decorators attribute")
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_view(*args: Any, **kwargs: Any) -> Any:
                refusal = denied()
                return refusal if refusal is not None else await view(*args, **kwargs)

            return cast(F, async_view)

        @functools.wraps(view)
        def sync_view(*args: Any, **kwargs: Any) -> Any:
            refusal = denied()
            return refusal if refusal is not None else view(*args, **kwargs)

        return cast(F, sync_view)

    return decorate


# -- flask pat ------------------------------------------------------------------
@click.group("pat", cls=PATGroup)
@with_appcontext
def pat_commands() -> None:
    """Manage personal access tokens in the app's token store."""


# The ``pat`` command's own commands (one implementation), on the app's PATAuth.
register_commands(pat_commands, load_auth=get_auth)
