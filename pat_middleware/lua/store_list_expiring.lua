-- ARGV[2], ARGV[3]: start, end. start < expires_at <= end, revocable at start.
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '(' .. ARGV[2], ARGV[3])) do
  local rv = redis.call('HGET', tkey(id), 'revoked_at')
  if rv == '' or (rv and tonumber(rv) > tonumber(ARGV[2])) then out[#out + 1] = read(id) end
end
return out
