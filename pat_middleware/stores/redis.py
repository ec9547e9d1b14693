"""``RedisStore``: Redis as the token store itself, for apps with no SQL.

Durability: Redis keeps data in memory. For tokens to survive a restart the
server must persist them: turn on the append-only file (``appendonly yes``,
ideally ``appendfsync everysec`` or ``always``) and do not set a
``maxmemory-policy`` that evicts keys (use ``noeviction``). Without that a
restart or an eviction silently loses (or, worse, un-revokes nothing but
forgets) tokens. The store does not support Redis Cluster: its scripts
touch keys of several users and families.

Key layout (``prefix`` defaults to ``pat:store:``; timestamps are integer
microseconds since the epoch, exact in Lua numbers and sorted-set scores)::

    <prefix>t:<id>          hash: one token record (fields in FIELDS)
    <prefix>u:<user_id>     sorted set: the user's token ids, score created_at
    <prefix>f:<family_id>   sorted set: the family's token ids, score created_at
    <prefix>exp             sorted set: ids with an expiry, score expires_at
    <prefix>rev             sorted set: revoked ids, score revoked_at
    <prefix>n:<user_id>     hash: live name -> id (a live name is unique per user)
    <prefix>chg             sorted set: changed ids, score the Redis server's TIME
                            (microseconds) of their last validity change
    <prefix>ids, act        sorted sets: every id by created_at, by last activity
                            (search; see :mod:`pat_middleware.redis.admin`, which
                            also lists the security log's and the notices' keys)

``chg`` is the revocation feed: the scripts that revoke or change a validity
field stamp it with ``TIME`` in the same script, and drop stamps older than
:data:`~pat_middleware.stores.base.CHANGE_RETENTION` as they go; purge
leaves stamps to age out. The keys share no hash tag (see above: no Cluster).

Every write that touches more than one key (insert, update, revoke,
revoke_family, revoke_user, rotate, touch, purge, append_log, prune_log's
batches, claim_notice) is one Lua script, so it
is atomic and a crash cannot leave a token half-revoked (nor a token revoked
while a predecessor in its grace period is not: revoke covers both). Scripts check
every precondition before their first write (Redis does not roll back a
script that fails half-way). The scripts are ``pat_middleware/redis/lua/store_*.lua``;
purge and the read-only purgeable share one selection (``store_purge_select.lua``).
Plans (keys, scripts, reply parsers) are built by :class:`StorePlans`,
whose methods have the :class:`~pat_middleware.stores.base.Store` signatures;
:class:`RedisStore` and :class:`AsyncRedisStore` are made from them (each
method sends the plan of the same name through one executor, sync or
awaited; an operation of several round trips, such as search, is a generator
of plans that both drive), so no store method is written twice. A connection failure or timeout
raises :class:`~pat_middleware.errors.StoreUnavailable`; clients made here
never retry, because a write whose reply was lost must not be applied twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import redis
import redis.asyncio

from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.errors import NameTaken, StoreUnavailable
from pat_middleware.redis.admin import AdminPlans
from pat_middleware.redis.executor import (
    Clients,
    Executor,
    Plan,
    Script,
    async_method,
    async_steps,
    is_unavailable,
    lua,
    sync_method,
    sync_steps,
)
from pat_middleware.redis.records import (
    FIELDS,
    decode_record,
    encode_record,
    encode_time,
    encode_value,
    moment,
    parse_records,
    text,
)
from pat_middleware.stores._common import check_changes, normalize_record
from pat_middleware.stores.base import VALIDITY_FIELDS

__all__ = ["AsyncRedisStore", "RedisStore", "StorePlans"]


# -- Lua: pat_middleware/redis/lua/store_*.lua, each after the helpers in store_common.lua --
def _script(name: str) -> Script:
    return lua("store_common", name)


_LIST = _script("store_list")
_LIST_EXPIRING = _script("store_list_expiring")
_INSERT = _script("store_insert")
_UPDATE = _script("store_update")
_REVOKE = _script("store_revoke")
_REVOKE_SET = _script("store_revoke_set")
_ROTATE = _script("store_rotate")
_TOUCH = _script("store_touch")
_PURGE = lua("store_common", "store_purge_select", "store_purge")
_PURGEABLE = lua("store_common", "store_purge_select", "store_purgeable")


def _ids(replies: list[Any]) -> list[str]:
    return [text(i) for i in replies[0]]


def _changes(replies: list[Any]) -> list[tuple[str, datetime]]:
    """``ZRANGEBYSCORE ... WITHSCORES``: flat (RESP2) or pairs (RESP3, parsed by redis-py)."""
    reply = replies[0]
    pairs = zip(reply[::2], reply[1::2], strict=True) if reply and not isinstance(reply[0], list | tuple) else reply
    return [(text(member), moment(round(float(text(score))))) for member, score in pairs]


class StorePlans(AdminPlans):
    """Every store operation as a :class:`~pat_middleware.redis.executor.Plan`, with the
    :class:`~pat_middleware.stores.base.Store` method's signature. Pure."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _run(self, script: Script, *args: str | int) -> tuple[tuple[Any, ...], ...]:
        return (script.call((), (self.prefix, *args)),)

    def get(self, token_id: str) -> Plan[TokenRecord | None]:
        """The record with that id, or ``None`` (one HMGET)."""
        command = ("HMGET", f"{self.prefix}t:{token_id}", *FIELDS)
        return Plan((command,), lambda replies: decode_record(replies[0]))

    def list_user(self, user_id: str) -> Plan[list[TokenRecord]]:
        """All of a user's records, oldest first (ties by id)."""
        return Plan(self._run(_LIST, f"{self.prefix}u:{user_id}"), parse_records, (_LIST,))

    def list_family(self, family_id: str) -> Plan[list[TokenRecord]]:
        """All records of a rotation family, oldest first (ties by id)."""
        return Plan(self._run(_LIST, f"{self.prefix}f:{family_id}"), parse_records, (_LIST,))

    def list_expiring(self, start: datetime, end: datetime) -> Plan[list[TokenRecord]]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``; soonest
        expiry first (ties by id)."""
        args = (encode_time(start), encode_time(end))
        return Plan(self._run(_LIST_EXPIRING, *args), parse_records, (_LIST_EXPIRING,))

    def insert(self, record: TokenRecord) -> Plan[None]:
        """Add a record; ``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        record = normalize_record(record)

        def parse(replies: list[Any]) -> None:
            _raise_for(text(replies[0]), record)

        return Plan(self._run(_INSERT, *encode_record(record)), parse, (_INSERT,))

    def update(self, token_id: str, changes: Mapping[str, Any]) -> Plan[TokenRecord | None]:
        """Apply ``changes`` to a live record; ``None`` if it is unknown or not live."""
        clean = check_changes(changes)
        pairs = [x for field, value in clean.items() for x in (field, encode_value(field, value))]

        def parse(replies: list[Any]) -> TokenRecord | None:
            status = text(replies[0][0])
            if status == "name_taken":
                raise NameTaken(clean["name"])
            return decode_record(replies[0][1]) if status == "ok" else None

        stamp = "0" if VALIDITY_FIELDS.isdisjoint(clean) else "1"
        return Plan(self._run(_UPDATE, token_id, stamp, *pairs), parse, (_UPDATE,))

    def changes_since(self, since: datetime) -> Plan[list[tuple[str, datetime]]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``
        (one ``ZRANGEBYSCORE`` of the change set)."""
        command = ("ZRANGEBYSCORE", f"{self.prefix}chg", encode_time(utc(since)), "+inf", "WITHSCORES")
        return Plan((command,), _changes)

    def revoke(self, token_id: str, at: datetime) -> Plan[list[str]]:
        """Revoke the record and its predecessors revocable at ``at`` (one script);
        return the ids that changed, oldest first."""
        plan = self._run(_REVOKE, token_id, encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE,))

    def revoke_family(self, family_id: str, at: datetime) -> Plan[list[str]]:
        """Revoke the family's records revocable at ``at``; return their ids, oldest first."""
        plan = self._run(_REVOKE_SET, f"{self.prefix}f:{family_id}", encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE_SET,))

    def revoke_user(self, user_id: str, at: datetime) -> Plan[list[str]]:
        """Revoke the user's records revocable at ``at``; return their ids, oldest first."""
        plan = self._run(_REVOKE_SET, f"{self.prefix}u:{user_id}", encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE_SET,))

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> Plan[bool]:
        """Revoke the live record ``old_id`` at ``revoke_at`` and insert ``new``, atomically;
        False (nothing written) when the old record is missing or not live."""
        new = normalize_record(new)

        def parse(replies: list[Any]) -> bool:
            status = text(replies[0])
            if status == "missing":
                return False
            _raise_for(status, new)
            return True

        args = (old_id, encode_time(utc(revoke_at)), *encode_record(new))
        return Plan(self._run(_ROTATE, *args), parse, (_ROTATE,))

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> Plan[bool]:
        """Record a use at ``at`` from ``ip`` (last_used_at and the IP list of an existing
        record); True when ``ip`` was not in the list before."""
        args = (token_id, encode_time(utc(at)), "0" if ip is None else "1", ip or "", keep_ips)
        return Plan(self._run(_TOUCH, *args), lambda replies: int(replies[0]) == 2, (_TOUCH,))

    def purge(self, before: datetime) -> Plan[list[str]]:
        """Delete records revoked or expired at or before ``before``; return their ids, oldest first."""
        return Plan(self._run(_PURGE, encode_time(utc(before))), _purged, (_PURGE,))

    def purgeable(self, before: datetime) -> Plan[list[str]]:
        """The ids :meth:`purge` would delete now, oldest first: the same selection
        (``store_purge_select.lua``) in a read-only script."""
        return Plan(self._run(_PURGEABLE, encode_time(utc(before))), _purged, (_PURGEABLE,))


