-- ARGV[2]: an index of entries (log:all, an owner's, a token's), ARGV[3], ARGV[4]:
-- max and min (ZREVRANGEBYLEX bounds), ARGV[5]: count. Read only: {member, fields}
-- of each entry, newest first (fields empty if the stream no longer has it).
local log = P .. 'log'
local out = {}
for _, member in ipairs(redis.call('ZREVRANGEBYLEX', ARGV[2], ARGV[3], ARGV[4], 'LIMIT', 0, ARGV[5])) do
  local sid = string.sub(member, 24)
  local found = redis.call('XRANGE', log, sid, sid)
  out[#out + 1] = {member, found[1] and found[1][2] or {}}
end
return out
