-- ARGV[2]: id; ARGV[3]: '1' to stamp the change (a validity field); ARGV[4..]: field, value pairs.
local id = ARGV[2]
local k = tkey(id)
local v = redis.call('HMGET', k, 'user_id', 'name', 'revoked_at')
if not v[1] or v[3] ~= '' then return {'missing'} end
local changes, name, expires = {}, nil, nil
for i = 4, #ARGV, 2 do
  changes[#changes + 1] = ARGV[i]
  changes[#changes + 1] = ARGV[i + 1]
  if ARGV[i] == 'name' then name = ARGV[i + 1] end
  if ARGV[i] == 'expires_at' then expires = ARGV[i + 1] end
end
local names = P .. 'n:' .. v[1]
local renamed = name and name ~= v[2]
if renamed and redis.call('HEXISTS', names, name) == 1 then return {'name_taken'} end
if #changes > 0 then redis.call('HSET', k, unpack(changes)) end
if renamed then
  release_name(v[1], v[2], id)
  redis.call('HSET', names, name, id)
end
if expires == '' then redis.call('ZREM', P .. 'exp', id) end
if expires and expires ~= '' then redis.call('ZADD', P .. 'exp', expires, id) end
if ARGV[3] == '1' then stamp(id) end
return {'ok', read(id)}
