"""The WSGI edge: ``PATMiddleware`` for Flask or any WSGI application.

It only translates between WSGI and the core: the ``Authorization`` header
and the query string go to :class:`~pat_middleware.edge.RequestRules`, the
token to :meth:`PATAuth.verify`, and every error to the core's JSON answer
(:func:`~pat_middleware.core.error_response`). The verified principal is in
``environ["pat.principal"]`` (``None`` for an anonymous request), the
``PATAuth`` in ``environ["pat.auth"]``.

Client address: ``REMOTE_ADDR`` is what allowed-CIDR lists are checked
against. Behind a reverse proxy, wrap this middleware *inside* werkzeug's
``ProxyFix`` so ``REMOTE_ADDR`` is corrected before it is read::

    app.wsgi_app = ProxyFix(PATMiddleware(app.wsgi_app, auth), x_for=1)

Duplicate headers: WSGI servers join repeated ``Authorization`` headers
into one value (``"Bearer a,Bearer b"``, ``"Basic x, Bearer t"``); a Bearer
credential after a comma is taken for two headers and rejected as
``invalid_request`` (400), as the ASGI edge does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pat_middleware.edge import EXPIRY_HEADER, RequestRules, expiry_header_name, expiry_value
from pat_middleware.errors import PATError, error_response

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from pat_middleware.auth import PATAuth

__all__ = ["ENVIRON_AUTH_KEY", "ENVIRON_KEY", "PATMiddleware"]

#: Where the middleware puts the request's :class:`Principal` (or ``None``).
ENVIRON_KEY = "pat.principal"
#: Where it puts the ``PATAuth`` that checked the request (for scope checks and their realm).
ENVIRON_AUTH_KEY = "pat.auth"

#: ``expiry_value`` formats with strftime (about 2 µs); a token's expiry never changes.
_expiry_value = functools.lru_cache(maxsize=4096)(expiry_value)


class PATMiddleware:
    """Verify bearer tokens before a WSGI app runs.

    :param app: the WSGI application to protect (for Flask, ``app.wsgi_app``).
    :param auth: the :class:`~pat_middleware.auth.PATAuth` that verifies tokens.
    :param required: answer 401 (bare challenge) to requests without a token,
        except on ``exempt`` paths. Off: such requests pass as anonymous.
    :param exempt: path prefixes that need no token when ``required`` is on
        (``"/health"`` covers ``/health`` and ``/health/...``). A token
        presented on an exempt path is still verified; an invalid one is rejected.
    :param allow_query_token: also accept ``?access_token=`` (RFC 6750 §2.3; off by default).
    :param expiry_header: response header naming the token's expiry
        (``2026-12-31 23:59:59 UTC``), sent only when the token has one;
        ``None`` sends none.

    Every rejection (400, 401, 503) is answered before ``app`` is called.
    """

    def __init__(
        self,
        app: WSGIApplication,
        auth: PATAuth,
        *,
        required: bool = False,
        exempt: Iterable[str] | str = (),
        allow_query_token: bool = False,
        expiry_header: str | None = EXPIRY_HEADER,
    ) -> None:
        self.app = app
        self.auth = auth
        self.rules = RequestRules(required=required, exempt=exempt, allow_query_token=allow_query_token)
        self.expiry_header = expiry_header_name(expiry_header)
        self._token = self.rules.token  # bound once: the hot path skips two attribute lookups
        self._verify = auth.verify
        self._cached_bearer = auth.verifier.cached_bearer

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        header = environ.get("HTTP_AUTHORIZATION")
        client_ip = environ.get("REMOTE_ADDR")
        allow_query = self.rules.allow_query
        try:
            principal = None
            if header is not None and not allow_query:
                principal = self._cached_bearer(header, client_ip)  # the hot path
            if principal is None:
                token = self._token(
                    () if header is None else (header,),
                    environ.get("QUERY_STRING", "") if allow_query else "",
                )
                if token is None:
                    self.rules.check_anonymous(_path(environ))
                else:
                    principal = self._verify(token, client_ip=client_ip)
        except PATError as exc:
            return self._reject(exc, start_response)
        environ[ENVIRON_KEY] = principal
        environ[ENVIRON_AUTH_KEY] = self.auth
        if principal is None or principal.expires_at is None or self.expiry_header is None:
            return self.app(environ, start_response)
        header = (self.expiry_header, _expiry_value(principal.expires_at))

        def start_with_expiry(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None, /
        ) -> Callable[[bytes], object]:
            headers.append(header)
            return start_response(status, headers, exc_info)

        return self.app(environ, start_with_expiry)

    def _reject(self, exc: PATError, start_response: Callable[..., Any]) -> list[bytes]:
        """Answer ``exc`` with the core's JSON body, status and challenge."""
        status, headers, body = error_response(exc, self.auth.realm)
        headers.append(("Content-Length", str(len(body))))
        start_response(_status_line(status), headers)
        return [body]


def _path(environ: WSGIEnvironment) -> str:
    """``PATH_INFO`` as the app routes it: WSGI carries the raw bytes as latin-1 (PEP 3333)."""
    raw: str = environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


@functools.cache
def _status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"
