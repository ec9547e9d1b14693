-- ARGV[2]: '1' when these are the last ids, ARGV[3..]: ids found by SCAN. Puts each
-- existing record in the ids and act indexes (what insert_write and touch keep up);
-- after the last batch, marks the indexes built.
for i = 3, #ARGV do
  local id = ARGV[i]
  local v = redis.call('HMGET', tkey(id), 'created_at', 'last_used_at')
  if v[1] then
    redis.call('ZADD', P .. 'ids', v[1], id)
    local activity = v[2]
    if activity == '' then activity = v[1] end
    redis.call('ZADD', P .. 'act', activity, id)
  end
end
if ARGV[2] == '1' then redis.call('SET', P .. 'indexed', '1') end
return #ARGV - 2
