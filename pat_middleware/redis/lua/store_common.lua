-- Helpers every RedisStore script starts with (pat_middleware/stores/redis.py).
-- ARGV[1] is always the key prefix. FIELDS is stores.redis.FIELDS and RETENTION
-- stores.base.CHANGE_RETENTION in seconds (tests/test_store_redis.py checks both).
local FIELDS = {'id', 'user_id', 'name', 'hash', 'scopes', 'description', 'created_at', 'expires_at', 'last_used_at', 'last_used_ips', 'revoked_at', 'family_id', 'rotated_from', 'allowed_cidrs', 'resources'}
local RETENTION = 3600
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
  redis.call('ZADD', P .. 'ids', r.created_at, r.id)
  local activity = r.last_used_at
  if activity == '' then activity = r.created_at end
  redis.call('ZADD', P .. 'act', activity, r.id)
  if r.expires_at ~= '' then redis.call('ZADD', P .. 'exp', r.expires_at, r.id) end
  if r.revoked_at == '' then
    redis.call('HSET', P .. 'n:' .. r.user_id, r.name, r.id)
  else
    redis.call('ZADD', P .. 'rev', r.revoked_at, r.id)
  end
end
