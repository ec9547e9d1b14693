"""The flow protocol: how the I/O-free rules ask for I/O.

Work that needs I/O is written as a *flow*: a generator that yields
:class:`Call` effects and receives their results. An effect names a method of
one of the three I/O protocols (``Store``, ``SharedCache``, ``Hasher``) by the
method itself, never by a string: ``record = yield from perform(Store.get,
key_id)`` is checked by mypy against ``Store.get``'s signature (its arguments,
and ``TokenRecord | None`` as the result). A sync driver and an async driver
(:mod:`pat_middleware.drivers`) run the same flows, so every rule is written
once, as in h11 or httpx's auth flows (``Auth.auth_flow: Generator[Request,
Response, None]``).

A flow that is called but not driven (no ``yield from``, no driver) does
nothing; ``tests/test_flow_protocol.py`` checks the package's sources for that.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any, Concatenate, Generic, NamedTuple, ParamSpec, TypeVar

from pat_middleware.cache import SharedCache
from pat_middleware.hashing import Hasher
from pat_middleware.stores.base import Store

__all__ = ["PROTOCOLS", "Call", "Flow", "effect_of", "perform"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

#: No keyword arguments: a plain dict (``**`` of a mapping proxy costs 4x more), never mutated.
NO_KEYWORDS: Mapping[str, Any] = {}

#: The I/O protocols whose methods are effects: a driver holds one target for each.
PROTOCOLS: tuple[type, ...] = (Store, SharedCache, Hasher)


class Call(NamedTuple, Generic[R]):
    """One effect a flow yields: ``method(target, *args, **kwargs)``, whose result is an ``R``.

    ``method`` is a method of one of :data:`PROTOCOLS`, taken from the protocol
    class (``Store.get``); the driver runs it on its own target for that
    protocol (the sync store, or the async one). Build it with :func:`perform`,
    which types the arguments and the result.
    """

    method: Callable[..., R]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = NO_KEYWORDS


#: A flow yields effects, receives their results and returns a T.
Flow = Generator[Call[Any], Any, T]


def perform(method: Callable[Concatenate[Any, P], R], /, *args: P.args, **kwargs: P.kwargs) -> Flow[R]:
    """Yield the effect ``method(target, *args, **kwargs)`` and return its result.

    ``method`` is a protocol's method (``Store.get``, ``SharedCache.lookup``,
    ``Hasher.verify``): mypy checks the arguments against it and types the result.
    """
    result: R = yield Call(method, args, kwargs or NO_KEYWORDS)
    return result


def _effects() -> dict[Callable[..., Any], tuple[type, str]]:
    effects: dict[Callable[..., Any], tuple[type, str]] = {}
    for protocol in PROTOCOLS:
        for name, member in vars(protocol).items():
            if not name.startswith("_") and callable(member):
                effects[member] = (protocol, name)
    return effects


_EFFECTS = _effects()


def effect_of(method: Callable[..., Any]) -> tuple[type, str]:
    """The protocol ``method`` belongs to, and its name there: ``(Store, "get")``.

    ``TypeError`` for anything that is not a method of one of :data:`PROTOCOLS`.
    """
    try:
        return _EFFECTS[method]
    except (KeyError, TypeError):
        names = ", ".join(p.__name__ for p in PROTOCOLS)
        raise TypeError(f"{method!r} is not a method of {names}") from None
