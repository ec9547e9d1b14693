"""The token settings page: server-rendered HTML, no build step, one implementation.

Like GitHub's and GitLab's token settings: a user lists their tokens (with
last use), creates one (name, scopes from a list, expiry), copies it once,
renames, rotates and revokes them, and reads their security log (the latest
events of their tokens, from where, and by whom when not themselves). The Starlette and Flask mounts turn their
request into an :class:`~pat_middleware.management.api.ApiRequest` and run
:meth:`SettingsPage.handle` (a flow) with their driver; the rules are the
API's (:mod:`pat_middleware.management.api`).

Safety:

* forms carry a synchronizer CSRF token kept in the host app's session
  (:func:`session_csrf_token`), compared in constant time;
* a new token is shown only in the answer to the POST that made it (no
  redirect carries it, nothing puts it in a URL); answers are ``no-store``;
* a strict Content-Security-Policy with a per-answer nonce; the HTML comes
  from Jinja2 templates (``pat_middleware/templates/pat_middleware/``) with
  autoescape always on, so every value is HTML-escaped, in a host app's own
  template too (:func:`page_environment`).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from jinja2 import BaseLoader, ChoiceLoader, Environment, PackageLoader, StrictUndefined, Template

from pat_middleware.core.audit import LogEntry
from pat_middleware.core.flow import Flow
from pat_middleware.core.models import NewToken, TokenRecord
from pat_middleware.core.policy import Policy
from pat_middleware.errors import AuthenticationRequired, PATError, StoreUnavailable, TokenNotFound
from pat_middleware.management.api import (
    MANAGE_SCOPE,
    MAX_BODY,
    ApiError,
    ApiRequest,
    ApiResponse,
    RotateArgs,
    TokenAPI,
    acting_user,
)
from pat_middleware.management.bodies import CreateForm, PageForm, RenameForm, TokenForm
from pat_middleware.management.shapes import parse_form

if TYPE_CHECKING:
    from pat_middleware.auth import PATAuth

__all__ = [
    "CSRF_SESSION_KEY",
    "DEFAULT_TEMPLATE",
    "SettingsPage",
    "View",
    "page_environment",
    "page_reply",
    "render_page",
    "session_csrf_token",
]

#: Session key of the page's CSRF token.
CSRF_SESSION_KEY = "pat_csrf"
#: Expiry choices offered (days), trimmed to the policy's maximum.
EXPIRY_CHOICES = (7, 30, 60, 90, 365)
#: How many of the latest security log entries the page shows.
LOG_ENTRIES = 20
_DONE = {"renamed": "Token renamed.", "revoked": "Token revoked."}


def session_csrf_token(session: MutableMapping[str, Any]) -> str:
    """The session's CSRF token, created on first use (the host's session keeps it)."""
    token = session.get(CSRF_SESSION_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = session[CSRF_SESSION_KEY] = secrets.token_urlsafe(32)
    return token


# -- the view ----------------------------------------------------------------------
@dataclass
class View:
    """Everything one rendering of the page shows: the templates' ``view``."""

    user: str | None
    csrf_token: str | None
    page_url: str
    records: Sequence[TokenRecord] | None = None
    now: datetime | None = None
    new_token: NewToken | None = None
    made: str = "created"
    notice: str | None = None
    error: str | None = None
    form: CreateForm = field(default_factory=CreateForm)
    scopes: Mapping[str, str] = field(default_factory=dict)
    #: Resources the user may limit a token to (id -> label); empty: a free-text field.
    resources: Mapping[str, str] = field(default_factory=dict)
    #: Above this many resources the picker gets a filter box.
    filter_from: int = 10
    expiry_choices: Sequence[int] = EXPIRY_CHOICES
    allow_never: bool = False
    title: str = "Personal access tokens"
    #: The policy's ``revoke_unused_after``: tokens unused this long show as ``inactive``.
    unused_after: timedelta | None = None
    #: The user's latest security log entries, newest first (``None``: not shown).
    log: Sequence[LogEntry] | None = None
    #: Why the log is missing (the store could not answer).
    log_error: str | None = None

    @property
    def token_names(self) -> dict[str, str]:
        """Token id -> name, for the log's rows."""
        return {record.id: record.name for record in self.records or ()}


#: The page's template (a package file, ``pat_middleware/templates/``).
DEFAULT_TEMPLATE = "pat_middleware/settings_page.html"


def page_environment(loader: BaseLoader | None = None) -> Environment:
    """The Jinja2 environment the page renders with: autoescape always on; ``loader``
    (the host app's templates) is searched before the package's, so a host template
    can replace the page or ``{% extends "pat_middleware/settings_page.html" %}`` it."""
    ours = PackageLoader("pat_middleware.management", "templates")
    return Environment(
        loader=ChoiceLoader([loader, ours]) if loader is not None else ours,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=StrictUndefined,
        auto_reload=False,
    )


@cache
def _default_template() -> Template:
    return page_environment().get_template(DEFAULT_TEMPLATE)


