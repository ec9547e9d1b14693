-- ARGV[2]: an index of entry ids (an owner's or a token's), ARGV[3], ARGV[4]: max and
-- min (ZREVRANGEBYLEX bounds), ARGV[5]: count. Read only: {id, fields} of each entry,
-- newest first (fields empty if the stream no longer has it).
local log = P .. 'log'
local out = {}
for _, id in ipairs(redis.call('ZREVRANGEBYLEX', ARGV[2], ARGV[3], ARGV[4], 'LIMIT', 0, ARGV[5])) do
  local sid = string.format('%.0f-%.0f', tonumber(string.sub(id, 1, 14), 16), tonumber(string.sub(id, 15), 16))
  local found = redis.call('XRANGE', log, sid, sid)
  out[#out + 1] = {id, found[1] and found[1][2] or {}}
end
return out
