"""The rules, with no I/O: the token format, scopes and policy, the verification
and management rules written as flows, and the two drivers that run them.

Everything that talks to a network or a disk is elsewhere (:mod:`pat_middleware.stores`,
:mod:`pat_middleware.cache`, :mod:`pat_middleware.redis`); the framework edges
(:mod:`pat_middleware.starlette`, :mod:`pat_middleware.flask`, ...) call in here.
See ``docs/architecture.md``.
"""
