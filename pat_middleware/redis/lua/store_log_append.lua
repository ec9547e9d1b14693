-- ARGV[2]: how many entries; then per entry, in stream id order: its stream id, its
-- id, its owner's index key or '', its token's index key or '', n, then n field/value
-- strings. The stream <P>log is kept in stream id order (= entry id order): an
-- entry older than the stream's newest takes the newer entries off (XDEL), moves the
-- last id back (XSETID) and puts them back after it, ids unchanged. Ids kept already
-- are skipped. Returns how many entries were added.
local log = P .. 'log'
local function split(sid)
  local ms, seq = string.match(sid, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function older(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  return ams < bms or (ams == bms and aseq < bseq)
end
local fresh, seen, i = {}, {}, 3
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[i + 4])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[i + 4 + j] end
  local sid = ARGV[i]
  if not seen[sid] and #redis.call('XRANGE', log, sid, sid) == 0 then
    seen[sid] = true
    fresh[#fresh + 1] = {sid, fields, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]}
  end
  i = i + 5 + n
end
if #fresh == 0 then return 0 end
local tail = {}
local top = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
if #top == 0 and redis.call('EXISTS', log) == 1 then
  redis.call('XSETID', log, '0-1')  -- pruned empty: its last id no longer matters
elseif #top > 0 and older(fresh[1][1], top[1][1]) then
  tail = redis.call('XRANGE', log, '(' .. fresh[1][1], '+')
  for _, e in ipairs(tail) do redis.call('XDEL', log, e[1]) end
  local rest = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  redis.call('XSETID', log, rest[1] and rest[1][1] or '0-1')
end
local a, b = 1, 1
while a <= #fresh or b <= #tail do
  if b > #tail or (a <= #fresh and older(fresh[a][1], tail[b][1])) then
    local e = fresh[a]
    redis.call('XADD', log, e[1], unpack(e[2]))
    if e[4] ~= '' then redis.call('ZADD', e[4], 0, e[3]) end
    if e[5] ~= '' then redis.call('ZADD', e[5], 0, e[3]) end
    a = a + 1
  else
    redis.call('XADD', log, tail[b][1], unpack(tail[b][2]))
    b = b + 1
  end
end
return #fresh
