"""Fine-grained tokens: which resources a token may act on. Pure rules, no I/O.

A token's ``resources`` are ``None`` (every resource its user can reach, the
default) or a tuple of resource ids. A resource id is 1-255 printable ASCII
characters other than space (``acme/web``, ``project:42``); the host app
decides what they name. A granted id ending in ``/*`` or ``:*`` is a prefix
wildcard: ``acme/*`` covers ``acme/web`` and ``acme/web/wiki`` (not ``acme``
itself), as ``admin:*`` grants ``admin:org`` among scopes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = [
    "MAX_RESOURCES",
    "MAX_RESOURCE_LENGTH",
    "Resources",
    "covers",
    "is_resource",
    "normalize_resources",
    "validate_resource",
    "wildcard_prefixes",
    "within",
]

#: The longest resource id.
MAX_RESOURCE_LENGTH = 255
#: The most resource ids one token may list.
MAX_RESOURCES = 100
#: A token's resources: ``None`` for every resource.
Resources = tuple[str, ...] | None

_SEPARATORS = "/:"


def is_resource(resource: object) -> bool:
    """True when ``resource`` is a well-formed resource id (a wildcard or not)."""
    if (
        not isinstance(resource, str)
        or not 0 < len(resource) <= MAX_RESOURCE_LENGTH
        or not resource.isascii()
        or not resource.isprintable()  # for ASCII: no control characters
        or " " in resource
    ):
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


def wildcard_prefixes(granted: Iterable[str]) -> tuple[str, ...]:
    """The prefixes of the wildcards in ``granted`` (``acme/*`` gives ``acme/``)."""
    return tuple(g[:-1] for g in granted if g.endswith("*"))


def covers(granted: Collection[str] | None, resource: str, prefixes: tuple[str, ...] | None = None) -> bool:
    """True when a token granted ``granted`` may act on ``resource``.

    ``None`` covers everything. Otherwise ``resource`` must be listed, or fall
    under a listed prefix wildcard (with at least one character after the
    prefix); a malformed ``resource`` is covered by nothing. ``prefixes``:
    :func:`wildcard_prefixes` of ``granted``, when the caller keeps them (the
    hot path: a set lookup, then one ``str.startswith`` over the prefixes).
    """
    if granted is None or resource in granted:
        return True  # granted holds valid ids only
    if prefixes is None:
        prefixes = wildcard_prefixes(granted)
    if not prefixes or not resource.startswith(prefixes):
        return False
    for prefix in prefixes:
        if len(resource) > len(prefix) and resource.startswith(prefix):
            # is_resource, inlined for the hot path (a "*" is rare: the full check then)
            return (
                len(resource) <= MAX_RESOURCE_LENGTH
                and resource.isascii()
                and resource.isprintable()
                and " " not in resource
                and ("*" not in resource or is_resource(resource))
            )
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
