-- ARGV[2]: before (µs), ARGV[3]: the stream id after which to go on ('-': from the
-- start), ARGV[4]: the largest stream id an entry dated before `before` can have
-- (exclusive), ARGV[5]: count. Deletes up to `count` entries dated before `before`
-- (field `at`) and their index entries: XTRIM MINID while every entry from the start
-- goes, XDEL after one stays. Then up to `count` notices remembered until before it.
-- Returns {entries deleted, last stream id looked at if `count` were, 1 if an entry
-- stayed, 1 if notices remain}: go on from '-' while none stayed (the deleted are gone).
local log = P .. 'log'
local before, count = tonumber(ARGV[2]), tonumber(ARGV[5])
local start = ARGV[3]
if start ~= '-' then start = '(' .. start end
local batch = redis.call('XRANGE', log, start, '(' .. ARGV[4], 'COUNT', count)
local deleted, trim, kept = 0, nil, ARGV[3] ~= '-'
for _, e in ipairs(batch) do
  local f = {}
  for j = 1, #e[2], 2 do f[e[2][j]] = e[2][j + 1] end
  if tonumber(f.at) < before then
    if f.user_id then redis.call('ZREM', P .. 'log:u:' .. f.user_id, f.id) end
    if f.token_id then redis.call('ZREM', P .. 'log:t:' .. f.token_id, f.id) end
    if kept then redis.call('XDEL', log, e[1]) else trim = e[1] end
    deleted = deleted + 1
  else
    kept = true
  end
end
if trim then
  local ms, seq = string.match(trim, '^(%d+)-(%d+)$')
  redis.call('XTRIM', log, 'MINID', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
end
local last = ''
if #batch == count then last = batch[#batch][1] end
local notices = redis.call('ZRANGEBYSCORE', P .. 'nts', '-inf', '(' .. ARGV[2], 'LIMIT', 0, count)
for _, key in ipairs(notices) do
  redis.call('DEL', P .. key)
  redis.call('ZREM', P .. 'nts', key)
end
local more = 0
if #notices == count then more = 1 end
return {deleted, last, kept and 1 or 0, more}
