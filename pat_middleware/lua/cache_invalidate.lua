-- KEYS: entry, negative index, tombstone. ARGV: negative key prefix, tombstone ms.
redis.call('DEL', KEYS[1])
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[1] .. digest)
end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
return 1
