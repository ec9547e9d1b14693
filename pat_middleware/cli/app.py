"""``pat --app module:attr``: the commands act on the app's own ``PATAuth``.

Like ``flask --app`` and ``uvicorn``, the module is imported with the current
directory first on ``sys.path``; ``attr`` (default: ``auth``, then ``app``,
then ``create_app``) is one of

* a :class:`~pat_middleware.auth.PATAuth`;
* a Flask app on which ``PAT(app)`` ran (``app.extensions["pat"]``);
* a function taking no arguments that returns either (called once).

Anything else is a usage error naming what was found and its type. A
Starlette or FastAPI app is refused with a hint: it does not say which
``PATAuth`` its middleware uses, so point ``--app`` at that object instead.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import click

from pat_middleware.auth import PATAuth
from pat_middleware.core.health import exception_line

__all__ = ["AppAuth", "load_app"]

_HINT = "--app / PAT_APP"
#: The names tried, in order, when ``--app`` names a module only.
_DEFAULT_NAMES = ("auth", "app", "create_app")


@dataclass(frozen=True)
class AppAuth:
    """The ``PATAuth`` found, and whether ``pat`` made it (a factory's result: ``pat`` closes it)."""

    auth: PATAuth
    owned: bool


def _fail(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint=_HINT)


def _split(spec: str) -> tuple[str, str | None]:
    module, sep, attr = spec.strip().partition(":")
    if not module or (sep and not attr.isidentifier()):
        raise _fail(f"{spec!r} is not module:attr (like myapp.main:auth or myapp:create_app)")
    return module, attr or None


def _import(module_name: str) -> Any:
    """Import ``module_name`` (a dotted name, or a ``.py`` file path) with the current directory on ``sys.path``."""
    if module_name.endswith(".py") or os.sep in module_name:
        path = os.path.realpath(module_name)
        directory, file = os.path.split(path)
        module_name = file.removesuffix(".py")
        search = directory
    else:
        search = os.getcwd()
    if search not in sys.path:
        sys.path.insert(0, search)
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise _fail(f"cannot import {module_name!r}: no such module (searched {search} and sys.path)") from None
        raise click.ClickException(f"importing {module_name!r} failed: {exception_line(exc)}") from None
    except click.ClickException:
        raise
    except Exception as exc:  # the module's own error: one line, no traceback
        raise click.ClickException(f"importing {module_name!r} failed: {exception_line(exc)}") from None


def _kind(obj: Any) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _from_object(obj: Any, where: str) -> PATAuth | None:
    """The ``PATAuth`` that ``obj`` is or holds (a Flask app with the extension); None if neither."""
    if isinstance(obj, PATAuth):
        return obj
    extensions = getattr(obj, "extensions", None)
    if isinstance(extensions, dict) and hasattr(obj, "wsgi_app"):  # a Flask app
        auth = getattr(extensions.get("pat"), "auth", None)
        if isinstance(auth, PATAuth):
            return auth
        raise _fail(f"{where} is a Flask app ({_kind(obj)}) without the PAT extension: call PAT(app) in it")
    return None


def _refuse(obj: Any, where: str) -> click.BadParameter:
    kind = _kind(obj)
    if kind.startswith(("starlette.", "fastapi.")):
        return _fail(
            f"{where} is a Starlette/FastAPI app ({kind}): it does not say which PATAuth it uses; "
            "point --app at the PATAuth object (e.g. module:auth) or at a function returning it"
        )
    return _fail(
        f"{where} is a {kind}, not a PATAuth, a Flask app with PAT(app), or a function of no arguments returning one"
    )


def _takes_no_arguments(obj: Any) -> bool:
    try:
        inspect.signature(obj).bind()
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins): not ours to call
        return False
    return True


def load_app(spec: str) -> AppAuth:
    """The ``PATAuth`` named by ``spec`` (``module:attr``); click errors (exit 2 for a bad
    ``--app``, 1 when the module fails to import or the factory fails), never a traceback."""
    module_name, attr = _split(spec)
    module = _import(module_name)
    names = (attr,) if attr else _DEFAULT_NAMES
    found = [name for name in names if hasattr(module, name)]
    if not found:
        looked = repr(attr) if attr else "any of " + ", ".join(_DEFAULT_NAMES)
        raise _fail(f"module {module_name!r} has no {looked}")
    where = f"{module_name}:{found[0]}"
    obj = getattr(module, found[0])
    auth = _from_object(obj, where)
    if auth is not None:
        return AppAuth(auth, owned=False)
    if inspect.isclass(obj) or not callable(obj) or not _takes_no_arguments(obj):
        raise _refuse(obj, where)
    try:
        made = obj()
    except click.ClickException:
        raise
    except Exception as exc:
        raise click.ClickException(f"{where}() failed: {exception_line(exc)}") from None
    auth = _from_object(made, f"what {where}() returned")
    if auth is None:
        raise _refuse(made, f"what {where}() returned")
    return AppAuth(auth, owned=True)


def load_callable(spec: str, option: str) -> Callable[..., Any]:
    """The function named by ``spec`` (``module:function``, imported from the current
    directory), for ``option``; click errors, never a traceback."""
    module_name, attr = _split(spec)
    if not attr:
        raise click.BadParameter(f"{spec!r}: use MODULE:FUNCTION", param_hint=option)
    module = _import(module_name)
    found = getattr(module, attr, None)
    if found is None or not callable(found):
        raise click.BadParameter(f"module {module_name!r} has no function {attr!r}", param_hint=option)
    return cast(Callable[..., Any], found)
