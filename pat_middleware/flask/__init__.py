"""Flask: the extension (``PAT``), the route decorator and the management blueprints.

.. code-block:: python

    from pat_middleware.flask import PAT, scopes_required, token_blueprint
"""

from pat_middleware.flask.blueprints import (
    CurrentUser,
    IsAdmin,
    admin_blueprint,
    health_blueprint,
    settings_blueprint,
    token_blueprint,
)
from pat_middleware.flask.extension import PAT, PATState, current_principal, get_auth, get_principal, scopes_required

__all__ = [
    "PAT",
    "CurrentUser",
    "IsAdmin",
    "PATState",
    "admin_blueprint",
    "current_principal",
    "get_auth",
    "get_principal",
    "health_blueprint",
    "scopes_required",
    "settings_blueprint",
    "token_blueprint",
]
