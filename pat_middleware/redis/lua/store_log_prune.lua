-- ARGV[2]: before (µs), ARGV[3]: the log:all member after which to go on ('-': from
-- the start), ARGV[4]: the lowest entry id prefix no entry dated before `before` can
-- have, ARGV[5]: count. Deletes up to `count` entries dated before `before` (field
-- `at`; an index member whose entry is gone goes too) with XDEL and their members
-- from the indexes; then up to `count` notices remembered until before it.
-- Returns {entries deleted, last member looked at if `count` were, 1 if an entry
-- stayed, 1 if notices remain}: go on from '-' while none stayed (the deleted are gone).
local log, all = P .. 'log', P .. 'log:all'
local before, count = tonumber(ARGV[2]), tonumber(ARGV[5])
local start = ARGV[3]
if start ~= '-' then start = '(' .. start end
local batch = redis.call('ZRANGEBYLEX', all, start, '(' .. ARGV[4], 'LIMIT', 0, count)
local deleted, kept = 0, ARGV[3] ~= '-'
for _, member in ipairs(batch) do
  local sid = string.sub(member, 24)
  local found = redis.call('XRANGE', log, sid, sid)
  local f = {}
  if found[1] then
    for j = 1, #found[1][2], 2 do f[found[1][2][j]] = found[1][2][j + 1] end
  end
  if not f.at or tonumber(f.at) < before then
    if f.user_id then redis.call('ZREM', P .. 'log:u:' .. f.user_id, member) end
    if f.token_id then redis.call('ZREM', P .. 'log:t:' .. f.token_id, member) end
    redis.call('ZREM', all, member)
    if f.at then
      redis.call('XDEL', log, sid)
      deleted = deleted + 1
    end
  else
    kept = true
  end
end
if deleted > 0 and redis.call('XLEN', log) == 0 then redis.call('DEL', log) end
local last = ''
if #batch == count then last = batch[#batch] end
local notices = redis.call('ZRANGEBYSCORE', P .. 'nts', '-inf', '(' .. ARGV[2], 'LIMIT', 0, count)
for _, key in ipairs(notices) do
  redis.call('DEL', P .. key)
  redis.call('ZREM', P .. 'nts', key)
end
local more = 0
if #notices == count then more = 1 end
return {deleted, last, kept and 1 or 0, more}
