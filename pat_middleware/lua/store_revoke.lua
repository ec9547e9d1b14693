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
