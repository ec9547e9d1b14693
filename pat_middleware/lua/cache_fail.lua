-- KEYS: negative entry, negative index, client's failure counter, tombstone,
-- failure counter of every address. ARGV: reason, ttl ms, window ms, digest hex,
-- "1" to count the failure ("0": admit already counted it).
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[4])
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
end
if ARGV[5] == '0' then return tonumber(redis.call('GET', KEYS[3]) or '0') end
if redis.call('INCR', KEYS[5]) == 1 or redis.call('PTTL', KEYS[5]) < 0 then
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
local n = redis.call('INCR', KEYS[3])
if redis.call('PTTL', KEYS[3]) < 0 then redis.call('PEXPIRE', KEYS[3], ARGV[3]) end
return n