def _purged(replies: list[Any]) -> list[str]:
    """The ids of the purge scripts' ``{id, created_at}`` pairs, oldest first."""
    pairs = sorted((int(text(created)), text(i)) for i, created in replies[0])
    return [i for _, i in pairs]


def _raise_for(status: str, record: TokenRecord) -> None:
    if status == "name_taken":
        raise NameTaken(record.name)
    if status == "duplicate":
        raise ValueError(f"a token with id {record.id!r} already exists")


class _Unavailable:
    """Executor health for a store: connection failures become ``StoreUnavailable``."""

    def blocked(self) -> bool:
        return False  # the store is the source of truth: always try it

    def ok(self) -> None:
        pass

    def failed(self, exc: Exception) -> BaseException:
        if is_unavailable(exc):
            return StoreUnavailable()
        return exc


class RedisStore:
    """A :class:`~pat_middleware.stores.base.Store` in Redis (see the module docstring).

    ``url`` is used for whichever of ``client`` and ``async_client`` is not
    given; clients passed in are not closed by :meth:`close`.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "pat:store:",
        socket_timeout: float = 2.0,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        self.plans = StorePlans(prefix)
        self.clients = Clients(url, socket_timeout, client, async_client)
        #: Sends the plans, for this store and its async twin.
        self.executor = Executor(lambda: self.clients.sync, self.clients.asyncio, _Unavailable())
        self._async: AsyncRedisStore | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "pat:store:", socket_timeout: float = 2.0) -> RedisStore:
        """A store on the Redis at ``url``."""
        return cls(url, prefix=prefix, socket_timeout=socket_timeout)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.plans.prefix!r})"

    @property
    def async_store(self) -> AsyncRedisStore:
        """The :class:`~pat_middleware.stores.base.AsyncStore` view (same keys)."""
        if self._async is None:
            self._async = AsyncRedisStore(self.plans, self.clients, self.executor)
        return self._async

    get = sync_method(StorePlans.get)
    list_user = sync_method(StorePlans.list_user)
    list_family = sync_method(StorePlans.list_family)
    list_expiring = sync_method(StorePlans.list_expiring)
    insert = sync_method(StorePlans.insert)
    update = sync_method(StorePlans.update)
    revoke = sync_method(StorePlans.revoke)
    revoke_family = sync_method(StorePlans.revoke_family)
    revoke_user = sync_method(StorePlans.revoke_user)
    rotate = sync_method(StorePlans.rotate)
    changes_since = sync_method(StorePlans.changes_since)
    touch = sync_method(StorePlans.touch)
    purge = sync_method(StorePlans.purge)
    purgeable = sync_method(StorePlans.purgeable)
    search = sync_steps(StorePlans.search)
    append_log = sync_method(StorePlans.append_log)
    read_log = sync_steps(StorePlans.read_log)
    prune_log = sync_steps(StorePlans.prune_log)
    claim_notice = sync_method(StorePlans.claim_notice)

    def close(self) -> None:
        """Close the sync client (when this store made it)."""
        self.clients.close_sync()


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore`: the same plans and executor, awaited."""

    def __init__(self, plans: StorePlans, clients: Clients, executor: Executor | None = None) -> None:
        self.plans = plans
        self._clients = clients
        self.executor = executor or Executor(lambda: clients.sync, clients.asyncio, _Unavailable())

    def __repr__(self) -> str:
        return f"AsyncRedisStore(prefix={self.plans.prefix!r})"

    get = async_method(StorePlans.get)
    list_user = async_method(StorePlans.list_user)
    list_family = async_method(StorePlans.list_family)
    list_expiring = async_method(StorePlans.list_expiring)
    insert = async_method(StorePlans.insert)
    update = async_method(StorePlans.update)
    revoke = async_method(StorePlans.revoke)
    revoke_family = async_method(StorePlans.revoke_family)
    revoke_user = async_method(StorePlans.revoke_user)
    rotate = async_method(StorePlans.rotate)
    changes_since = async_method(StorePlans.changes_since)
    touch = async_method(StorePlans.touch)
    purge = async_method(StorePlans.purge)
    purgeable = async_method(StorePlans.purgeable)
    search = async_steps(StorePlans.search)
    append_log = async_method(StorePlans.append_log)
    read_log = async_steps(StorePlans.read_log)
    prune_log = async_steps(StorePlans.prune_log)
    claim_notice = async_method(StorePlans.claim_notice)

    async def close(self) -> None:
        """Close the async client of the running loop (when the store made it)."""
        await self._clients.close_async()
