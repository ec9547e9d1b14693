-- ARGV[2]: old id, ARGV[3]: revoke_at, ARGV[4..]: the new record.
local old = ARGV[2]
local rv = redis.call('HGET', tkey(old), 'revoked_at')
if rv ~= '' then return 'missing' end
local r = record_from(4)
local err = insert_error(r, old)
if err then return err end
revoke_one(old, ARGV[3])
insert_write(r)
return 'ok'
