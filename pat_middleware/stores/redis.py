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

``chg`` is the revocation feed: the scripts that revoke or change a validity
field stamp it with ``TIME`` in the same script, and drop stamps older than
:data:`~pat_middleware.stores.base.CHANGE_RETENTION` as they go; purge
leaves stamps to age out. The keys share no hash tag (see above: no Cluster).

Every write that touches more than one key (insert, update, revoke,
revoke_family, revoke_user, rotate, touch, purge) is one Lua script, so it
is atomic and a crash cannot leave a token half-revoked (nor a token revoked
while a predecessor in its grace period is not: revoke covers both). Scripts check
every precondition before their first write (Redis does not roll back a
script that fails half-way). Plans (keys, scripts, reply parsers) are built
once by :class:`StorePlans`; :class:`RedisStore` and
:class:`AsyncRedisStore` only execute them. A connection failure or timeout
raises :class:`~pat_middleware.errors.StoreUnavailable`; clients made here
never retry, because a write whose reply was lost must not be applied twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.asyncio

from ..errors import NameTaken, StoreUnavailable
from ..models import TokenRecord, utc
from ..redis_exec import (
    AsyncExecutor,
    Clients,
    Plan,
    Script,
    SyncExecutor,
    is_unavailable,
)
from ._common import check_changes, normalize_record
from .base import CHANGE_RETENTION, VALIDITY_FIELDS

__all__ = ["AsyncRedisStore", "RedisStore", "StorePlans"]

