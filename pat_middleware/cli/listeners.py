"""Who hears the CLI's invalidations: ``PUBSUB NUMSUB`` on the cache's channel.

A revocation made with the wrong cache prefix is saved in the store, deletes
nothing the app cached, and is published on a channel nobody listens to: the
app's workers keep trusting their cached entries (until the store's change feed
tells them, or, with the feed off, until the entries expire). So after a command
that invalidated tokens, the CLI asks Redis how many clients subscribe to the
channel it published on, and warns when none does, naming the channels of this
kind that do have listeners (the app's prefix is usually among them).

This asks Redis itself (one ``PUBSUB NUMSUB``, summed over the nodes of a
Cluster) rather than reading the count ``PUBLISH`` returned, which the cache
does not expose. Any failure to ask is silent: the warning is a hint, the
command's outcome is the store's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from pat_middleware.auth import PATAuth
from pat_middleware.cli.output import printable_text

#: Channels with listeners named in the warning, at most.
MAX_CHANNELS_SHOWN = 5
_INVALIDATED_KEY = "pat_middleware.invalidated"


def invalidated(ctx: click.Context | None = None) -> None:
    """Note that the running command sent invalidations (checked when it ends)."""
    (ctx or click.get_current_context()).find_root().meta[_INVALIDATED_KEY] = True


def sent_invalidations(ctx: click.Context) -> bool:
    return bool(ctx.find_root().meta.get(_INVALIDATED_KEY))


@dataclass(frozen=True)
class Listeners:
    """Subscribers of the CLI's channel (the CLI's own subscription left out), the cache
    prefix the channel's name implies, and the other invalidation channels that have some."""

    channel: str
    prefix: str
    count: int
    elsewhere: tuple[str, ...]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def listeners(auth: PATAuth) -> Listeners | None:
    """What Redis says of the listeners of ``auth``'s invalidation channel; None when
    ``auth`` has no Redis cache or Redis could not be asked."""
    try:
        from pat_middleware.cache.redis import RedisCache
    except ImportError:
        return None
    cache = auth.cache
    if not isinstance(cache, RedisCache):
        return None
    channel = cache.channel
    try:
        client = cache.clients.sync
        everywhere: dict[str, Any] = {"target_nodes": client.ALL_NODES} if cache.clients.topology.cluster else {}
        reply = client.pubsub_numsub(channel, **everywhere)
        count = sum(int(n) for _, n in reply)
        others = client.pubsub_channels("*invalidate", **everywhere)
    except Exception:  # a hint only: never fail the command for it
        return None
    if cache.subscribed:
        count -= 1  # this process's own listener (after a `verify`)
    elsewhere = tuple(sorted({_text(name) for name in others} - {channel}))
    return Listeners(channel, channel.removesuffix("invalidate"), max(count, 0), elsewhere)


def warn_if_unheard(auth: PATAuth) -> None:
    """After invalidations: warn on stderr when no process listens on the channel."""
    found = listeners(auth)
    if found is None or found.count > 0:
        return
    shown = ", ".join(repr(printable_text(name)) for name in found.elsewhere[:MAX_CHANNELS_SHOWN])
    more = len(found.elsewhere) - MAX_CHANNELS_SHOWN
    verifier = auth.verifier
    click.echo(
        f"Warning: no process listens on the invalidation channel {found.channel!r} (cache prefix "
        f"{found.prefix!r}): the change is saved in the store, but no app heard it now.\n"
        "Apps on another cache prefix keep their cached entries until the store's change feed tells them "
        "(within their revocation_poll, 5 s by default) or, with the feed off, until the entries expire "
        f"(up to shared_ttl + subscribed_ttl = {verifier.shared_ttl:g} s + {verifier.subscribed_ttl:g} s).\n"
        "Give the CLI the app's settings: --app MODULE:ATTR, or --cache-prefix / PAT_CACHE_PREFIX."
        + (f"\nChannels with listeners: {shown}" + (f" and {more} more" if more > 0 else "") if shown else ""),
        err=True,
    )
