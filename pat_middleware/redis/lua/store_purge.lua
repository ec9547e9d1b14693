-- ARGV[2]: before. Delete records revoked or expired at or before it
-- (the selection is store_purge_select.lua's, shared with store_purgeable.lua).
local ids, hits = purge_selection(ARGV[2])
local out = {}
for _, hit in ipairs(hits) do
  local id, v = hit[1], hit[2]
  redis.call('DEL', tkey(id))
  redis.call('ZREM', P .. 'u:' .. v[1], id)
  redis.call('ZREM', P .. 'f:' .. v[4], id)
  if v[3] == '' then release_name(v[1], v[2], id) end
  out[#out + 1] = {id, v[5]}
end
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'exp', id)
  redis.call('ZREM', P .. 'rev', id)
  redis.call('ZREM', P .. 'ids', id)
  redis.call('ZREM', P .. 'act', id)
end
return out
