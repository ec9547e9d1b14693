-- KEYS: entry, tombstone. ARGV: entry bytes, ttl ms.
-- The entry is stored as "<server time ms>|<entry>" (see _parse_entry).
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local t = redis.call('TIME')
local ms = string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('SET', KEYS[1], ms .. '|' .. ARGV[1], 'PX', ARGV[2])
return 1
