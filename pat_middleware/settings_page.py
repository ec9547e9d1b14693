"""The token settings page: server-rendered HTML, no build step, one implementation.

Like GitHub's and GitLab's token settings: a user lists their tokens (with
last use), creates one (name, scopes from a list, expiry), copies it once,
renames, rotates and revokes them. The Starlette and Flask mounts turn their
request into an :class:`~pat_middleware.api.ApiRequest` and run
:meth:`SettingsPage.handle` (a flow) with their driver; the rules are the
API's (:mod:`pat_middleware.api`).

Safety:

* forms carry a synchronizer CSRF token kept in the host app's session
  (:func:`session_csrf_token`), compared in constant time;
* a new token is shown only in the answer to the POST that made it (no
  redirect carries it, nothing puts it in a URL); answers are ``no-store``;
* a strict Content-Security-Policy with a per-answer nonce; every value is
  HTML-escaped.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from string import Template
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from .api import MANAGE_SCOPE, MAX_BODY, ApiError, ApiRequest, ApiResponse, RotateArgs, TokenAPI, acting_user
from .bodies import CreateForm, PageForm, RenameForm, TokenForm
from .core import Flow
from .errors import AuthenticationRequired, PATError, StoreUnavailable, TokenNotFound
from .models import NewToken, TokenRecord
from .policy import Policy
from .shapes import parse_form

if TYPE_CHECKING:
    from .auth import PATAuth

__all__ = ["CSRF_SESSION_KEY", "SettingsPage", "View", "page_reply", "render_page", "session_csrf_token"]

#: Session key of the page's CSRF token.
CSRF_SESSION_KEY = "pat_csrf"
#: Expiry choices offered (days), trimmed to the policy's maximum.
EXPIRY_CHOICES = (7, 30, 60, 90, 365)
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
    """Everything one rendering of the page shows."""

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
    expiry_choices: Sequence[int] = EXPIRY_CHOICES
    allow_never: bool = False
    title: str = "Personal access tokens"


_LAYOUT = Template(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>$title</title>
<style nonce="$nonce">
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2328}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.45rem;border-bottom:1px solid #d0d7de;
vertical-align:top}
.muted{color:#59636e;font-size:.9em} .scope{font-family:ui-monospace,monospace;font-size:.85em;background:#eff2f5;
padding:0 .3em;border-radius:4px;margin-right:.2em}
.state-active{color:#1a7f37} .state-expired{color:#9a6700} .state-revoked{color:#cf222e}
.box{padding:.8rem 1rem;border-radius:6px;margin:1rem 0} .notice{background:#ddf4ff;border:1px solid #54aeff}
.error{background:#ffebe9;border:1px solid #ff8182} .new{background:#dafbe1;border:1px solid #4ac26b}
code#new-token{display:block;font-size:1rem;word-break:break-all;user-select:all;background:#fff;padding:.5rem;
margin:.5rem 0;border:1px solid #d0d7de;border-radius:6px}
form.inline{display:inline} button{cursor:pointer} button.danger{color:#cf222e}
label{display:block;margin:.6rem 0 .2rem;font-weight:600} fieldset{border:1px solid #d0d7de;border-radius:6px}
fieldset label{display:inline;font-weight:normal} input[type=text],textarea{width:100%;max-width:30rem}
details{display:inline-block}
</style>
</head>
<body>
<header><h1>$title</h1>$who</header>
<main>
$body
</main>
<script nonce="$nonce">
document.querySelectorAll("form[data-confirm]").forEach(function (form) {
  form.addEventListener("submit", function (event) {
    if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
  });
});
var copy = document.getElementById("copy-token");
if (copy) {
  copy.addEventListener("click", function () {
    var text = document.getElementById("new-token").textContent;
    navigator.clipboard.writeText(text).then(
      function () { copy.textContent = "Copied"; },
      function () { copy.textContent = "Select the token and copy it"; }
    );
  });
}
</script>
</body>
</html>
"""
)


def _h(value: object) -> str:
    return escape(str(value), quote=True)


def _when(value: datetime | None, never: str) -> str:
    if value is None:
        return never
    return f'<time datetime="{_h(value.isoformat())}">{_h(value.strftime("%Y-%m-%d %H:%M UTC"))}</time>'


def _hidden(view: View, action: str, token_id: str | None = None) -> str:
    fields = [("csrf_token", view.csrf_token or ""), ("action", action)]
    if token_id is not None:
        fields.append(("token_id", token_id))
    return "".join(f'<input type="hidden" name="{n}" value="{_h(v)}">' for n, v in fields)


