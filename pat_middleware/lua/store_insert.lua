-- ARGV[2..]: the record's fields in FIELDS order.
local r = record_from(2)
local err = insert_error(r, nil)
if err then return err end
insert_write(r)
return 'ok'
