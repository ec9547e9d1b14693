-- ARGV[2]: id, ARGV[3]: at, ARGV[4]: '1' if an ip is given, ARGV[5]: ip, ARGV[6]: keep.
-- The IP list rule is stores._common.merge_ips: ip first, no duplicates, at most keep.
-- Returns 2 when the ip was not in the list before (a new address), 1 when it was (or
-- none was given), 0 for an unknown id.
local k = tkey(ARGV[2])
local current = redis.call('HGET', k, 'last_used_ips')
if not current then return 0 end
local has_ip, ip = ARGV[4] == '1', ARGV[5]
local ips = {}
local fresh = has_ip
if has_ip then ips[1] = ip end
for _, x in ipairs(cjson.decode(current)) do
  if has_ip and x == ip then fresh = false else ips[#ips + 1] = x end
end
local kept = {}
for i = 1, math.min(tonumber(ARGV[6]), #ips) do kept[i] = ips[i] end
local encoded = '[]'
if #kept > 0 then encoded = cjson.encode(kept) end
redis.call('HSET', k, 'last_used_at', ARGV[3], 'last_used_ips', encoded)
redis.call('ZADD', P .. 'act', ARGV[3], ARGV[2])
if fresh then return 2 end
return 1
