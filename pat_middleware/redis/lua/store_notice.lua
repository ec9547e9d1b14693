-- ARGV[2]: the notice's key (under the prefix), ARGV[3]: until, ms, ARGV[4]: until, µs.
-- SET NX PXAT: one claim wins and the key expires by itself; the nts index lets
-- prune_log drop notices remembered until before its cutoff.
-- Kept at least a day from the server's now, so a claim about a moment already
-- past (a clock behind Redis's) is still remembered (prune_log goes by until).
local key = P .. ARGV[2]
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + 86400000
local expiry = math.max(tonumber(ARGV[3]), floor)
if not redis.call('SET', key, '1', 'NX', 'PXAT', string.format('%d', expiry)) then return 0 end
if redis.call('EXISTS', key) == 1 then redis.call('ZADD', P .. 'nts', ARGV[4], ARGV[2]) end
return 1