#: Hash fields of a token record, in the order scripts return them.
FIELDS = (
    "id",
    "user_id",
    "name",
    "hash",
    "scopes",
    "description",
    "created_at",
    "expires_at",
    "last_used_at",
    "last_used_ips",
    "revoked_at",
    "family_id",
    "rotated_from",
    "allowed_cidrs",
)
_TIME_FIELDS = frozenset({"created_at", "expires_at", "last_used_at", "revoked_at"})
_LIST_FIELDS = frozenset({"scopes", "last_used_ips", "allowed_cidrs"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# -- Lua ------------------------------------------------------------------------
# ARGV[1] is always the key prefix. Helpers shared by every script:
_LUA_FIELDS = "local FIELDS = {" + ", ".join(f"'{f}'" for f in FIELDS) + "}"
_LUA_COMMON = (
    _LUA_FIELDS
    + f"\nlocal RETENTION = {int(CHANGE_RETENTION.total_seconds())}"
    + """
local P = ARGV[1]
local function tkey(id) return P .. 't:' .. id end
local function read(id) return redis.call('HMGET', tkey(id), unpack(FIELDS)) end
local function record_from(offset)
  local r = {}
  for i, f in ipairs(FIELDS) do r[f] = ARGV[offset + i - 1] end
  return r
end
-- The feed: chg[id] := the server's TIME in microseconds (digits joined as text, exact),
-- read once per script; stamps older than the retention are dropped on the way.
local NOW
local function stamp(id)
  if not NOW then
    local t = redis.call('TIME')
    local us = string.format('%06d', tonumber(t[2]))
    NOW = t[1] .. us
    redis.call('ZREMRANGEBYSCORE', P .. 'chg', '-inf', '(' .. (tonumber(t[1]) - RETENTION) .. us)
  end
  redis.call('ZADD', P .. 'chg', NOW, id)
end
local function release_name(user, name, id)
  local k = P .. 'n:' .. user
  if redis.call('HGET', k, name) == id then redis.call('HDEL', k, name) end
end
-- revoked_at := at when the record is revocable at `at`; true if it changed.
local function revoke_one(id, at)
  local k = tkey(id)
  local v = redis.call('HMGET', k, 'user_id', 'name', 'revoked_at')
  if not v[1] then return false end
  if v[3] ~= '' and tonumber(v[3]) <= tonumber(at) then return false end
  redis.call('HSET', k, 'revoked_at', at)
  redis.call('ZADD', P .. 'rev', at, id)
  if v[3] == '' then release_name(v[1], v[2], id) end
  stamp(id)
  return true
end
-- Why `r` cannot be inserted (nil if it can); a live name held by except_id is free.
local function insert_error(r, except_id)
  if redis.call('EXISTS', tkey(r.id)) == 1 then return 'duplicate' end
  if r.revoked_at == '' then
    local owner = redis.call('HGET', P .. 'n:' .. r.user_id, r.name)
    if owner and owner ~= except_id then return 'name_taken' end
  end
  return nil
end
local function insert_write(r)
  local args = {}
  for _, f in ipairs(FIELDS) do
    args[#args + 1] = f
    args[#args + 1] = r[f]
  end
  redis.call('HSET', tkey(r.id), unpack(args))
  redis.call('ZADD', P .. 'u:' .. r.user_id, r.created_at, r.id)
  redis.call('ZADD', P .. 'f:' .. r.family_id, r.created_at, r.id)
  if r.expires_at ~= '' then redis.call('ZADD', P .. 'exp', r.expires_at, r.id) end
  if r.revoked_at == '' then
    redis.call('HSET', P .. 'n:' .. r.user_id, r.name, r.id)
  else
    redis.call('ZADD', P .. 'rev', r.revoked_at, r.id)
  end
end
"""
)


def _script(body: str) -> Script:
    return Script(_LUA_COMMON + body)


_LIST = _script(
    """
-- ARGV[2]: a sorted set of ids. Their records, in score order.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2], 0, -1)) do out[#out + 1] = read(id) end
return out
"""
)

_LIST_EXPIRING = _script(
    """
-- ARGV[2], ARGV[3]: start, end. start < expires_at <= end, revocable at start.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '(' .. ARGV[2], ARGV[3])) do
  local rv = redis.call('HGET', tkey(id), 'revoked_at')
  if rv == '' or (rv and tonumber(rv) > tonumber(ARGV[2])) then out[#out + 1] = read(id) end
end
return out
"""
)

_INSERT = _script(
    """
-- ARGV[2..]: the record's fields in FIELDS order.
local r = record_from(2)
local err = insert_error(r, nil)
if err then return err end
insert_write(r)
return 'ok'
"""
)

_UPDATE = _script(
    """
-- ARGV[2]: id; ARGV[3]: '1' to stamp the change (a validity field); ARGV[4..]: field, value pairs.
local id = ARGV[2]
local k = tkey(id)
local v = redis.call('HMGET', k, 'user_id', 'name', 'revoked_at')
if not v[1] or v[3] ~= '' then return {'missing'} end
local changes, name, expires = {}, nil, nil
for i = 4, #ARGV, 2 do
  changes[#changes + 1] = ARGV[i]
  changes[#changes + 1] = ARGV[i + 1]
  if ARGV[i] == 'name' then name = ARGV[i + 1] end
  if ARGV[i] == 'expires_at' then expires = ARGV[i + 1] end
end
local names = P .. 'n:' .. v[1]
local renamed = name and name ~= v[2]
if renamed and redis.call('HEXISTS', names, name) == 1 then return {'name_taken'} end
if #changes > 0 then redis.call('HSET', k, unpack(changes)) end
if renamed then
  release_name(v[1], v[2], id)
  redis.call('HSET', names, name, id)
end
if expires == '' then redis.call('ZREM', P .. 'exp', id) end
if expires and expires ~= '' then redis.call('ZADD', P .. 'exp', expires, id) end
if ARGV[3] == '1' then stamp(id) end
return {'ok', read(id)}
"""
)

_REVOKE = _script(
    """
-- ARGV[2]: id, ARGV[3]: at. Revoke the record and its predecessors (stores.base):
-- the records of its family on its rotated_from chain or created before it.
-- Returns the ids that changed, oldest first.
local id, at = ARGV[2], ARGV[3]
local v = redis.call('HMGET', tkey(id), 'family_id', 'created_at', 'rotated_from')
if not v[1] then return {} end
local chain = {[id] = true}
local prev = v[3]
while prev and prev ~= '' and not chain[prev] do
  chain[prev] = true
  prev = redis.call('HGET', tkey(prev), 'rotated_from')
end
local created = tonumber(v[2])
local out = {}
local family = redis.call('ZRANGE', P .. 'f:' .. v[1], 0, -1, 'WITHSCORES')
for i = 1, #family, 2 do
  local other = family[i]
  if (chain[other] or tonumber(family[i + 1]) < created) and revoke_one(other, at) then
    out[#out + 1] = other
  end
end
return out
"""
)

_REVOKE_SET = _script(
    """
-- ARGV[2]: a sorted set of ids (a user's, a family's), ARGV[3]: at.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2], 0, -1)) do
  if revoke_one(id, ARGV[3]) then out[#out + 1] = id end
end
return out
"""
)

_ROTATE = _script(
    """
-- ARGV[2]: old id, ARGV[3]: revoke_at, ARGV[4..]: the new record.
local old = ARGV[2]
local rv = redis.call('HGET', tkey(old), 'revoked_at')
if rv ~= '' then return 'missing' end
local r = record_from(4)
local err = insert_error(r, old)
if err then return err end
revoke_one(old, ARGV[3])
insert_write(r)
return 'ok'
"""
)

_TOUCH = _script(
    """
-- ARGV[2]: id, ARGV[3]: at, ARGV[4]: '1' if an ip is given, ARGV[5]: ip, ARGV[6]: keep.
-- The IP list rule is stores._common.merge_ips: ip first, no duplicates, at most keep.
local k = tkey(ARGV[2])
local current = redis.call('HGET', k, 'last_used_ips')
if not current then return 0 end
local has_ip, ip = ARGV[4] == '1', ARGV[5]
local ips = {}
if has_ip then ips[1] = ip end
for _, x in ipairs(cjson.decode(current)) do
  if not (has_ip and x == ip) then ips[#ips + 1] = x end
end
local kept = {}
for i = 1, math.min(tonumber(ARGV[6]), #ips) do kept[i] = ips[i] end
local encoded = '[]'
if #kept > 0 then encoded = cjson.encode(kept) end
redis.call('HSET', k, 'last_used_at', ARGV[3], 'last_used_ips', encoded)
return 1
"""
)

_PURGE = _script(
    """
-- ARGV[2]: before. Delete records revoked or expired at or before it.
local seen, ids = {}, {}
for _, index in ipairs({P .. 'rev', P .. 'exp'}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[2])) do
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
  end
end
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HMGET', tkey(id), 'user_id', 'name', 'revoked_at', 'family_id', 'created_at')
  if v[1] then
    redis.call('DEL', tkey(id))
    redis.call('ZREM', P .. 'u:' .. v[1], id)
    redis.call('ZREM', P .. 'f:' .. v[4], id)
    if v[3] == '' then release_name(v[1], v[2], id) end
    out[#out + 1] = {id, v[5]}
  end
  redis.call('ZREM', P .. 'exp', id)
  redis.call('ZREM', P .. 'rev', id)
end
return out
"""
)


# -- encoding -------------------------------------------------------------------
def _encode_time(value: datetime | None) -> str:
    return "" if value is None else str((value - _EPOCH) // _MICROSECOND)


def _decode_time(value: str) -> datetime | None:
    return None if value == "" else _EPOCH + int(value) * _MICROSECOND


def _encode_value(field: str, value: Any) -> str:
    if field in _TIME_FIELDS:
        return _encode_time(value)
    if field in _LIST_FIELDS:
        return json.dumps(list(value))
    if field == "rotated_from":
        return value or ""
    return str(value)


def encode_record(record: TokenRecord) -> list[str]:
    """The record's hash values in :data:`FIELDS` order."""
    return [_encode_value(f, getattr(record, f)) for f in FIELDS]


def decode_record(values: list[Any]) -> TokenRecord | None:
    """Inverse of :func:`encode_record` (``None`` for a missing hash)."""
    if not values or values[0] is None:
        return None
    raw = dict(zip(FIELDS, map(_text, values), strict=True))
    return TokenRecord(
        id=raw["id"],
        user_id=raw["user_id"],
        name=raw["name"],
        hash=raw["hash"],
        scopes=tuple(json.loads(raw["scopes"])),
        description=raw["description"],
        created_at=_EPOCH + int(raw["created_at"]) * _MICROSECOND,
        expires_at=_decode_time(raw["expires_at"]),
        last_used_at=_decode_time(raw["last_used_at"]),
        last_used_ips=tuple(json.loads(raw["last_used_ips"])),
        revoked_at=_decode_time(raw["revoked_at"]),
        family_id=raw["family_id"],
        rotated_from=raw["rotated_from"] or None,
        allowed_cidrs=tuple(json.loads(raw["allowed_cidrs"])),
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _records(replies: list[Any]) -> list[TokenRecord]:
    return [r for r in map(decode_record, replies[0]) if r is not None]


def _ids(replies: list[Any]) -> list[str]:
    return [_text(i) for i in replies[0]]


def _changes(replies: list[Any]) -> list[tuple[str, datetime]]:
    """``ZRANGEBYSCORE ... WITHSCORES``: flat (RESP2) or pairs (RESP3, parsed by redis-py)."""
    reply = replies[0]
    pairs = zip(reply[::2], reply[1::2], strict=True) if reply and not isinstance(reply[0], list | tuple) else reply
    return [(_text(member), _EPOCH + round(float(_text(score))) * _MICROSECOND) for member, score in pairs]


class StorePlans:
    """Every store operation as a :class:`~pat_middleware.redis_exec.Plan`. Pure."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _run(self, script: Script, *args: str | int) -> tuple[tuple[Any, ...], ...]:
        return (script.call((), (self.prefix, *args)),)

    def get(self, token_id: str) -> Plan[TokenRecord | None]:
        """One HMGET."""
        command = ("HMGET", f"{self.prefix}t:{token_id}", *FIELDS)
        return Plan((command,), lambda replies: decode_record(replies[0]))

    def list_user(self, user_id: str) -> Plan[list[TokenRecord]]:
        """The user's records, oldest first (ties by id)."""
        return Plan(self._run(_LIST, f"{self.prefix}u:{user_id}"), _records, (_LIST,))

    def list_family(self, family_id: str) -> Plan[list[TokenRecord]]:
        """The family's records, oldest first (ties by id)."""
        return Plan(self._run(_LIST, f"{self.prefix}f:{family_id}"), _records, (_LIST,))

    def list_expiring(self, start: datetime, end: datetime) -> Plan[list[TokenRecord]]:
        """Soonest expiry first (ties by id)."""
        args = (_encode_time(start), _encode_time(end))
        return Plan(self._run(_LIST_EXPIRING, *args), _records, (_LIST_EXPIRING,))

    def insert(self, record: TokenRecord) -> Plan[None]:
        """``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        record = normalize_record(record)

        def parse(replies: list[Any]) -> None:
            _raise_for(_text(replies[0]), record)

        return Plan(self._run(_INSERT, *encode_record(record)), parse, (_INSERT,))

    def update(self, token_id: str, changes: Mapping[str, Any]) -> Plan[TokenRecord | None]:
        """Apply ``changes`` to a live record; ``None`` if it is unknown or not live."""
        clean = check_changes(changes)
        pairs = [x for field, value in clean.items() for x in (field, _encode_value(field, value))]

        def parse(replies: list[Any]) -> TokenRecord | None:
            status = _text(replies[0][0])
            if status == "name_taken":
                raise NameTaken(clean["name"])
            return decode_record(replies[0][1]) if status == "ok" else None

        stamp = "0" if VALIDITY_FIELDS.isdisjoint(clean) else "1"
        return Plan(self._run(_UPDATE, token_id, stamp, *pairs), parse, (_UPDATE,))

    def changes_since(self, since: datetime) -> Plan[list[tuple[str, datetime]]]:
        """One ``ZRANGEBYSCORE`` of the change set."""
        command = ("ZRANGEBYSCORE", f"{self.prefix}chg", _encode_time(utc(since)), "+inf", "WITHSCORES")
        return Plan((command,), _changes)

    def revoke(self, token_id: str, at: datetime) -> Plan[list[str]]:
        """The ids revoked (the record's and its predecessors'), oldest first."""
        plan = self._run(_REVOKE, token_id, _encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE,))

    def revoke_family(self, family_id: str, at: datetime) -> Plan[list[str]]:
        """The ids revoked, oldest first."""
        plan = self._run(_REVOKE_SET, f"{self.prefix}f:{family_id}", _encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE_SET,))

    def revoke_user(self, user_id: str, at: datetime) -> Plan[list[str]]:
        """The ids revoked, oldest first."""
        plan = self._run(_REVOKE_SET, f"{self.prefix}u:{user_id}", _encode_time(utc(at)))
        return Plan(plan, _ids, (_REVOKE_SET,))

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> Plan[bool]:
        """False (nothing written) when the old record is missing or not live."""
        new = normalize_record(new)

        def parse(replies: list[Any]) -> bool:
            status = _text(replies[0])
            if status == "missing":
                return False
            _raise_for(status, new)
            return True

        args = (old_id, _encode_time(utc(revoke_at)), *encode_record(new))
        return Plan(self._run(_ROTATE, *args), parse, (_ROTATE,))

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> Plan[None]:
        """last_used_at and the IP list of an existing record."""
        args = (token_id, _encode_time(utc(at)), "0" if ip is None else "1", ip or "", keep_ips)
        return Plan(self._run(_TOUCH, *args), lambda replies: None, (_TOUCH,))

    def purge(self, before: datetime) -> Plan[list[str]]:
        """The ids deleted, oldest first."""

        def parse(replies: list[Any]) -> list[str]:
            pairs = sorted((int(_text(created)), _text(i)) for i, created in replies[0])
            return [i for _, i in pairs]

        return Plan(self._run(_PURGE, _encode_time(utc(before))), parse, (_PURGE,))


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
        self._executor = SyncExecutor(lambda: self.clients.sync, _Unavailable())
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
            self._async = AsyncRedisStore(self.plans, self.clients)
        return self._async

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""
        return self._executor.run(self.plans.get(token_id))

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first."""
        return self._executor.run(self.plans.list_user(user_id))

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""
        return self._executor.run(self.plans.list_family(family_id))

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``."""
        return self._executor.run(self.plans.list_expiring(start, end))

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        self._executor.run(self.plans.insert(record))

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        return self._executor.run(self.plans.update(token_id, changes))

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at`` (one script);
        return the ids that changed, oldest first."""
        return self._executor.run(self.plans.revoke(token_id, at))

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; return their ids."""
        return self._executor.run(self.plans.revoke_family(family_id, at))

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; return their ids."""
        return self._executor.run(self.plans.revoke_user(user_id, at))

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke the live record ``old_id`` at ``revoke_at`` and insert ``new``, atomically."""
        return self._executor.run(self.plans.rotate(old_id, new, revoke_at))

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``."""
        return self._executor.run(self.plans.changes_since(since))

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """Record a use at ``at`` from ``ip``."""
        self._executor.run(self.plans.touch(token_id, at, ip, keep_ips))

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; return their ids."""
        return self._executor.run(self.plans.purge(before))

    def close(self) -> None:
        """Close the sync client (when this store made it)."""
        self.clients.close_sync()


class AsyncRedisStore:
    """The asyncio twin of :class:`RedisStore`: same plans, awaited."""

    def __init__(self, plans: StorePlans, clients: Clients) -> None:
        self.plans = plans
        self._clients = clients
        self._executor = AsyncExecutor(clients.asyncio, _Unavailable())

    def __repr__(self) -> str:
        return f"AsyncRedisStore(prefix={self.plans.prefix!r})"

    async def get(self, token_id: str) -> TokenRecord | None:
        """See :meth:`RedisStore.get`."""
        return await self._executor.run(self.plans.get(token_id))

    async def list_user(self, user_id: str) -> list[TokenRecord]:
        """See :meth:`RedisStore.list_user`."""
        return await self._executor.run(self.plans.list_user(user_id))

    async def list_family(self, family_id: str) -> list[TokenRecord]:
        """See :meth:`RedisStore.list_family`."""
        return await self._executor.run(self.plans.list_family(family_id))

    async def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """See :meth:`RedisStore.list_expiring`."""
        return await self._executor.run(self.plans.list_expiring(start, end))

    async def insert(self, record: TokenRecord) -> None:
        """See :meth:`RedisStore.insert`."""
        await self._executor.run(self.plans.insert(record))

    async def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """See :meth:`RedisStore.update`."""
        return await self._executor.run(self.plans.update(token_id, changes))

    async def revoke(self, token_id: str, at: datetime) -> list[str]:
        """See :meth:`RedisStore.revoke`."""
        return await self._executor.run(self.plans.revoke(token_id, at))

    async def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """See :meth:`RedisStore.revoke_family`."""
        return await self._executor.run(self.plans.revoke_family(family_id, at))

    async def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """See :meth:`RedisStore.revoke_user`."""
        return await self._executor.run(self.plans.revoke_user(user_id, at))

    async def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """See :meth:`RedisStore.rotate`."""
        return await self._executor.run(self.plans.rotate(old_id, new, revoke_at))

    async def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """See :meth:`RedisStore.changes_since`."""
        return await self._executor.run(self.plans.changes_since(since))

    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> None:
        """See :meth:`RedisStore.touch`."""
        await self._executor.run(self.plans.touch(token_id, at, ip, keep_ips))

    async def purge(self, before: datetime) -> list[str]:
        """See :meth:`RedisStore.purge`."""
        return await self._executor.run(self.plans.purge(before))

    async def close(self) -> None:
        """Close the async client of the running loop (when the store made it)."""
        await self._clients.close_async()
