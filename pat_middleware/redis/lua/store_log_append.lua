-- ARGV[2]: how many entries; then per entry: its id, its owner's index key or '', its
-- token's index key or '', n, then n field/value strings. XADD with the stream's own
-- id (arrival order); the indexes (<P>log:all, the owner's, the token's) hold
-- '<entry id>:<stream id>' at score 0, so they are in entry id order. Ids kept
-- already are skipped. Returns how many entries were added.
local log, all = P .. 'log', P .. 'log:all'
local added, i = 0, 3
for _ = 1, tonumber(ARGV[2]) do
  local id, n = ARGV[i], tonumber(ARGV[i + 3])
  if #redis.call('ZRANGEBYLEX', all, '[' .. id .. ':', '[' .. id .. ';', 'LIMIT', 0, 1) == 0 then
    local fields = {}
    for j = 1, n do fields[j] = ARGV[i + 3 + j] end
    local member = id .. ':' .. redis.call('XADD', log, '*', unpack(fields))
    redis.call('ZADD', all, 0, member)
    if ARGV[i + 1] ~= '' then redis.call('ZADD', ARGV[i + 1], 0, member) end
    if ARGV[i + 2] ~= '' then redis.call('ZADD', ARGV[i + 2], 0, member) end
    added = added + 1
  end
  i = i + 4 + n
end
return added
