package faults

// redisKit returns nil until the Redis Streams connector's test broker package lands.
func redisKit() *kit { return nil }
