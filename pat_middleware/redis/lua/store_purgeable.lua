-- ARGV[2]: before. Read only: {id, created_at} of each record store_purge.lua
-- would delete now (the same selection, store_purge_select.lua).
local _, hits = purge_selection(ARGV[2])
local out = {}
for _, hit in ipairs(hits) do out[#out + 1] = {hit[1], hit[2][5]} end
return out
