"""Fine-grained tokens: which resources a token may act on. Pure rules, no I/O.

A token's ``resources`` are ``None`` (every resource its user can reach, the
default) or a tuple of resource ids. A resource id is 1-255 printable ASCII
characters other than space (``acme/web``, ``project:42``); the host app
decides what they name. A granted id ending in ``/*`` or ``:*`` is a prefix
wildcard: ``acme/*`` covers ``acme/web`` and ``acme/web/wiki`` (not ``acme``
itself), as ``admin:*`` grants ``admin:org`` among scopes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

__all__ = [
    "MAX_RESOURCES",
    "MAX_RESOURCE_LENGTH",
    "Resources",
    "covers",
    "is_resource",
    "normalize_resources",
    "validate_resource",
    "within",
]

#: The longest resource id.
MAX_RESOURCE_LENGTH = 255
#: The most resource ids one token may list.
MAX_RESOURCES = 100
#: A token's resources: ``None`` for every resource.
Resources = tuple[str, ...] | None

_RESOURCE_RE = re.compile(rf"[\x21-\x7E]{{1,{MAX_RESOURCE_LENGTH}}}")
_SEPARATORS = "/:"
_SEPARATOR_RE = re.compile("[/:]")


def is_resource(resource: object) -> bool:
    """True when ``resource`` is a well-formed resource id (a wildcard or not)."""
    if not isinstance(resource, str) or not _RESOURCE_RE.fullmatch(resource):
        return False
    star = resource.find("*")
    # A "*" only as the final character, right after a separator and a non-empty prefix.
    return star == -1 or (star == len(resource) - 1 and star >= 2 and resource[-2] in _SEPARATORS)


def validate_resource(resource: object) -> str:
    """``resource`` if it is a valid resource id, else ``ValueError``."""
    if not is_resource(resource):
        raise ValueError(
            f"invalid resource {resource!r}: use 1-{MAX_RESOURCE_LENGTH} printable ASCII characters "
            "without spaces; '*' only as a trailing '/*' or ':*' wildcard after a prefix"
        )
    assert isinstance(resource, str)
    return resource


def normalize_resources(resources: Iterable[str] | None) -> Resources:
    """``None`` (every resource), or the valid ids sorted without duplicates.

    An empty list is refused (``ValueError``): a token for no resource at all
    is a mistake, and ``None`` already means "all". A single string is one id,
    not a list of its characters.
    """
    if resources is None:
        return None
    if isinstance(resources, str):
        resources = [resources]
    result = tuple(sorted({validate_resource(r) for r in resources}))
    if not result:
        raise ValueError("resources must name at least one resource (or be null for every resource)")
    if len(result) > MAX_RESOURCES:
        raise ValueError(f"at most {MAX_RESOURCES} resources")
    return result


def covers(granted: Collection[str] | None, resource: str) -> bool:
    """True when a token granted ``granted`` may act on ``resource``.

    ``None`` covers everything. Otherwise ``resource`` must be listed, or fall
    under a listed prefix wildcard; a malformed ``resource`` is covered by
    nothing. Costs a set lookup per separator in ``resource``, like a scope
    wildcard check (:func:`pat_middleware.core.scopes.satisfies`).
    """
    if granted is None:
        return True
    if resource in granted:
        return True  # granted holds valid ids only
    for match in _SEPARATOR_RE.finditer(resource, 1, len(resource) - 1):
        if resource[: match.end()] + "*" in granted:
            return is_resource(resource)
    return False


def within(granted: Resources | Collection[str], wanted: Resources | Collection[str]) -> bool:
    """True when ``wanted`` asks for no resource ``granted`` does not cover: a
    narrowing (or the same set). ``None`` is every resource; a wanted wildcard
    must itself fall under a granted one."""
    if granted is None:
        return True
    if wanted is None:
        return False
    return all(covers(granted, w) for w in wanted)