def _row(view: View, record: TokenRecord) -> str:
    assert view.now is not None
    state = record.state(view.now)
    scopes = "".join(f'<span class="scope">{_h(s)}</span>' for s in record.scopes) or '<span class="muted">none</span>'
    used = _when(record.last_used_at, "never")
    if record.last_used_ips:
        used += f'<br><span class="muted">from {_h(", ".join(record.last_used_ips))}</span>'
    actions = ""
    if state == "active":
        actions += (
            f'<details><summary>Rename</summary><form method="post" action="{_h(view.page_url)}">'
            f'{_hidden(view, "rename", record.id)}<input type="text" name="name" value="{_h(record.name)}" '
            f'required aria-label="New name"> <button type="submit">Save</button></form></details> '
            f'<form class="inline" method="post" action="{_h(view.page_url)}" '
            f'data-confirm="{_h(f"Rotate {record.name!r}? The current token stops working now.")}">'
            f'{_hidden(view, "rotate", record.id)}<button type="submit" name="rotate">Rotate</button></form> '
        )
    if state != "revoked":
        actions += (
            f'<form class="inline" method="post" action="{_h(view.page_url)}" '
            f'data-confirm="{_h(f"Revoke {record.name!r}? Anything using it will stop working.")}">'
            f'{_hidden(view, "revoke", record.id)}<button type="submit" class="danger" name="revoke">Revoke</button>'
            "</form>"
        )
    description = f'<br><span class="muted">{_h(record.description)}</span>' if record.description else ""
    return (
        f'<tr data-token-id="{_h(record.id)}" data-state="{state}">'
        f'<td><strong class="token-name">{_h(record.name)}</strong>{description}'
        f'<br><span class="muted">id {_h(record.id)}</span></td>'
        f"<td>{scopes}</td><td>{_when(record.expires_at, 'never')}</td><td>{used}</td>"
        f'<td class="state-{state}">{state}</td><td>{actions}</td></tr>'
    )


def _tokens_section(view: View) -> str:
    if view.records is None:
        return ""
    if not view.records:
        rows = '<tr><td colspan="6" class="muted">You have no tokens yet.</td></tr>'
    else:
        rows = "".join(_row(view, r) for r in view.records)
    return (
        '<section id="tokens"><h2>Your tokens</h2><table><thead><tr><th>Name</th><th>Scopes</th>'
        f"<th>Expires</th><th>Last used</th><th>State</th><th></th></tr></thead><tbody>{rows}</tbody>"
        "</table></section>"
    )


def _create_section(view: View) -> str:
    form = view.form
    chosen = set(form.scope)
    if view.scopes:
        boxes = "".join(
            f'<div><input type="checkbox" name="scope" id="scope-{i}" value="{_h(scope)}"'
            f'{" checked" if scope in chosen else ""}> <label for="scope-{i}"><span class="scope">{_h(scope)}</span> '
            f'<span class="muted">{_h(text)}</span></label></div>'
            for i, (scope, text) in enumerate(view.scopes.items())
        )
        scopes = f"<fieldset><legend>Scopes</legend>{boxes}</fieldset>"
    else:
        scopes = (
            '<label for="scopes">Scopes <span class="muted">(separated by spaces)</span></label>'
            f'<input type="text" id="scopes" name="scopes" value="{_h(form.scopes)}">'
        )
    expiration = form.expiration
    options = [(str(days), f"{days} days") for days in view.expiry_choices]
    options.append(("custom", "Custom date"))
    if view.allow_never:
        options.append(("never", "No expiration"))
    select = "".join(
        f'<option value="{v}"{" selected" if v == expiration else ""}>{_h(text)}</option>' for v, text in options
    )
    return (
        f'<section id="create"><h2>Generate a new token</h2><form method="post" action="{_h(view.page_url)}">'
        f"{_hidden(view, 'create')}"
        '<label for="name">Name</label>'
        f'<input type="text" id="name" name="name" required value="{_h(form.name)}" '
        'placeholder="What is this token for?">'
        '<label for="description">Description <span class="muted">(optional)</span></label>'
        f'<textarea id="description" name="description" rows="2">{_h(form.description)}</textarea>'
        f'<label for="expiration">Expiration</label><select id="expiration" name="expiration">{select}</select> '
        f'<input type="date" name="expires_on" aria-label="Expiry date" value="{_h(form.expires_on)}">'
        f"{scopes}"
        '<p><button type="submit" id="generate">Generate token</button></p></form></section>'
    )


