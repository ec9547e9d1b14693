-- KEYS: the counters admit incremented. Never below zero, never a key without a TTL.
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') > 0 then redis.call('DECR', key) end
end
return 1
