"""What both examples share for their token settings page: the scopes users may
pick, and a demo login form.

The login is for the examples only: a user name and no password. A real app
plugs in its own session authentication as ``current_user``.
"""

from __future__ import annotations

#: Scopes offered on the settings page (scope -> description).
SCOPES = {
    "repo:read": "Read repositories",
    "repo:write": "Create repositories",
    "events:read": "Receive events (WebSocket)",
    "tokens:manage": "Manage tokens through the API",
}

LOGIN_FORM = """<!doctype html><meta charset="utf-8"><title>Demo login</title>
<h1>Demo login (no password: for the example only)</h1>
<form method="post" action="/login"><label for="username">User name</label>
<input id="username" name="username" required autofocus><button type="submit" id="login">Log in</button></form>"""

#: Where the login sends the user.
AFTER_LOGIN = "/settings/tokens"


def user_from_form(value: object) -> str | None:
    """The user name a login form submitted, or None."""
    name = value.strip() if isinstance(value, str) else ""
    return name[:100] or None
