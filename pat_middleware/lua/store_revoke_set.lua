-- ARGV[2]: a sorted set of ids (a user's, a family's), ARGV[3]: at.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2], 0, -1)) do
  if revoke_one(id, ARGV[3]) then out[#out + 1] = id end
end
return out