def render_page(view: View, nonce: str, template: Template | None = None) -> str:
    """The page's HTML (autoescaped); ``nonce`` marks its inline style and script.

    ``template``: default the package's ``settings_page.html``. Shared by every framework mount.
    """
    return (template or _default_template()).render(view=view, nonce=nonce)


def page_reply(
    status: int, view: View, headers: Sequence[tuple[str, str]] = (), template: Template | None = None
) -> ApiResponse:
    """The rendered page with its security headers: a CSP allowing only this answer's nonce."""
    nonce = secrets.token_urlsafe(16)
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    base = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Content-Security-Policy", csp),
        ("X-Frame-Options", "DENY"),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
    ]
    return ApiResponse(status, [*base, *headers], render_page(view, nonce, template).encode())


# -- the page's rules ----------------------------------------------------------------
def _available_scopes(scopes: Sequence[str] | Mapping[str, str] | None, policy: Policy) -> dict[str, str]:
    if scopes is None:
        allowed = policy.allowed_scopes
        scopes = sorted(allowed) if allowed is not None and not callable(allowed) else ()
    if isinstance(scopes, Mapping):
        return dict(scopes)
    return dict.fromkeys(scopes, "")


AvailableResources = Callable[[str], Iterable[str] | Mapping[str, str] | None]


def _resources_for(user: str, available: AvailableResources | None, policy: Policy) -> dict[str, str]:
    """What the picker offers ``user``: the host's ``available_resources(user)`` (ids, or
    id -> label), else the policy's ``allowed_resources(user)``; nothing: a free-text field."""
    found = available(user) if available is not None else None
    if found is None and policy.allowed_resources is not None:
        found = policy.allowed_resources(user)
    if found is None:
        return {}
    return dict(found) if isinstance(found, Mapping) else dict.fromkeys(found, "")


