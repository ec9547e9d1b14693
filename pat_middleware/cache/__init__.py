"""The caches in front of the store: the in-process cache (:mod:`.local`), the
Redis cache shared by processes (:mod:`.redis`) and its invalidation channel
(:mod:`.channel`)."""
