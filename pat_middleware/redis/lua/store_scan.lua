-- ARGV[2]: an index of ids (ids: by created_at, act: by last activity), ARGV[3]: 'asc'
-- or 'desc', ARGV[4], ARGV[5]: min and max score, ARGV[6]: offset, ARGV[7]: count.
-- Read only: {id, score, record} of each id in that stretch of the index, in its
-- order; 'unindexed' while the indexes have not been built (store_index.lua).
if redis.call('EXISTS', P .. 'indexed') == 0 then return 'unindexed' end
local hits
if ARGV[3] == 'desc' then
  hits = redis.call('ZREVRANGEBYSCORE', ARGV[2], ARGV[5], ARGV[4], 'WITHSCORES', 'LIMIT', ARGV[6], ARGV[7])
else
  hits = redis.call('ZRANGEBYSCORE', ARGV[2], ARGV[4], ARGV[5], 'WITHSCORES', 'LIMIT', ARGV[6], ARGV[7])
end
local out = {}
for i = 1, #hits, 2 do out[#out + 1] = {hits[i], hits[i + 1], read(hits[i])} end
return out