class SettingsPage:
    """The settings page's behaviour over a :class:`~pat_middleware.management.api.TokenAPI`.

    :param available_scopes: scopes offered as checkboxes (a list, or a mapping
        scope -> description); default: the policy's ``allowed_scopes`` when it
        is a plain collection, else a free-text field.
    :param available_resources: a callable ``user_id -> resource ids`` (or a
        mapping id -> label) offered as the "Only selected resources" picker,
        with a filter box when there are many; default: the policy's
        ``allowed_resources``; neither: a free-text field.
    :param login_url: where an anonymous visitor is sent (``?next=`` the page);
        without it they get a 401 page.
    :param template: the Jinja2 template to render (default
        ``pat_middleware/settings_page.html``); with ``loader``, the host app's
        templates, searched before the package's (a template of its own, or
        one that extends the package's to theme it: docs/management.md).
    :param log_entries: how many of the user's latest security log entries to show (0: no log section).
    """

    def __init__(
        self,
        api: TokenAPI,
        *,
        available_scopes: Sequence[str] | Mapping[str, str] | None = None,
        available_resources: AvailableResources | None = None,
        login_url: str | None = None,
        title: str = "Personal access tokens",
        template: str = DEFAULT_TEMPLATE,
        loader: BaseLoader | None = None,
        log_entries: int = LOG_ENTRIES,
    ) -> None:
        if not isinstance(log_entries, int) or not 0 <= log_entries <= 1000:
            raise ValueError("log_entries must be from 0 to 1000")
        self.log_entries = log_entries
        self.api = api
        self.environment = page_environment(loader)
        self.template_name = template
        self._template: Template | None = None
        self.flows = api.flows
        policy = self.flows.policy
        self.scopes = _available_scopes(available_scopes, policy)
        self.available_resources = available_resources
        self.login_url = login_url
        self.title = title
        longest = policy.max_lifetime.days if policy.max_lifetime is not None else None
        self.expiry_choices = tuple(d for d in EXPIRY_CHOICES if longest is None or d <= longest)
        self.allow_never = not policy.require_expiry and policy.max_lifetime is None

    @classmethod
    def for_auth(cls, auth: PATAuth, *, manage_scope: str = MANAGE_SCOPE, **options: Any) -> SettingsPage:
        """The page over a :class:`~pat_middleware.auth.PATAuth`."""
        return cls(TokenAPI.for_auth(auth, manage_scope=manage_scope), **options)

    def _reply(self, status: int, view: View, headers: Sequence[tuple[str, str]] = ()) -> ApiResponse:
        if self._template is None:  # loaded on first use (the host's loader may be filled after setup)
            self._template = self.environment.get_template(self.template_name)
        return page_reply(status, view, headers, self._template)

    def _view(self, request: ApiRequest, user: str | None, **values: Any) -> View:
        return View(
            user=user,
            csrf_token=request.csrf_token,
            page_url=request.root,
            scopes=self.scopes,
            resources=_resources_for(user, self.available_resources, self.flows.policy) if user is not None else {},
            expiry_choices=self.expiry_choices,
            allow_never=self.allow_never,
            title=self.title,
            unused_after=self.flows.policy.revoke_unused_after,
            **values,
        )

    def handle(self, request: ApiRequest) -> Flow[ApiResponse]:
        """Answer a GET (the page) or a POST (a form); a flow for the sync or async driver."""
        try:
            user = acting_user(request, self.api.manage_scope)
        except AuthenticationRequired:
            if self.login_url:
                target = f"{self.login_url}?next={quote(request.root, safe='/')}"
                return ApiResponse(303, [("Location", target), ("Cache-Control", "no-store")])
            return self._reply(401, self._view(request, None, error="Log in to manage your tokens."))
        except PATError as exc:
            return self._reply(exc.status_code, self._view(request, None, error=exc.description))
        if request.method in ("GET", "HEAD"):
            notice = _DONE.get(next(iter(request.query_values("done")), ""))
            return (yield from self._render(request, user, 200, notice=notice))
        if request.method != "POST":
            error = self._view(request, user, error="Use GET or POST.")
            return self._reply(405, error, [("Allow", "GET, HEAD, POST")])
        form = CreateForm()
        try:
            sent, fields = self._form(request)
            if sent.action == "create":
                form = parse_form(CreateForm, fields)
            return (yield from self._act(request, user, sent.action, fields, form))
        except PATError as exc:
            extra = [("Retry-After", str(exc.retry_after))] if isinstance(exc, StoreUnavailable) else []
            message = "No such token." if isinstance(exc, TokenNotFound) else exc.description
            return (yield from self._render(request, user, exc.status_code, extra, error=message, form=form))

    def _form(self, request: ApiRequest) -> tuple[PageForm, dict[str, list[str]]]:
        """The posted form (its CSRF token checked) and all its fields."""
        if len(request.body) > MAX_BODY:
            raise ApiError(413, "payload_too_large", "The form is too large.")
        media_type = (request.content_type or "").partition(";")[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            raise ApiError(415, "unsupported_media_type", "Submit the page's form.")
        try:
            pairs = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, max_num_fields=500)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "invalid_form", "The form could not be read.") from None
        form: dict[str, list[str]] = {}
        for key, value in pairs:
            form.setdefault(key, []).append(value)
        sent = parse_form(PageForm, form)
        expected = request.csrf_token
        if not expected or not hmac.compare_digest(sent.csrf_token.encode(), expected.encode()):
            raise ApiError(403, "csrf", "The form expired or did not come from this page; reload and try again.")
        return sent, form

    def _act(
        self, request: ApiRequest, user: str, action: str, fields: dict[str, list[str]], form: CreateForm
    ) -> Flow[ApiResponse]:
        flows, caller = self.flows, request.principal
        if action == "create":
            new = yield from form.args().run(flows, user, caller)
            return (yield from self._render(request, user, 200, new_token=new))
        if action == "rotate":
            token_id = parse_form(TokenForm, fields).token_id
            new = yield from RotateArgs().run(flows, token_id, user, caller)
            return (yield from self._render(request, user, 200, new_token=new, made="rotated"))
        if action == "rename":
            rename = parse_form(RenameForm, fields)
            yield from rename.args().run(flows, rename.token_id, user, caller)
            return self._redirect(request, "renamed")
        if action == "revoke":
            yield from flows.revoke(parse_form(TokenForm, fields).token_id, user)
            return self._redirect(request, "revoked")
        raise ApiError(400, "invalid_form", "Unknown action.")

    def _redirect(self, request: ApiRequest, done: str) -> ApiResponse:
        return ApiResponse(303, [("Location", f"{request.root}?done={done}"), ("Cache-Control", "no-store")])

    def _render(
        self,
        request: ApiRequest,
        user: str,
        status: int,
        headers: Sequence[tuple[str, str]] = (),
        **values: Any,
    ) -> Flow[ApiResponse]:
        try:
            records = yield from self.flows.list(user, "all")
        except StoreUnavailable as exc:
            view = self._view(request, user, error=exc.description)
            return self._reply(503, view, [("Retry-After", str(exc.retry_after))])
        log: list[LogEntry] | None = None
        log_error = None
        if self.log_entries:
            try:
                log = (yield from self.flows.security_log(user_id=user, limit=self.log_entries)).entries
            except StoreUnavailable:  # the tokens still show: the log is not worth a 503
                log_error = "The security log is unavailable right now."
        now = self.api.now()
        ordered = _ordered(records, now, self.flows.policy.revoke_unused_after)
        view = self._view(request, user, records=ordered, now=now, log=log, log_error=log_error, **values)
        return self._reply(status, view, headers)


def _ordered(records: Sequence[TokenRecord], now: datetime, unused_after: timedelta | None) -> list[TokenRecord]:
    """Active tokens first (newest first), then inactive, expired, revoked."""
    rank = {"active": 0, "rotated": 1, "inactive": 2, "expired": 3, "revoked": 4}
    return sorted(records, key=lambda r: (rank[r.state(now, unused_after)], -r.created_at.timestamp()))
