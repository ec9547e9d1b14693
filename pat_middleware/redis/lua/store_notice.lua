-- ARGV[2]: the notice's key (under the prefix), ARGV[3]: until, ms, ARGV[4]: until, µs.
-- SET NX PXAT: one claim wins and the key expires by itself; the nts index lets
-- prune_log drop notices remembered until before its cutoff.
local key = P .. ARGV[2]
if not redis.call('SET', key, '1', 'NX', 'PXAT', ARGV[3]) then return 0 end
if redis.call('EXISTS', key) == 1 then redis.call('ZADD', P .. 'nts', ARGV[4], ARGV[2]) end
return 1
