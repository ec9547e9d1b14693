-- ARGV[2]: a sorted set of ids. Their records, in score order.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', ARGV[2], 0, -1)) do out[#out + 1] = read(id) end
return out
