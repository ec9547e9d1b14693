-- What store_purge.lua deletes and store_purgeable.lua lists: the records revoked
-- or expired at or before `before`. Returns every id the rev and exp indexes hold
-- up to `before` (stale entries included, for purge to drop) and, for each of them
-- whose record exists, {id, {user_id, name, revoked_at, family_id, created_at}}.
local function purge_selection(before)
  local seen, ids, hits = {}, {}, {}
  for _, index in ipairs({P .. 'rev', P .. 'exp'}) do
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', before)) do
      if not seen[id] then
        seen[id] = true
        ids[#ids + 1] = id
      end
    end
  end
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', tkey(id), 'user_id', 'name', 'revoked_at', 'family_id', 'created_at')
    if v[1] then hits[#hits + 1] = {id, v} end
  end
  return ids, hits
end
