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
