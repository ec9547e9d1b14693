"""Redis plumbing shared by the Redis cache and the Redis store: clients and URLs
(single server, Sentinel, Cluster), the executor that sends plans, the plans
and their Lua scripts (``lua/*.lua``)."""