def _new_token_section(view: View) -> str:
    if view.new_token is None:
        return ""
    record = view.new_token.record
    return (
        f'<section class="box new" id="new-token-box"><strong>Token {_h(record.name)} {_h(view.made)}.'
        "</strong> Copy it now: you will not be able to see it again."
        f'<code id="new-token" data-token-id="{_h(record.id)}">{_h(view.new_token.token)}</code>'
        '<button type="button" id="copy-token">Copy</button></section>'
    )


def render_page(view: View, nonce: str) -> str:
    """The page's HTML (every value escaped); ``nonce`` marks its inline style and script.

    Shared by every framework mount.
    """
    parts = []
    if view.notice:
        parts.append(f'<p class="box notice" role="status">{_h(view.notice)}</p>')
    if view.error:
        parts.append(f'<p class="box error" role="alert">{_h(view.error)}</p>')
    if view.user is not None:
        parts += [_new_token_section(view), _tokens_section(view)]
        if view.records is not None:
            parts.append(_create_section(view))
    who = f'<p class="muted">Signed in as <strong id="user">{_h(view.user)}</strong></p>' if view.user else ""
    return _LAYOUT.substitute(title=_h(view.title), nonce=_h(nonce), who=who, body="\n".join(parts))


def page_reply(status: int, view: View, headers: Sequence[tuple[str, str]] = ()) -> ApiResponse:
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
    return ApiResponse(status, [*base, *headers], render_page(view, nonce).encode())


# -- the page's rules ----------------------------------------------------------------
def _available_scopes(scopes: Sequence[str] | Mapping[str, str] | None, policy: Policy) -> dict[str, str]:
    if scopes is None:
        allowed = policy.allowed_scopes
        scopes = sorted(allowed) if allowed is not None and not callable(allowed) else ()
    if isinstance(scopes, Mapping):
        return dict(scopes)
    return dict.fromkeys(scopes, "")


class SettingsPage:
    """The settings page's behaviour over a :class:`~pat_middleware.api.TokenAPI`.

    :param available_scopes: scopes offered as checkboxes (a list, or a mapping
        scope -> description); default: the policy's ``allowed_scopes`` when it
        is a plain collection, else a free-text field.
    :param login_url: where an anonymous visitor is sent (``?next=`` the page);
        without it they get a 401 page.
    """

    def __init__(
        self,
        api: TokenAPI,
        *,
        available_scopes: Sequence[str] | Mapping[str, str] | None = None,
        login_url: str | None = None,
        title: str = "Personal access tokens",
    ) -> None:
        self.api = api
        self.flows = api.flows
        policy = self.flows.policy
        self.scopes = _available_scopes(available_scopes, policy)
        self.login_url = login_url
        self.title = title
        longest = policy.max_lifetime.days if policy.max_lifetime is not None else None
        self.expiry_choices = tuple(d for d in EXPIRY_CHOICES if longest is None or d <= longest)
        self.allow_never = not policy.require_expiry and policy.max_lifetime is None

    @classmethod
    def for_auth(cls, auth: PATAuth, *, manage_scope: str = MANAGE_SCOPE, **options: Any) -> SettingsPage:
        """The page over a :class:`~pat_middleware.auth.PATAuth`."""
        return cls(TokenAPI.for_auth(auth, manage_scope=manage_scope), **options)

    def _view(self, request: ApiRequest, user: str | None, **values: Any) -> View:
        return View(
            user=user,
            csrf_token=request.csrf_token,
            page_url=request.root,
            scopes=self.scopes,
            expiry_choices=self.expiry_choices,
            allow_never=self.allow_never,
            title=self.title,
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
            return page_reply(401, self._view(request, None, error="Log in to manage your tokens."))
        except PATError as exc:
            return page_reply(exc.status_code, self._view(request, None, error=exc.description))
        if request.method in ("GET", "HEAD"):
            notice = _DONE.get(next(iter(request.query_values("done")), ""))
            return (yield from self._render(request, user, 200, notice=notice))
        if request.method != "POST":
            error = self._view(request, user, error="Use GET or POST.")
            return page_reply(405, error, [("Allow", "GET, HEAD, POST")])
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
            return page_reply(503, view, [("Retry-After", str(exc.retry_after))])
        view = self._view(request, user, records=_ordered(records, self.api.now()), now=self.api.now(), **values)
        return page_reply(status, view, headers)


def _ordered(records: Sequence[TokenRecord], now: datetime) -> list[TokenRecord]:
    """Active tokens first (newest first), then expired, then revoked."""
    rank = {"active": 0, "expired": 1, "revoked": 2}
    return sorted(records, key=lambda r: (rank[r.state(now)], -r.created_at.timestamp()))
